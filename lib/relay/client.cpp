#include "relay/client.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/file.h"
#include "core/json.h"
#include "netmap/endpoints.h"
#include "relay/sockets.h"
#include "stun/stun.h"

namespace mesh::relay {
namespace {

constexpr int kBatch = 64;
constexpr size_t kHeadroom = 64;
constexpr size_t kSlot = 65536 + kHeadroom;
constexpr uint32_t kLifetime = 600;         // requested allocation lifetime
constexpr int64_t kPermRefreshMs = 240000;  // permissions live 300 s
constexpr int64_t kChanRefreshMs = 300000;  // channels live 600 s
constexpr int64_t kPollMs = 1000;           // map file (and --peers-from) checked this often
constexpr size_t kTcpOutCap = 4u << 20;     // queued toward a TCP server, then data is dropped

int64_t mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}


struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// The host part of "HOST:PORT" or "[V6]:PORT", for the certificate check.
std::string host_part(const std::string& hostport) {
  if (!hostport.empty() && hostport[0] == '[') {
    auto end = hostport.find(']');
    return end == std::string::npos ? hostport : hostport.substr(1, end - 1);
  }
  auto colon = hostport.rfind(':');
  return colon == std::string::npos ? hostport : hostport.substr(0, colon);
}

// OpenSSL's reason for the last failure on `ssl`: the certificate check's
// verdict when that is what failed, else the error queue.
std::string tls_error(SSL* ssl) {
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) return std::string("certificate: ") + X509_verify_cert_error_string(v);
  unsigned long e = ERR_get_error();
  if (e == 0) return errno ? std::string(strerror(errno)) : "connection closed during the handshake";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

struct Creds {
  std::string server, transport, username, password;
  int64_t expires_at = 0;
  bool operator==(const Creds&) const = default;
};

struct Txn {
  uint16_t method = 0;
  uint32_t lifetime = 0;        // Allocate/Refresh
  std::optional<SockAddr> peer; // CreatePermission/ChannelBind
  uint16_t channel = 0;
  PublicKey peer_key;
  std::vector<uint8_t> msg;
  int64_t next_ms = 0;
  int rto_ms = 250;
  int tries = 0;
  bool authed = false;
};

struct Peer {
  MapPeer info;
  bool relayed = false;  // needs the relay: has a local port listed in the endpoints doc
  UniqueFd local;
  SockAddr local_addr;
  std::optional<SockAddr> target;  // where its channel points
  bool target_relay = false;       // target is one of its relay candidates
  // The last datagram WireGuard sent before there was a relay candidate to
  // send it to (or an allocation): a handshake initiation, which WireGuard
  // would only repeat 5 s later. Sent when the target appears (if fresh).
  std::vector<uint8_t> held;
  int64_t held_at = 0;
  uint16_t channel = 0;
  bool bound = false;
  bool binding = false;
  int64_t bind_at = 0;
};

class Client {
 public:
  Client(const ClientOptions& o, Log& log) : opt_(o), log_(log), self_key_(o.self_key) {}
  Status run();

 private:
  // map input
  Status load_map_text(const std::string& text, const std::string& source);
  Status poll_inputs(bool force);
  void read_stdin();
  void apply_map();
  std::set<PublicKey> relay_needed() const;
  // TURN session
  void reset_session(const std::string& why, int64_t delay_ms);
  void start_allocate();
  void send_txn(Txn t);
  void build(Txn& t);
  void on_server(uint32_t events);
  void on_frame(uint8_t* p, size_t len);
  // To the TURN server: a datagram over UDP; over TCP, a frame appended to
  // the stream (ChannelData padded to 4 bytes, RFC 8656 section 12.5) and
  // written when the socket takes it. `data`: droppable when the queue is full.
  void srv_send(const uint8_t* p, size_t len, bool data);
  void tcp_flush();
  // TLS (map transport "tls"): the TURN stream inside a TLS session on the
  // TCP connection. tls_start() sets it up once connect() is under way;
  // tls_handshake() drives it on socket events (false: it failed and the
  // session was reset); stream_read() reads plaintext either way.
  Status tls_context();  // once per client; Config when the CA file is unusable
  Status tls_start();
  bool tls_handshake();
  void want_out(bool want);
  ssize_t stream_read(uint8_t* p, size_t n, std::string* why);
  void on_response(const stun::MessageView& m);
  void on_data_indication(const stun::MessageView& m);
  void on_local(Peer& p);
  void timers();
  // When timers() has something to do next (at most a poll interval away):
  // an idle client sleeps instead of waking on a fixed tick.
  int64_t next_deadline(int64_t now) const;
  // The map peer that `a` belongs to, by address or else by IP; relay
  // candidates never match by IP alone (every allocation on a relay shares
  // its address).
  Peer* peer_by_addr(const SockAddr& a);
  Peer* anon_peer(const SockAddr& from);
  // Points the peer's channel at `t` (a new target is bound again).
  void retarget(Peer& p, std::optional<SockAddr> t);
  // A datagram toward the peer's target in a Send indication (before its
  // channel is bound).
  void send_indication(Peer& p, const uint8_t* d, size_t len);
  void flush_held(Peer& p);
  Status open_local(Peer& p);
  Result<UniqueFd> open_udp_not_wg(const SockAddr& a);
  void write_endpoints();

