// The TURN server state machine (RFC 8656) with STUN Binding (RFC 8489) and
// RFC 5780 behaviour discovery, independent of sockets and threads.
//
// One Engine runs per worker thread and owns the allocations of the clients
// the kernel steers to that worker (SO_REUSEPORT hashes a client's 5-tuple
// to one socket, so a client always meets the same Engine: no locks on the
// packet path). What workers share (credentials, nonce key, quotas) lives in
// Shared, touched only on the control path.
//
// I/O goes through the Io interface (relay sockets, replies), and time is
// passed in (Now), so unit tests drive the Engine with a fake Io and clock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/net.h"
#include "netmap/netmap.h"
#include "stun/stun.h"
#include "turn/auth.h"

namespace mesh::turn {

inline constexpr uint8_t kUdp = 17, kTcp = 6;
// RFC 8656 narrows channel numbers to 0x4000-0x4FFF; RFC 5766 clients
// (coturn's own tools among them) still use up to 0x7FFE, so accept those.
inline constexpr uint16_t kChannelMin = 0x4000, kChannelMax = 0x7FFE;

struct Config {
  std::string software = "mesh-relay";
  uint32_t default_lifetime = 600;     // s, RFC 8656 section 3.2
  uint32_t max_lifetime = 3600;        // s
  uint32_t permission_lifetime = 300;  // s, RFC 8656 section 9
  uint32_t channel_lifetime = 600;     // s, RFC 8656 section 12
  uint32_t nonce_lifetime = 600;       // s, then 438 Stale Nonce
  // Quotas (0 = unlimited). The defaults bound what one credential can take
  // (a mesh node holds one allocation per session) while leaving room for
  // a few thousand nodes; mesh-relay(1) documents them.
  size_t max_allocations = 10000;      // total across workers
  size_t user_quota = 10;              // allocations per user
  size_t max_permissions = 256;        // per allocation
  uint64_t max_bps = 12500000;         // bytes/s per allocation (both ways): 100 Mbit/s
  std::vector<Prefix> allow_peers;     // always allowed (checked first)
  std::vector<Prefix> deny_peers;      // refused (default_denied_peers() plus --deny-peer)
  bool self_relay = true;              // peers on our own relay addresses are allowed
  // Loopback peers on any port (coturn's --allow-loopback-peers): opens the
  // host's loopback services to every TURN user; for tests and benchmarks.
  bool allow_loopback = false;
  std::vector<IpAddr> relay_ips;       // addresses relayed sockets bind to (v4 and/or v6)
  // Other addresses of this host (listen addresses, interface addresses):
  // like relay_ips, a peer there may only be a port of the relay range.
  std::vector<IpAddr> self_ips;
  PortRange relay_ports{49152, 65535};
};

// Ranges refused as peers unless allowed: this-host, loopback, private,
// shared (CGNAT), link-local, documentation, benchmarking, multicast and
// reserved IPv4; unspecified, loopback, IPv4-mapped, ULA, link-local,
// documentation and multicast IPv6. A relay that forwarded to these would let
// anyone on the Internet reach the relay host's own private networks.
std::vector<Prefix> default_denied_peers();

struct Now {
  int64_t mono_ms = 0;  // monotonic milliseconds: lifetimes
  int64_t unix_s = 0;   // wall clock: REST credential expiry, nonces
};

// Who sent a message: the client's transport address and the server socket
// or connection it came in on (the RFC's 5-tuple).
struct ClientKey {
  SockAddr addr;
  uint32_t conn = 0;       // UDP: listener index; TCP/TLS: connection id
  uint8_t transport = kUdp;
  bool operator==(const ClientKey& o) const {
    return conn == o.conn && transport == o.transport && addr.port == o.addr.port &&
           addr.ip == o.addr.ip;
  }
};
struct ClientKeyHash {
  size_t operator()(const ClientKey& k) const noexcept;
};
// What a nonce is bound to: the client's IP, port and transport (not the
// connection or listener, so that a client keeps its nonce across them).
std::array<uint8_t, 19> nonce_binding(const ClientKey& k);

struct RelaySocket {
  int fd = -1;
  SockAddr addr;  // the relayed transport address (XOR-RELAYED-ADDRESS)
};

struct Allocation;

class Io {
 public:
  virtual ~Io() = default;
  // Opens a UDP socket on a relay address of `family` and a port in the
  // relay range (even when `even_port`), watched on behalf of `owner`.
  virtual Result<RelaySocket> open_relay(int family, bool even_port, Allocation* owner) = 0;
  virtual void close_relay(RelaySocket& s) = 0;
  // Sends a STUN message to a client. `change` holds RFC 5780 CHANGE-REQUEST
  // flags (0: answer from the socket the request came in on).
  virtual void reply(const ClientKey& to, stun::Bytes msg, uint32_t change) = 0;
  // Sends a Send indication's payload from an allocation's relay socket.
  virtual void send_to_peer(const RelaySocket& from, const SockAddr& peer, stun::Bytes data) = 0;
  // The internal hop: hands `data`, relayed from `peer` (another allocation's
  // relayed address on this engine), to allocation `to`'s client as
  // ChannelData on `channel` (> 0) or as a Data indication (0), as if it had
  // arrived on `to`'s relay socket. The engine has already applied `to`'s
  // permission, bandwidth quota and counters.
  virtual void deliver(Allocation& to, const SockAddr& peer, int channel, stun::Bytes data) = 0;
  // RFC 5780: where an answer to `from` with CHANGE-REQUEST flags `change`
  // leaves from (RESPONSE-ORIGIN) and the alternate address to advertise
  // (OTHER-ADDRESS). False when the change cannot be honoured (no
  // alternate address: 420).
  struct Origin {
    std::optional<SockAddr> response_origin;
    std::optional<SockAddr> other_address;
  };
  virtual bool origin(const ClientKey& from, uint32_t change, Origin* out) = 0;
};

// Relaxed atomic counters, written by one worker, read by the stats writer.
struct Stats {
  std::atomic<uint64_t> requests{0}, auth_failures{0}, allocations_created{0},
      allocations_expired{0}, allocations_deleted{0}, quota_rejections{0},
      forbidden_peers{0}, bindings{0}, allocations_revoked{0};
  std::atomic<uint64_t> client_to_peer_packets{0}, client_to_peer_bytes{0};
  std::atomic<uint64_t> peer_to_client_packets{0}, peer_to_client_bytes{0};
  std::atomic<uint64_t> dropped_no_permission{0}, dropped_no_channel{0}, dropped_rate{0},
      dropped_other{0};
  // Client -> peer datagrams whose peer was another allocation's relayed
  // address on the same engine and that were handed to that allocation's
  // client without a trip through the kernel (also counted in
  // client_to_peer_* and peer_to_client_*; those the receiving allocation
  // refused count in dropped_* as on the kernel path).
  std::atomic<uint64_t> internal_packets{0}, internal_bytes{0};
  std::atomic<int64_t> allocations{0}, permissions{0}, channels{0};
};

// State shared by all workers. Thread-safe.
class Shared {
 public:
  Shared(Config cfg, std::unique_ptr<Credentials> creds);
  const Config& config() const { return cfg_; }
  std::shared_ptr<const Credentials> credentials() const;
  void set_credentials(std::unique_ptr<Credentials> c);
  const NonceMint& nonces() const { return nonces_; }
  // Whether a client may reach `peer`. On addresses of this host (relay_ips,
  // self_ips, loopback, unspecified) only the relayed address of a live
  // allocation of this relay is a peer, and only with self_relay: anything
  // else there is the host's own services (DNS, NTP, the TURN port itself,
  // which may well be in the relay port range). Port 0 stands for "any
  // port" (CreatePermission ignores the port, RFC 8656 section 9.1) and
  // passes; ChannelBind and every Send are checked with their real port.
  bool peer_allowed(const SockAddr& peer) const;
  bool is_self(const IpAddr& ip) const;
  // The relayed addresses of live allocations, across workers.
  void add_relayed(const SockAddr& a);
  void remove_relayed(const SockAddr& a);