  const ClientOptions& opt_;
  Log& log_;
  std::optional<PublicKey> self_key_;  // opt_.self_key, or the rotated key read since
  UniqueFd ep_, sig_;
  // inputs
  std::optional<NetMap> map_;
  std::optional<EndpointsDoc> punch_;
  struct timespec map_mtime_{}, punch_mtime_{};
  off_t map_size_ = -1, punch_size_ = -1;
  std::string stdin_buf_;
  bool stdin_open_ = false;
  uint16_t wg_port_ = 0;
  SockAddr wg_addr_;
  sockaddr_storage wg_ss_{};
  socklen_t wg_sl_ = 0;
  // session
  Creds creds_;
  UniqueFd srv_;
  SockAddr server_addr_;
  bool tcp_ = false;              // the session runs over TCP (map transport "tcp" or "tls")
  std::unique_ptr<SSL_CTX, SslCtxFree> tls_ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;  // set: the stream is TLS
  bool tls_ready_ = false;             // handshake done
  std::vector<uint8_t> tin_;      // TCP: bytes received, not yet a whole frame
  size_t tin_len_ = 0;
  std::vector<uint8_t> tout_;     // TCP: bytes to write
  size_t tout_off_ = 0;
  bool tout_want_ = false;        // EPOLLOUT requested
  enum class State { Idle, Allocating, Allocated } state_ = State::Idle;
  std::string realm_, nonce_;
  std::array<uint8_t, 16> key_{};
  bool have_key_ = false;
  std::optional<SockAddr> relayed_, mapped_;
  int64_t alloc_at_ = 0, refresh_at_ = 0;
  int backoff_ms_ = 0;
  std::map<stun::TxId, Txn> txns_;
  std::map<IpAddr, int64_t> perms_;  // ip -> next refresh
  uint16_t next_channel_ = 0x4000;
  std::map<PublicKey, std::unique_ptr<Peer>> peers_;
  // Sources on the relay that no map peer claims yet (a peer whose relayed
  // address is not in our map so far): each gets a local port of its own, so
  // its WireGuard handshake is not lost while its announce is on its way.
  std::map<SockAddr, std::unique_ptr<Peer>> anon_;
  std::array<Peer*, 0x1000> by_channel_{};
  std::string last_doc_;
  // I/O
  RxBatch rx_;
  TxBatch out_;
  bool gro_ = false;  // UDP GRO on the server socket: trains read as one message
  std::array<uint8_t, 2048> ctl_{};
  std::unique_ptr<uint8_t[]> scratch_{new uint8_t[kSlot]};
  int64_t next_poll_ms_ = 0;
};

Status Client::load_map_text(const std::string& text, const std::string& source) {
  MESH_ASSIGN(Json j, parse_json(text, source));
  MESH_ASSIGN(NetMap m, parse_netmap(j, source));
  if (self_key_ && !(*self_key_ == m.self.public_key) && !opt_.self_key_file.empty())
    if (auto k = read_private_key_file(opt_.self_key_file)) self_key_ = k->public_key();
  if (self_key_ && !(*self_key_ == m.self.public_key))
    return Status(Exit::Config, source + ": the map is for another node (self.public_key does not match --key)");
  uint16_t port = opt_.wg_port ? opt_.wg_port : m.self.listen_port;
  if (!port)
    return Status(Exit::Config, source + ": no WireGuard port: give --wg-port or self.listen_port in the map");
  map_ = std::move(m);
  wg_port_ = port;
  wg_addr_ = SockAddr{opt_.local_ip, port};
  wg_sl_ = wg_addr_.to_sockaddr(&wg_ss_);
  return Status::ok();
}

static bool file_changed(const std::string& path, timespec* mtime, off_t* size) {
  struct stat st;
  if (stat(path.c_str(), &st) < 0) return false;
  bool changed = st.st_mtim.tv_sec != mtime->tv_sec || st.st_mtim.tv_nsec != mtime->tv_nsec ||
                 st.st_size != *size;
  *mtime = st.st_mtim;
  *size = st.st_size;
  return changed;
}

Status Client::poll_inputs(bool force) {
  bool changed = false;
  if (opt_.map_path != "-" && (file_changed(opt_.map_path, &map_mtime_, &map_size_) || force)) {
    auto text = read_file(opt_.map_path);
    Status s = text ? load_map_text(*text, opt_.map_path) : text.status();
    if (!s) {
      if (!map_) return s;
      log_.warn("keeping the previous map: " + s.message());
    } else {
      changed = true;
    }
  }
  if (!opt_.peers_from.empty() &&
      (file_changed(opt_.peers_from, &punch_mtime_, &punch_size_) || force)) {
    auto d = read_endpoints_file(opt_.peers_from);
    if (d) {
      punch_ = std::move(*d);
      changed = true;
    } else if (!punch_) {
      log_.warn("--peers-from: " + d.status().message() + " (relaying no peer until it is readable)");
    }
  }
  if (changed) apply_map();
  return Status::ok();
}

void Client::read_stdin() {
  char buf[65536];
  while (true) {
    ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0 || errno != EAGAIN) {
        stdin_open_ = false;
        epoll_ctl(ep_.get(), EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
      }
      break;
    }
    stdin_buf_.append(buf, static_cast<size_t>(r));
    if (stdin_buf_.size() > (64u << 20)) {
      log_.error("map line longer than 64 MiB on stdin: dropped");
      stdin_buf_.clear();
    }
  }
  bool changed = false;
  size_t nl;
  while ((nl = stdin_buf_.find('\n')) != std::string::npos) {
    std::string line = stdin_buf_.substr(0, nl);
    stdin_buf_.erase(0, nl + 1);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Status s = load_map_text(line, "<stdin>");
    if (!s) log_.warn("ignoring a map: " + s.message());
    else changed = true;
  }
  if (changed) apply_map();
}

std::set<PublicKey> Client::relay_needed() const {
  std::set<PublicKey> out;
  if (!map_) return out;
  for (const auto& p : map_->peers) {
    if (opt_.peers_from.empty()) {
      out.insert(p.public_key);
    } else if (punch_) {
      const PeerPath* pp = punch_->find(p.public_key);
      if (pp && (pp->status == "relay-needed" || pp->status == "relayed")) out.insert(p.public_key);
    }
  }
  return out;
}

static std::optional<SockAddr> pick_target(const MapPeer& p, int family) {
  for (const auto& c : p.endpoints)
    if (c.kind == "relay" && c.endpoint.ip.family == family) return c.endpoint;
  for (const auto& c : p.endpoints)
    if (c.endpoint.ip.family == family) return c.endpoint;
  return std::nullopt;
}

void Client::apply_map() {
  if (!map_) return;
  // Credentials: the first TURN server we can speak to.
  Creds c;
  for (const auto& t : map_->turn) {
    if (t.transport == "udp" || t.transport == "tcp" || t.transport == "tls") {
      c = {t.server, t.transport, t.username, t.password, t.expires_at};
      break;
    }
  }
  if (!(c == creds_)) {
    bool server_changed = c.server != creds_.server || c.transport != creds_.transport;
    creds_ = c;
    have_key_ = false;
    if (server_changed) reset_session("TURN server changed", 0);
  }
  auto need = relay_needed();
  std::set<PublicKey> in_map;
  for (const auto& mp : map_->peers) {
    in_map.insert(mp.public_key);
    auto& slot = peers_[mp.public_key];
    if (!slot) slot = std::make_unique<Peer>();
    Peer& p = *slot;
    p.info = mp;
    p.relayed = need.count(mp.public_key) > 0;
    if (p.relayed && !p.local) {
      if (Status s = open_local(p); !s) log_.error(s.message());
    }
    int family = relayed_ ? relayed_->ip.family : AF_INET;
    if (p.relayed) retarget(p, pick_target(mp, family));
  }
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (!in_map.count(it->first)) {
      if (it->second->channel) by_channel_[it->second->channel - 0x4000] = nullptr;
      if (it->second->local) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, it->second->local.get(), nullptr);
      it = peers_.erase(it);
    } else {
      ++it;
    }
  }
  // Permissions: every candidate IP of every peer (refreshed by timers()).
  std::set<IpAddr> want;
  for (const auto& mp : map_->peers)
    for (const auto& cand : mp.endpoints) want.insert(cand.endpoint.ip);
  // Peers on the same relay have relayed addresses on our own relayed IP:
  // permitting it lets them reach us before their candidates reach our map.
  if (relayed_) want.insert(relayed_->ip);
  for (auto it = perms_.begin(); it != perms_.end();)
    it = want.count(it->first) ? std::next(it) : perms_.erase(it);
  for (const auto& ip : want) perms_.emplace(ip, 0);
  write_endpoints();
}

// Never WireGuard's listen port: the relay client may start before WireGuard
// binds it (or while it rebinds), and an ephemeral port of ours that happens
// to be it would make every WireGuard configuration fail (EADDRINUSE).
Result<UniqueFd> Client::open_udp_not_wg(const SockAddr& a) {
  MESH_ASSIGN(UniqueFd fd, open_udp(a, opt_.socket_buffer));
  if (wg_port_ == 0 || bound_address(fd.get()).port != wg_port_) return fd;
  return open_udp(a, opt_.socket_buffer);  // another port, while fd still holds that one
}

Status Client::open_local(Peer& p) {
  MESH_ASSIGN(p.local, open_udp_not_wg(SockAddr{opt_.local_ip, 0}));
  p.local_addr = bound_address(p.local.get());
  epoll_event e{EPOLLIN, {}};
  e.data.ptr = &p;
  if (epoll_ctl(ep_.get(), EPOLL_CTL_ADD, p.local.get(), &e) < 0)
    return errno_status("epoll_ctl", errno);
  return Status::ok();
}

void Client::write_endpoints() {
  if (!map_) return;
  EndpointsDoc d;
  d.generated_at = static_cast<int64_t>(::time(nullptr));
  d.public_key = map_->self.public_key;
  if (state_ == State::Allocated && relayed_) d.candidates.push_back({*relayed_, "relay"});
  for (const auto& [k, p] : peers_) {
    if (!p->relayed || !p->local) continue;
    PeerPath pp;
    pp.public_key = k;
    pp.name = p->info.name;
    pp.status = "relayed";
    pp.endpoint = p->local_addr;
    pp.kind = "relay";
    d.peers.push_back(pp);
  }
  Json j = endpoints_to_json(d);
  Json cmp = j;
  cmp.erase("generated_at");
  std::string key = dump_json(cmp);
  if (key == last_doc_) return;
  last_doc_ = key;
  std::string line = dump_json(j);
  if (!opt_.endpoints_out.empty()) {
    Status s = write_file_atomic(opt_.endpoints_out, dump_json(j, true) + "\n", 0644);
    if (!s) log_.error("endpoints: " + s.message());
  }
  if (opt_.on_endpoints) opt_.on_endpoints(d, line);
}

// ---- TURN session --------------------------------------------------------------

void Client::reset_session(const std::string& why, int64_t delay_ms) {
  if (srv_) {
    log_.warn("relay session reset: " + why);
    epoll_ctl(ep_.get(), EPOLL_CTL_DEL, srv_.get(), nullptr);
    srv_.reset();
  }
  ssl_.reset();  // no close_notify: the socket is gone, and the server only needs EOF
  tls_ready_ = false;
  tin_len_ = 0;
  tout_.clear();
  tout_off_ = 0;
  tout_want_ = false;
  state_ = State::Idle;
  txns_.clear();
  relayed_.reset();
  for (auto& [ip, at] : perms_) at = 0;
  for (auto& [k, p] : peers_) {
    if (p->channel) by_channel_[p->channel - 0x4000] = nullptr;
    p->channel = 0;
    p->bound = p->binding = false;
    p->bind_at = 0;
    if (!p->relayed) p->target.reset();
  }
  for (auto& [a, p] : anon_) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, p->local.get(), nullptr);
  anon_.clear();
  next_channel_ = 0x4000;
  alloc_at_ = mono_ms() + delay_ms;
  write_endpoints();
}