  // Revoked REST credential subjects (the NAME of "EXPIRY:NAME"), each
  // until a unix time after which its credentials have expired anyway
  // (mesh-relay serve --revocations). `full` replaces the list, otherwise
  // the entries are added.
  void revoke(const std::vector<std::pair<std::string, int64_t>>& entries, bool full, int64_t now);
  bool revoked(std::string_view subject, int64_t now) const;
  // Bumped by every revoke(): workers compare it to end allocations.
  uint64_t revocation_generation() const { return rev_gen_.load(std::memory_order_acquire); }

  enum class Admit { Ok, UserQuota, TotalQuota };
  Admit admit(const std::string& quota_name);
  void release(const std::string& quota_name);
  size_t total_allocations() const;

 private:
  Config cfg_;
  NonceMint nonces_;
  mutable std::mutex mu_;
  std::shared_ptr<const Credentials> creds_;
  std::unordered_map<std::string, size_t> per_user_;
  size_t total_ = 0;
  std::unordered_map<std::string, int64_t> revoked_;  // subject -> until (guarded by mu_)
  std::set<std::pair<IpAddr, uint16_t>> relayed_;     // guarded by mu_
  std::atomic<uint64_t> rev_gen_{0};
};

struct Allocation {
  ClientKey client;
  RelaySocket relay;
  std::string username;    // as authenticated (RFC 8656: later requests must match)
  std::string quota_name;  // what quotas count (for REST credentials, the subject)
  bool rest = false;       // a REST credential: subject to revocation
  LongTermKey key{};       // for MESSAGE-INTEGRITY on responses
  stun::TxId alloc_tx{};   // Allocate retransmissions get the same answer
  int64_t expires_ms = 0;
  int64_t created_ms = 0;
  uint32_t lifetime_s = 0;