void Client::start_allocate() {
  if (creds_.server.empty()) return;
  auto addr = resolve_hostport(creds_.server);
  if (!addr) {
    log_.error("TURN server: " + addr.status().message());
    alloc_at_ = mono_ms() + 5000;
    return;
  }
  server_addr_ = *addr;
  tcp_ = creds_.transport == "tcp" || creds_.transport == "tls";
  Result<UniqueFd> fd = UniqueFd();
  if (tcp_) {
    // RFC 8656 section 3.1: TURN over TCP between client and server; the
    // relay side stays UDP. A fresh connection per session (after a relay
    // restart the old one is gone anyway).
    UniqueFd t(socket(addr->ip.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (t) {
      int one = 1;
      setsockopt(t.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      set_buffers(t.get(), opt_.socket_buffer);
      fd = std::move(t);
    } else {
      fd = errno_status("socket", errno);
    }
    if (tin_.empty()) tin_.resize(65536 + 64);  // the largest frame: 20 + 65535
    gro_ = false;
  } else {
    fd = open_udp_not_wg(SockAddr{IpAddr{addr->ip.family, {}}, 0});
    // The server sends runs of ChannelData to us as GSO trains: with GRO a
    // train that crossed the network as one packet (loopback, veth, NAT)
    // is read as one message instead of being split on the way in.
    gro_ = fd && enable_gro(fd->get());
  }
  if (!fd) {
    log_.error(fd.status().message());
    alloc_at_ = mono_ms() + 5000;
    return;
  }
  sockaddr_storage ss;
  socklen_t sl = server_addr_.to_sockaddr(&ss);
  if (connect(fd->get(), reinterpret_cast<sockaddr*>(&ss), sl) < 0 && !(tcp_ && errno == EINPROGRESS)) {
    log_.error(errno_status("connect " + server_addr_.to_string(), errno).message());
    alloc_at_ = mono_ms() + 5000;
    return;
  }
  srv_ = std::move(*fd);
  if (creds_.transport == "tls") {
    if (Status s = tls_start(); !s) {
      log_.error(s.message());
      srv_.reset();
      alloc_at_ = mono_ms() + 5000;
      return;
    }
  }
  // TCP: EPOLLOUT until connected (the Allocate waits in tout_; with TLS,
  // until the handshake is done).
  tout_want_ = tcp_;
  epoll_event e{EPOLLIN | (tcp_ ? EPOLLOUT : 0u), {}};
  e.data.ptr = nullptr;
  epoll_ctl(ep_.get(), EPOLL_CTL_ADD, srv_.get(), &e);
  state_ = State::Allocating;
  Txn t;
  t.method = stun::kAllocate;
  t.lifetime = kLifetime;
  send_txn(std::move(t));
}

void Client::build(Txn& t) {
  stun::TxId tx = stun::random_txid();
  stun::Builder b(ctl_, t.method, stun::kRequest, tx);
  if (t.method == stun::kAllocate) {
    uint8_t rt[4] = {17, 0, 0, 0};
    b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
    b.add_u32(stun::kLifetime, t.lifetime);
  } else if (t.method == stun::kRefresh) {
    b.add_u32(stun::kLifetime, t.lifetime);
  } else if (t.method == stun::kCreatePermission) {
    b.add_xor_address(stun::kXorPeerAddress, *t.peer);
  } else if (t.method == stun::kChannelBind) {
    b.add_u32(stun::kChannelNumber, uint32_t{t.channel} << 16);
    b.add_xor_address(stun::kXorPeerAddress, *t.peer);
  }
  t.authed = have_key_;
  if (have_key_) {
    b.add_string(stun::kUsername, creds_.username);
    b.add_string(stun::kRealm, realm_);
    b.add_string(stun::kNonce, nonce_);
    b.add_integrity(key_);
  }
  b.add_fingerprint();
  auto m = b.finish();
  t.msg.assign(m.begin(), m.end());
  txns_.erase(tx);
  t.next_ms = mono_ms() + t.rto_ms;
  srv_send(t.msg.data(), t.msg.size(), false);
  txns_.emplace(tx, std::move(t));
}

void Client::send_txn(Txn t) {
  if (!srv_) return;
  t.tries = 1;
  t.rto_ms = 250;
  build(t);
}

void Client::srv_send(const uint8_t* p, size_t len, bool data) {
  if (!srv_) return;
  if (!tcp_) {
    ssize_t r = ::send(srv_.get(), p, len, MSG_DONTWAIT);
    (void)r;
    return;
  }
  size_t pad = (p[0] & 0xC0) == 0x40 ? (4 - len % 4) % 4 : 0;
  if (data && tout_.size() - tout_off_ + len > kTcpOutCap) return;  // congested: drop
  if (tout_off_ > 0 && tout_off_ == tout_.size()) {
    tout_.clear();
    tout_off_ = 0;
  }
  tout_.insert(tout_.end(), p, p + len);
  tout_.insert(tout_.end(), pad, 0);
  if (!data) tcp_flush();
}

void Client::tcp_flush() {
  if (!srv_ || !tcp_) return;
  if (ssl_ && !tls_ready_) return;  // tls_handshake() asks for the events it needs
  while (tout_off_ < tout_.size()) {
    ssize_t r;
    if (ssl_) {
      // One record per frame would suit a peer that reads a message per
      // record; servers parse the stream (RFC 8656 section 12.5 frames
      // TURN over TLS exactly as over TCP), so records carry as much as is
      // queued. A retry after WANT_WRITE passes the same bytes (and maybe
      // more), which partial-write mode allows.
      ERR_clear_error();
      size_t left = std::min<size_t>(tout_.size() - tout_off_, 1u << 30);
      int n = SSL_write(ssl_.get(), tout_.data() + tout_off_, static_cast<int>(left));
      if (n <= 0) break;  // WANT_WRITE/WANT_READ; failures show up on read
      r = n;
    } else {
      r = ::send(srv_.get(), tout_.data() + tout_off_, tout_.size() - tout_off_,
                 MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) break;  // EAGAIN (or not connected yet); errors show up on read
    }
    tout_off_ += static_cast<size_t>(r);
  }
  if (tout_off_ == tout_.size()) {
    tout_.clear();
    tout_off_ = 0;
  } else if (tout_off_ > (1u << 20)) {
    tout_.erase(tout_.begin(), tout_.begin() + static_cast<long>(tout_off_));
    tout_off_ = 0;
  }
  want_out(tout_off_ < tout_.size());
}

void Client::want_out(bool want) {
  if (!srv_ || want == tout_want_) return;
  tout_want_ = want;
  epoll_event e{EPOLLIN | (want ? EPOLLOUT : 0u), {}};
  e.data.ptr = nullptr;
  epoll_ctl(ep_.get(), EPOLL_CTL_MOD, srv_.get(), &e);
}

Status Client::tls_context() {
  if (!tls_ctx_) {
    tls_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!tls_ctx_) return internal_error("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(tls_ctx_.get(), TLS1_2_VERSION);
    SSL_CTX_set_mode(tls_ctx_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (opt_.tls_verify) {
      if (!opt_.tls_ca.empty() && ::access(opt_.tls_ca.c_str(), R_OK) != 0) {
        int e = errno;
        tls_ctx_.reset();
        return errno_status(opt_.tls_ca, e);
      }
      SSL_CTX_set_verify(tls_ctx_.get(), SSL_VERIFY_PEER, nullptr);
      int ok = opt_.tls_ca.empty()
                   ? SSL_CTX_set_default_verify_paths(tls_ctx_.get())
                   : SSL_CTX_load_verify_locations(tls_ctx_.get(), opt_.tls_ca.c_str(), nullptr);
      if (ok != 1) {
        tls_ctx_.reset();
        return Status(Exit::Config, "cannot load the CA certificates " +
                                        (opt_.tls_ca.empty() ? std::string("(system default)") : opt_.tls_ca));
      }
    }
  }
  return Status::ok();
}

Status Client::tls_start() {
  MESH_TRY(tls_context());
  ssl_.reset(SSL_new(tls_ctx_.get()));
  if (!ssl_) return internal_error("SSL_new failed");
  SSL_set_fd(ssl_.get(), srv_.get());
  SSL_set_connect_state(ssl_.get());
  // RFC 7443: the ALPN name of TURN over TLS.
  static const unsigned char kAlpn[] = {9, 's', 't', 'u', 'n', '.', 't', 'u', 'r', 'n'};
  SSL_set_alpn_protos(ssl_.get(), kAlpn, sizeof kAlpn);
  std::string host = host_part(creds_.server);
  bool literal = static_cast<bool>(IpAddr::parse(host));
  if (!literal) SSL_set_tlsext_host_name(ssl_.get(), host.c_str());
  if (opt_.tls_verify) {
    // The certificate must name the server as the map gives it: its DNS
    // name, or its address in an IP subjectAltName.
    X509_VERIFY_PARAM* vp = SSL_get0_param(ssl_.get());
    int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(vp, host.c_str())
                     : X509_VERIFY_PARAM_set1_host(vp, host.c_str(), host.size());
    if (ok != 1) return internal_error("cannot set the certificate check for " + host);
  }
  tls_ready_ = false;
  return Status::ok();
}

bool Client::tls_handshake() {
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(ssl_.get());
  if (r == 1) {
    tls_ready_ = true;
    log_.info("TLS with " + server_addr_.to_string() + ": " + SSL_get_version(ssl_.get()) + " " +
              SSL_get_cipher_name(ssl_.get()));
    want_out(false);
    tcp_flush();  // the Allocate waiting in tout_
    return true;
  }
  int e = SSL_get_error(ssl_.get(), r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    want_out(e == SSL_ERROR_WANT_WRITE);  // EPOLLIN is always asked for
    return true;
  }
  std::string why = tls_error(ssl_.get());
  reset_session("TLS handshake with " + server_addr_.to_string() + ": " + why,
                std::min(backoff_ms_ = std::max(500, backoff_ms_ * 2), 5000));
  return false;
}

ssize_t Client::stream_read(uint8_t* p, size_t n, std::string* why) {
  if (!ssl_) {
    ssize_t r = ::read(srv_.get(), p, n);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return -1;
    if (r < 0) *why = "TCP connection to the TURN server: " + std::string(strerror(errno));
    if (r == 0) *why = "the TURN server closed the connection";
    return r < 0 ? -2 : r;
  }
  ERR_clear_error();
  errno = 0;
  int r = SSL_read(ssl_.get(), p, static_cast<int>(std::min<size_t>(n, 1u << 30)));
  if (r > 0) return r;
  int e = SSL_get_error(ssl_.get(), r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
  *why = e == SSL_ERROR_ZERO_RETURN ? "the TURN server closed the TLS session"
                                    : "TLS session with the TURN server: " + tls_error(ssl_.get());
  return -2;
}

// One datagram (UDP) or frame (TCP) from the TURN server.
void Client::on_frame(uint8_t* p, size_t len) {
  if (len < 4) return;
  if ((p[0] & 0xC0) == 0x40) {
    uint16_t ch = static_cast<uint16_t>(p[0] << 8 | p[1]);
    size_t dlen = static_cast<size_t>(p[2] << 8 | p[3]);
    if (dlen > len - 4 || ch < 0x4000 || ch > 0x4FFF) return;
    Peer* peer = by_channel_[ch - 0x4000];
    if (!peer || !peer->local) return;
    out_.add(peer->local.get(), &wg_ss_, wg_sl_, p + 4, dlen);
  } else if (stun::looks_like_stun({p, len})) {
    out_.flush();
    auto m = stun::parse({p, len});
    if (!m) return;
    if (m->cls == stun::kIndication && m->method == stun::kData) on_data_indication(*m);
    else if (m->cls == stun::kSuccess || m->cls == stun::kError) on_response(*m);
  }
}

void Client::on_server(uint32_t events) {
  if (!tcp_) {
    for (int round = 0; round < 16 && srv_; ++round) {
      rx_.prepare(gro_);
      int n = recvmmsg(srv_.get(), rx_.msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (n <= 0) break;
      for (int i = 0; i < n && srv_; ++i) {
        if (rx_.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;
        uint8_t* p = rx_.slot(i) + kHeadroom;
        size_t len = rx_.msgs[i].msg_len;
        size_t seg = gro_ ? rx_.segment_size(i) : 0;
        if (seg == 0 || seg >= len) {
          on_frame(p, len);
          continue;
        }
        // A GRO train: datagrams of `seg` bytes (the last may be shorter),
        // each a ChannelData message or a STUN message of its own.
        for (size_t off = 0; off < len && srv_; off += seg) on_frame(p + off, std::min(seg, len - off));
      }
      out_.flush();
      if (n < kBatch) break;
    }
    return;
  }
  if (ssl_ && !tls_ready_) {
    if (!tls_handshake() || !tls_ready_) return;
  }
  if (events & EPOLLOUT) tcp_flush();
  // TLS may hold decrypted bytes the socket no longer signals: read them
  // all, whatever the round count.
  for (int round = 0; srv_ && (round < 16 || (ssl_ && SSL_pending(ssl_.get()) > 0)); ++round) {
    std::string why;
    ssize_t r = stream_read(tin_.data() + tin_len_, tin_.size() - tin_len_, &why);
    if (r == -1) break;
    if (r <= 0) {
      out_.flush();
      return reset_session(why, std::min(backoff_ms_ = std::max(500, backoff_ms_ * 2), 5000));
    }
    tin_len_ += static_cast<size_t>(r);
    // Frames: STUN (20-byte header + length) or ChannelData (4 + length,
    // padded to 4 on streams: RFC 8656 section 12.5).
    size_t off = 0;
    while (srv_) {
      uint8_t* p = tin_.data() + off;
      auto fr = stun::next_stream_frame({p, tin_len_ - off});
      if (fr.kind == stun::StreamFrame::Kind::Incomplete) break;
      if (fr.kind == stun::StreamFrame::Kind::Invalid) {
        out_.flush();
        return reset_session("the TURN server sent a frame that is neither STUN nor ChannelData", 1000);
      }
      on_frame(p, fr.length);
      off += fr.size;
    }
    out_.flush();
    if (!srv_) return;
    if (off) {
      std::memmove(tin_.data(), tin_.data() + off, tin_len_ - off);
      tin_len_ -= off;
    }
  }
  tcp_flush();
}

Peer* Client::peer_by_addr(const SockAddr& a) {
  Peer* by_ip = nullptr;
  for (auto& [k, p] : peers_) {
    if (p->target && *p->target == a) return p.get();
    for (const auto& c : p->info.endpoints) {
      if (c.endpoint == a) return p.get();
      if (!by_ip && c.kind != "relay" && c.endpoint.ip == a.ip) by_ip = p.get();
    }
  }
  return by_ip;
}

Peer* Client::anon_peer(const SockAddr& from) {
  // Only addresses on our own relay, and a bounded number of them.
  if (!relayed_ || from.ip != relayed_->ip) return nullptr;
  auto& slot = anon_[from];
  if (!slot) {
    if (anon_.size() > 256) {
      anon_.erase(from);
      return nullptr;
    }
    slot = std::make_unique<Peer>();
    slot->target = from;
    if (Status s = open_local(*slot); !s) {
      log_.warn("local port for " + from.to_string() + ": " + s.message());
      anon_.erase(from);
      return nullptr;
    }
    log_.info("forwarding " + from.to_string() + " (not in the map yet) from " +
              slot->local_addr.to_string());
  }
  return slot.get();
}

void Client::on_data_indication(const stun::MessageView& m) {
  const auto* pa = m.find(stun::kXorPeerAddress);
  const auto* data = m.find(stun::kData_);
  if (!pa || !data) return;
  auto from = stun::decode_xor_address(*pa, m.tx);
  if (!from) return;
  Peer* p = peer_by_addr(*from);
  if (!p) p = anon_peer(*from);
  if (!p) return;
  if (!p->local) {
    // A peer that is not relayed reached our relayed address: give it a
    // local port so WireGuard can answer (it roams to this endpoint).
    if (Status s = open_local(*p); !s) return;
  }
  if (!p->target) {
    p->target = *from;  // where it reached us from: a way back that works
    p->target_relay = true;
    p->bind_at = 0;
    flush_held(*p);
  }
  ssize_t r = ::sendto(p->local.get(), data->value.data(), data->value.size(), MSG_DONTWAIT,
                       reinterpret_cast<const sockaddr*>(&wg_ss_), wg_sl_);
  (void)r;
}

void Client::on_response(const stun::MessageView& m) {
  auto it = txns_.find(m.tx);
  if (it == txns_.end()) return;
  Txn t = std::move(it->second);
  txns_.erase(it);
  if (t.authed && !stun::check_integrity(m, key_) && m.cls == stun::kSuccess) {
    log_.warn("ignoring a response with a bad MESSAGE-INTEGRITY");
    return;
  }
  int code = 0;
  std::string reason;
  if (m.cls == stun::kError) {
    const auto* ec = m.find(stun::kErrorCode);
    if (ec) {
      if (auto e = stun::decode_error_code(*ec)) {
        code = e->code;
        reason = std::string(e->reason);
      }
    }
    if (code == 0) code = 400;
    const auto* realm = m.find(stun::kRealm);
    const auto* nonce = m.find(stun::kNonce);
    if ((code == 401 || code == 438) && realm && nonce) {
      bool retry = code == 438 || !t.authed;
      std::string new_realm(stun::as_string(*realm));
      nonce_ = stun::as_string(*nonce);
      if (new_realm != realm_ || !have_key_) {
        realm_ = new_realm;
        key_ = stun::long_term_key(creds_.username, realm_, creds_.password);
        have_key_ = true;
        retry = true;
      }
      if (retry && t.tries < 6) {
        t.tries++;
        build(t);
        return;
      }
    }
  }
  int64_t now = mono_ms();
  switch (t.method) {
    case stun::kAllocate:
      if (code) {
        log_.error("TURN Allocate on " + creds_.server + " failed: " + std::to_string(code) + " " +
                   reason);
        if (code == 437) reset_session("allocation mismatch", 0);
        else reset_session("allocate failed", std::min(backoff_ms_ = std::max(1000, backoff_ms_ * 2), 10000));
        return;
      }
      {
        const auto* ra = m.find(stun::kXorRelayedAddress);
        const auto* ma = m.find(stun::kXorMappedAddress);
        const auto* lt = m.find(stun::kLifetime);
        auto r = ra ? stun::decode_xor_address(*ra, m.tx) : Result<SockAddr>(data_error("no relayed address"));
        if (!r) {
          reset_session("Allocate answer without XOR-RELAYED-ADDRESS", 2000);
          return;
        }
        relayed_ = *r;
        if (ma) {
          if (auto x = stun::decode_xor_address(*ma, m.tx)) mapped_ = *x;
        }
        uint32_t life = kLifetime;
        if (lt) {
          if (auto v = stun::decode_u32(*lt)) life = *v;
        }
        state_ = State::Allocated;
        backoff_ms_ = 0;
        int64_t ka = int64_t{opt_.keepalive_s} * 1000;
        refresh_at_ = now + std::min<int64_t>(ka, int64_t{life} * 500);
        log_.info("allocated " + relayed_->to_string() + " on " + server_addr_.to_string());
        // Targets depend on the relayed family.
        for (auto& [k, p] : peers_)
          if (p->relayed) retarget(*p, pick_target(p->info, relayed_->ip.family));
        perms_.emplace(relayed_->ip, 0);
        for (auto& [k, p] : peers_) flush_held(*p);
        write_endpoints();
      }
      break;
    case stun::kRefresh:
      if (code) {
        reset_session("refresh failed: " + std::to_string(code) + " " + reason, 0);
        return;
      }
      {
        uint32_t life = kLifetime;
        if (const auto* lt = m.find(stun::kLifetime))
          if (auto v = stun::decode_u32(*lt)) life = *v;
        refresh_at_ = now + std::min<int64_t>(int64_t{opt_.keepalive_s} * 1000, int64_t{life} * 500);
      }
      break;
    case stun::kCreatePermission:
      if (code) {
        log_.warn("permission for " + t.peer->ip.to_string() + " refused: " + std::to_string(code) +
                  " " + reason);
        if (auto p = perms_.find(t.peer->ip); p != perms_.end()) p->second = now + 60000;
      }
      break;
    case stun::kChannelBind: {
      auto pit = peers_.find(t.peer_key);
      if (pit == peers_.end()) break;
      Peer& p = *pit->second;
      p.binding = false;
      if (p.channel != t.channel) break;  // superseded
      if (code) {
        log_.warn("channel to " + t.peer->to_string() + " refused: " + std::to_string(code) + " " +
                  reason);
        by_channel_[p.channel - 0x4000] = nullptr;
        p.channel = 0;
        p.bound = false;
        p.bind_at = now + 5000;
      } else {
        p.bound = true;
        p.bind_at = now + kChanRefreshMs;
      }
      break;
    }
  }
}

void Client::timers() {
  int64_t now = mono_ms();
  // Retransmissions (RFC 8489 section 6.2.1, with a short cap so that a
  // dead relay is noticed within seconds).
  std::vector<stun::TxId> expired;
  for (auto& [tx, t] : txns_) {
    if (t.next_ms > now) continue;
    if (t.tries >= 5) {
      expired.push_back(tx);
      continue;
    }
    t.tries++;
    t.rto_ms = std::min(t.rto_ms * 2, 1000);
    t.next_ms = now + t.rto_ms;
    // Over TCP the stream delivers or fails: no resend (RFC 8489 section
    // 6.2.2), but the same deadlines decide that the server is gone.
    if (!tcp_) srv_send(t.msg.data(), t.msg.size(), false);
  }
  for (const auto& tx : expired) {
    auto it = txns_.find(tx);
    if (it == txns_.end()) continue;
    uint16_t method = it->second.method;
    PublicKey pk = it->second.peer_key;
    txns_.erase(it);
    if (method == stun::kAllocate || method == stun::kRefresh) {
      reset_session("the TURN server " + creds_.server + " does not answer",
                    std::min(backoff_ms_ = std::max(500, backoff_ms_ * 2), 5000));
      return;
    }
    if (method == stun::kChannelBind)
      if (auto p = peers_.find(pk); p != peers_.end()) {
        p->second->binding = false;
        p->second->bind_at = now + 2000;
      }
  }
  if (state_ == State::Idle) {
    if (!creds_.server.empty() && now >= alloc_at_) start_allocate();
    return;
  }
  if (state_ != State::Allocated) return;
  if (now >= refresh_at_) {
    bool inflight = false;
    for (auto& [tx, t] : txns_) inflight |= t.method == stun::kRefresh;
    if (!inflight) {
      Txn t;
      t.method = stun::kRefresh;
      t.lifetime = kLifetime;
      send_txn(std::move(t));
    }
    refresh_at_ = now + int64_t{opt_.keepalive_s} * 1000;
  }
  for (auto& [ip, at] : perms_) {
    if (at > now || ip.family != relayed_->ip.family) continue;
    Txn t;
    t.method = stun::kCreatePermission;
    t.peer = SockAddr{ip, 0};
    send_txn(std::move(t));
    at = now + kPermRefreshMs;
  }
  for (auto& [k, p] : peers_) {
    if (!p->target || p->binding || p->bind_at > now) continue;
    if (!p->channel) {
      if (next_channel_ > 0x4FFF) continue;
      p->channel = next_channel_++;
      by_channel_[p->channel - 0x4000] = p.get();
    }
    Txn t;
    t.method = stun::kChannelBind;
    t.peer = *p->target;
    t.channel = p->channel;
    t.peer_key = k;
    p->binding = true;
    p->bind_at = now + kChanRefreshMs;
    send_txn(std::move(t));
  }
}

int64_t Client::next_deadline(int64_t now) const {
  int64_t wake = next_poll_ms_ > now ? next_poll_ms_ : now + kPollMs;
  for (const auto& [tx, t] : txns_) wake = std::min(wake, t.next_ms);
  if (state_ == State::Idle && !creds_.server.empty()) wake = std::min(wake, alloc_at_);
  if (state_ == State::Allocated) {
    wake = std::min(wake, refresh_at_);
    for (const auto& [ip, at] : perms_)
      if (ip.family == relayed_->ip.family) wake = std::min(wake, at);
    for (const auto& [k, p] : peers_)
      if (p->target && !p->binding && (p->channel || next_channel_ <= 0x4FFF))
        wake = std::min(wake, p->bind_at);
  }
  return wake;
}

void Client::retarget(Peer& p, std::optional<SockAddr> t) {
  bool relay = false;
  if (t)
    for (const auto& c : p.info.endpoints) relay = relay || (c.kind == "relay" && c.endpoint == *t);
  if (t != p.target) {
    if (p.channel) by_channel_[p.channel - 0x4000] = nullptr;
    p.target = t;
    p.channel = 0;
    p.bound = false;
    p.bind_at = 0;
  }
  p.target_relay = relay;
  flush_held(p);
}

void Client::send_indication(Peer& p, const uint8_t* d, size_t len) {
  stun::Builder b({scratch_.get(), kSlot}, stun::kSend, stun::kIndication, stun::random_txid());
  b.add_xor_address(stun::kXorPeerAddress, *p.target).add(stun::kData_, {d, len});
  auto m = b.finish();
  out_.flush();
  srv_send(m.data(), m.size(), true);
}

void Client::flush_held(Peer& p) {
  if (p.held.empty() || state_ != State::Allocated || !p.target || !p.target_relay) return;
  if (mono_ms() - p.held_at < 3000) {
    send_indication(p, p.held.data(), p.held.size());
    tcp_flush();
  }
  p.held.clear();
}

void Client::on_local(Peer& p) {
  for (int round = 0; round < 16; ++round) {
    rx_.prepare();
    int n = recvmmsg(p.local.get(), rx_.msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) break;
    if (!(state_ == State::Allocated && p.target && p.target_relay) &&
        !(rx_.msgs[n - 1].msg_hdr.msg_flags & MSG_TRUNC)) {
      p.held.assign(rx_.slot(n - 1) + kHeadroom, rx_.slot(n - 1) + kHeadroom + rx_.msgs[n - 1].msg_len);
      p.held_at = mono_ms();
    }
    if (state_ == State::Allocated && p.target) {
      for (int i = 0; i < n; ++i) {
        uint8_t* d = rx_.slot(i) + kHeadroom;
        size_t len = rx_.msgs[i].msg_len;
        if (rx_.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;
        if (p.bound) {
          stun::write_channel_data_header(d - 4, p.channel, static_cast<uint16_t>(len));
          if (tcp_) srv_send(d - 4, len + 4, true);
          else out_.add(srv_.get(), nullptr, 0, d - 4, len + 4);
        } else {
          // Before the channel is bound: a Send indication (the
          // permission comes with the map).
          send_indication(p, d, len);
        }
      }
      out_.flush();
      tcp_flush();
    }
    if (n < kBatch) break;
  }
}

Status Client::run() {
  if (!opt_.tls_ca.empty()) MESH_TRY(tls_context());  // a bad --tls-ca fails now, not at the first TLS session
  ep_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!ep_) return errno_status("epoll_create1", errno);
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  sig_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  epoll_event e{EPOLLIN, {}};
  e.data.ptr = &sig_;
  epoll_ctl(ep_.get(), EPOLL_CTL_ADD, sig_.get(), &e);

  if (opt_.map_path == "-") {
    // The first map is required before anything else.
    std::string line;
    char c;
    while (true) {
      ssize_t r = ::read(STDIN_FILENO, &c, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return data_error("<stdin>: no network map");
      if (c == '\n') {
        if (line.find_first_not_of(" \t\r") != std::string::npos) break;
        line.clear();
        continue;
      }
      line += c;
    }
    MESH_TRY(load_map_text(line, "<stdin>"));
    int fl = fcntl(STDIN_FILENO, F_GETFL);
    fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK);
    e.data.ptr = &stdin_buf_;
    if (epoll_ctl(ep_.get(), EPOLL_CTL_ADD, STDIN_FILENO, &e) == 0) stdin_open_ = true;
    MESH_TRY(poll_inputs(true));
    apply_map();
  } else {
    auto text = read_file(opt_.map_path);
    if (!text) return text.status();
    MESH_TRY(poll_inputs(true));
  }

  epoll_event evs[64];
  while (true) {
    int64_t now = mono_ms();
    int64_t wake = next_deadline(now);
    int n = epoll_wait(ep_.get(), evs, 64, static_cast<int>(std::max<int64_t>(0, wake - now)));
    for (int i = 0; i < n; ++i) {
      void* ptr = evs[i].data.ptr;
      if (ptr == &sig_) {
        signalfd_siginfo si;
        while (::read(sig_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
          if (si.ssi_signo == SIGHUP) {
            (void)poll_inputs(true);
            continue;
          }
          // Release the allocation (Refresh lifetime 0), best effort.
          if (state_ == State::Allocated) {
            Txn t;
            t.method = stun::kRefresh;
            t.lifetime = 0;
            send_txn(std::move(t));
          }
          return Status::ok();
        }
      } else if (ptr == &stdin_buf_) {
        read_stdin();
      } else if (ptr == nullptr) {
        on_server(evs[i].events);
      } else {
        on_local(*static_cast<Peer*>(ptr));
      }
    }
    now = mono_ms();
    if (now >= next_poll_ms_) {
      (void)poll_inputs(false);
      next_poll_ms_ = now + kPollMs;
    }
    timers();
  }
}

}  // namespace

Result<SockAddr> resolve_hostport(const std::string& text) {
  if (auto a = SockAddr::parse(text)) return *a;
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return data_error("invalid server '" + text + "': expected HOST:PORT");
  std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || !res) return unavailable("cannot resolve " + text + ": " + gai_strerror(rc));
  SockAddr a = SockAddr::from_sockaddr(res->ai_addr);
  freeaddrinfo(res);
  return a;
}

Status run_client(const ClientOptions& opt, Log& log) {
  Client c(opt, log);
  return c.run();
}

Result<CheckResult> check_allocate(const std::string& server, const std::string& username,
                                   const std::string& password, const std::optional<SockAddr>& peer,
                                   int timeout_ms, int hold_ms) {
  MESH_ASSIGN(SockAddr addr, resolve_hostport(server));
  MESH_ASSIGN(UniqueFd fd, open_udp(SockAddr{IpAddr{addr.ip.family, {}}, 0}, 0));
  sockaddr_storage ss;
  socklen_t sl = addr.to_sockaddr(&ss);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), sl) < 0)
    return errno_status("connect " + addr.to_string(), errno);
  std::array<uint8_t, 1500> buf{}, in{};
  std::string realm, nonce;
  std::array<uint8_t, 16> key{};
  bool authed = false;
  CheckResult res;
  int64_t deadline = mono_ms() + timeout_ms;
  // Sends one request (with retransmissions) and waits for its answer;
  // handles the 401/438 challenge once. fill() adds the method's attributes.
  auto transact = [&](uint16_t method, auto fill) -> Result<std::vector<uint8_t>> {
    for (int attempt = 0; attempt < 4; ++attempt) {
      stun::TxId tx = stun::random_txid();
      stun::Builder b(buf, method, stun::kRequest, tx);
      fill(b);
      if (authed) {
        b.add_string(stun::kUsername, username).add_string(stun::kRealm, realm);
        b.add_string(stun::kNonce, nonce).add_integrity(key);
      }
      b.add_fingerprint();
      auto msg = b.finish();
      int rto = 250;
      while (true) {
        if (mono_ms() >= deadline) return unavailable("no answer from " + server);
        ssize_t w = ::send(fd.get(), msg.data(), msg.size(), 0);
        (void)w;
        pollfd p{fd.get(), POLLIN, 0};
        int64_t until = std::min(deadline, mono_ms() + rto);
        bool got = false;
        while (!got && mono_ms() < until) {
          if (poll(&p, 1, static_cast<int>(until - mono_ms())) <= 0) continue;
          ssize_t r = ::recv(fd.get(), in.data(), in.size(), 0);
          if (r <= 0) {
            if (r < 0 && errno == ECONNREFUSED) return unavailable("connection refused by " + server);
            continue;
          }
          auto m = stun::parse({in.data(), static_cast<size_t>(r)});
          if (!m || m->tx != tx) continue;
          got = true;
          if (m->cls == stun::kError) {
            const auto* ec = m->find(stun::kErrorCode);
            auto e = ec ? stun::decode_error_code(*ec) : Result<stun::ErrorCode>(data_error("x"));
            int code = e ? e->code : 400;
            const auto* r_ = m->find(stun::kRealm);
            const auto* n_ = m->find(stun::kNonce);
            if ((code == 401 && !authed && !username.empty()) || code == 438) {
              if (r_ && n_) {
                realm = stun::as_string(*r_);
                nonce = stun::as_string(*n_);
                key = stun::long_term_key(username, realm, password);
                authed = true;
                break;  // retry with credentials
              }
            }
            res.ok = false;
            res.error_code = code;
            res.reason = e ? std::string(e->reason) : "";
            return std::vector<uint8_t>();
          }
          if (authed && !stun::check_integrity(*m, key))
            return data_error("the answer's MESSAGE-INTEGRITY does not verify");
          if (const auto* sw = m->find(stun::kSoftware)) res.software = stun::as_string(*sw);
          return std::vector<uint8_t>(in.data(), in.data() + r);
        }
        if (got) break;
        rto = std::min(rto * 2, 2000);
      }
    }
    return unavailable("authentication loop with " + server);
  };
  MESH_ASSIGN(auto ans, transact(stun::kAllocate, [](stun::Builder& b) {
                uint8_t rt[4] = {17, 0, 0, 0};
                b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
              }));
  if (ans.empty()) return res;
  auto m = stun::parse(ans);
  if (!m) return m.status();
  if (const auto* ra = m->find(stun::kXorRelayedAddress)) {
    if (auto a = stun::decode_xor_address(*ra, m->tx)) res.relayed = *a;
  }
  if (const auto* ma = m->find(stun::kXorMappedAddress)) {
    if (auto a = stun::decode_xor_address(*ma, m->tx)) res.mapped = *a;
  }
  if (const auto* lt = m->find(stun::kLifetime)) {
    if (auto v = stun::decode_u32(*lt)) res.lifetime = *v;
  }
  res.ok = true;
  if (peer) {
    MESH_ASSIGN(auto a2, transact(stun::kChannelBind, [&](stun::Builder& b) {
                  b.add_u32(stun::kChannelNumber, 0x40000000u);
                  b.add_xor_address(stun::kXorPeerAddress, *peer);
                }));
    if (a2.empty()) res.ok = false;
  }
  if (hold_ms > 0) {
    timespec ts{hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, nullptr);
  }
  deadline = mono_ms() + timeout_ms;
  auto rel = transact(stun::kRefresh, [](stun::Builder& b) { b.add_u32(stun::kLifetime, 0); });
  (void)rel;
  return res;
}

}  // namespace mesh::relay