  struct Permission {
    IpAddr ip;
    int64_t expires_ms;
  };
  std::vector<Permission> perms;
  struct Channel {
    uint16_t number = 0;
    SockAddr peer;
    int64_t expires_ms = 0;
  };
  std::vector<Channel> channels;
  // Channel number - 0x4000 -> 1 + index in `channels` (0: unbound).
  std::array<uint16_t, kChannelMax - kChannelMin + 1> channel_index{};

  // Token bucket for the per-allocation bandwidth quota.
  double tokens = 0;
  int64_t tokens_ms = 0;

  uint64_t packets_out = 0, bytes_out = 0, packets_in = 0, bytes_in = 0;

  bool permitted(const IpAddr& ip, int64_t now_ms) const {
    for (const auto& p : perms)
      if (p.ip == ip && p.expires_ms > now_ms) return true;
    return false;
  }
  const Channel* channel(uint16_t number) const {
    if (number < kChannelMin || number > kChannelMax) return nullptr;
    uint16_t i = channel_index[number - kChannelMin];
    return i ? &channels[i - 1] : nullptr;
  }
  const Channel* channel_for(const SockAddr& peer) const {
    for (const auto& c : channels)
      if (c.peer == peer) return &c;
    return nullptr;
  }
};

class Engine {
 public:
  Engine(Shared& shared, Io& io, Stats& stats);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A STUN message (request or indication) from a client.
  void on_message(const ClientKey& from, stun::Bytes pkt, Now now);

  // ChannelData fast path, client -> peer: the allocation and peer to send
  // `len` bytes to, or alloc == nullptr (unknown client, unbound or expired
  // channel, or over the bandwidth quota; counted in Stats).
  //
  // When the peer is the relayed address of another allocation of this
  // engine (both peers relayed through this server), `local` is that
  // allocation and the datagram must not go through the kernel: the
  // receiving side's rules have been applied as on_peer_data() applies them
  // to a datagram arriving on its relay socket from our relayed address, and
  // `local_channel` says what to send to `local`'s client: ChannelData on
  // that channel (> 0), a Data indication (0), or nothing (-1: no permission
  // for our relayed address at `local`, or its bandwidth quota).
  struct Route {
    Allocation* alloc = nullptr;
    const SockAddr* peer = nullptr;
    Allocation* local = nullptr;
    int local_channel = -1;
  };
  Route route_channel(const ClientKey& from, uint16_t channel, size_t len, int64_t now_ms);

  // Peer -> client: a datagram of `len` bytes arrived on `a`'s relay socket
  // from `peer`. Returns the channel to send it on (ChannelData), 0 to send
  // a Data indication, or -1 to drop it (no permission, rate).
  int on_peer_data(Allocation& a, const SockAddr& peer, size_t len, int64_t now_ms);

  // Builds a Data indication (RFC 8656 section 11.4) into `out`.
  static stun::Bytes build_data_indication(std::span<uint8_t> out, const SockAddr& peer,
                                           stun::Bytes data);

  // Expires allocations, permissions and channels. Call about once a second.
  void expire(int64_t now_ms);
  // Ends the allocations of revoked REST subjects (Shared::revoke). Cheap
  // when nothing was revoked since the last call. Call about once a second.
  void end_revoked(int64_t unix_s);
  // A TCP/TLS client connection closed: its allocation goes with it.
  void client_gone(const ClientKey& k);
  // Frees allocations removed since the last call. Call once no pointer
  // from this loop iteration (epoll data) can still refer to them.
  void collect();
  // Deletes every allocation (shutdown).
  void clear();

  Allocation* find(const ClientKey& k);
  // The allocation whose relayed transport address is `relayed`, or nullptr.
  Allocation* find_relayed(const SockAddr& relayed);
  size_t allocation_count() const { return allocs_.size(); }
  template <typename Fn>
  void for_each(Fn fn) const {
    for (const auto& [k, a] : allocs_) fn(*a);
  }

 private:
  struct Auth;
  void handle_request(const ClientKey& from, const stun::MessageView& m, Now now);
  void handle_send(const ClientKey& from, const stun::MessageView& m, Now now);
  void binding(const ClientKey& from, const stun::MessageView& m);
  // An RFC 3489 Binding request (no magic cookie): answered, true; not one, false.
  bool classic_binding(const ClientKey& from, stun::Bytes pkt);
  bool authenticate(const ClientKey& from, const stun::MessageView& m, Now now, Auth* out);
  void allocate(const ClientKey& from, const stun::MessageView& m, Now now, const Auth& auth);
  void refresh(Allocation& a, const stun::MessageView& m, Now now, const Auth& auth);
  void create_permission(Allocation& a, const stun::MessageView& m, Now now, const Auth& auth);
  void channel_bind(Allocation& a, const stun::MessageView& m, Now now, const Auth& auth);
  void send_error(const ClientKey& to, const stun::MessageView& m, int code, std::string_view reason,
                  const Auth* auth, Now now, bool with_nonce = false);
  // Ends an answer to an unauthenticated request: no SOFTWARE, and a
  // FINGERPRINT only when the request had one, so that an answer to a
  // spoofed source is not much larger than the request (amplification).
  static void finish_unauthenticated(stun::Builder& b, const stun::MessageView& m);
  void send_success(const ClientKey& to, stun::Builder& b, const Auth& auth);
  void remove(const ClientKey& k, bool expired);
  void add_permission(Allocation& a, const IpAddr& ip, int64_t now_ms);
  bool take_tokens(Allocation& a, size_t len, int64_t now_ms);
  // The internal hop from `from`'s relayed address to `to` (see Route).
  int hand_over(Allocation& from, Allocation& to, size_t len, int64_t now_ms);

  Shared& shared_;
  Io& io_;
  Stats& stats_;
  std::unordered_map<ClientKey, std::unique_ptr<Allocation>, ClientKeyHash> allocs_;
  // Relayed transport address (as a ClientKey: conn 0, UDP) -> allocation.
  std::unordered_map<ClientKey, Allocation*, ClientKeyHash> by_relayed_;
  std::vector<std::unique_ptr<Allocation>> graveyard_;
  std::array<uint8_t, 1500> out_{};  // control responses
  std::vector<LongTermKey> keys_;    // scratch for authentication
  // One-entry cache for the fast path (batches tend to come from one client).
  ClientKey last_key_{};
  Allocation* last_alloc_ = nullptr;
  uint64_t rev_seen_ = 0;  // Shared::revocation_generation() at the last end_revoked()
};

}  // namespace mesh::turn
