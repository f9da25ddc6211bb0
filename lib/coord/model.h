// The coordinator's in-memory model: peers, setup keys, the compiled policy
// and, per peer, the serial and digest of its network map. It is the
// authority for map computation (the store only persists it) and is not
// thread-safe: the server guards it with one shared mutex.
//
// Incrementality: the policy is compiled into, per rule, the sorted sets of
// peers its src and dst select, and per peer the rules it is a source or a
// destination of. A peer joining, leaving or changing touches only its
// "neighbours" (peers sharing a rule with it) plus itself; only their maps
// are recomputed. A map is not kept as JSON: each peer keeps a 64-bit digest
// of its map's content, so a recompute is cheap and a map whose digest did
// not change keeps its serial. JSON is built on request (build_map).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "coord/delta.h"
#include "coord/policy.h"
#include "coord/routes.h"
#include "core/key.h"
#include "core/net.h"
#include "netmap/netmap.h"

namespace mesh::coord {

struct TurnConfig {
  std::string server;              // HOST:PORT
  std::string transport = "udp";   // udp, tcp, tls
};

struct ModelConfig {
  Prefix ipv4 = {IpAddr::v4(0x64400000u), 10};  // 100.64.0.0/10
  Prefix ipv6;                                  // fdXX:XXXX:XXXX::/48
  std::vector<std::string> stun;
  std::vector<TurnConfig> turn;
  std::string relay_secret;           // empty: no TURN credentials
  // Seconds; re-minted at half-life. Short, since a credential outlives its
  // peer's deletion on relays that do not follow the revocations.
  int64_t credential_lifetime = 3600;
  int keepalive = 25;
  int mtu = 1420;
  std::string dns_domain = "mesh";  // maps' dns.domain: peers are NAME.DOMAIN
};

struct SetupKey {
  int64_t id = 0;
  std::string name;
  std::string hash;  // hex SHA-256 of the key
  bool reusable = false;
  int64_t usage_limit = 1;  // 0: unlimited (reusable only)
  int64_t used = 0;
  int64_t expires_at = 0;   // 0: never
  bool revoked = false;
  bool ephemeral = false;
  int64_t ephemeral_timeout = 600;
  std::vector<std::string> groups, tags;
  std::string peer_name;  // "": any free name the policy does not grant by
  int64_t created_at = 0;

  // Why this key cannot enrol now ("" when it can).
  std::string unusable_reason(int64_t now) const;
  Json to_json() const;  // without the hash
};

struct Peer {
  uint32_t id = 0;
  std::string name;
  PublicKey public_key;
  uint32_t host_index = 0;  // offset of both overlay addresses in their prefixes
  IpAddr ipv4, ipv6;
  uint16_t listen_port = 0;
  std::vector<std::string> groups, tags;
  bool disabled = false;
  bool ephemeral = false;
  int64_t ephemeral_timeout = 0;
  int64_t setup_key_id = 0;
  int64_t created_at = 0;
  std::vector<Candidate> endpoints;
  int64_t endpoints_at = 0;
  // Login peers (mesh-coord login, coord/users.h): the owner's subject and
  // email, the owner's IdP groups at the last login, and when the login
  // expires (0: never). A cut-off peer is in no map, its own included.
  std::string owner, owner_email;
  std::vector<std::string> idp_groups;
  int64_t login_expires_at = 0;
  bool login_expired = false;
  bool owner_disabled = false;
  bool cut_off() const { return disabled || login_expired || owner_disabled; }
  // Why this peer's own requests are refused ("" when they are not).
  std::string refusal() const;

  // Map state (serial and generated_at are persisted).
  uint64_t serial = 0;
  int64_t generated_at = 0;
  uint64_t digest = 0;
  uint64_t version = 0;  // bumped when what others see of this peer changes
  std::vector<uint32_t> src_rules, dst_rules;  // compiled rule indices
  mutable std::atomic<int64_t> last_seen{0};
  // This peer's entry in other peers' maps, and its addresses as firewall
  // sources, pre-rendered as JSON text (see map_json).
  std::string entry_text, sources_text;
  bool text_ok = false;

  PeerAttrs attrs() const;
  Json to_json() const;  // admin view
  // Persisted form (no derived state).
  Json to_record() const;
  static Result<std::unique_ptr<Peer>> from_record(const Json& j);
};

// What changed: the new serial (0 when no map changed) and whose maps.
struct Changes {
  uint64_t serial = 0;
  std::vector<uint32_t> changed;
};

// Access granted between two peers, for `policy plan`.
struct AccessEntry {
  std::string src, dst, service;  // service: "tcp/22", "udp/1000-2000", "icmp", "other"
  auto operator<=>(const AccessEntry&) const = default;
};

class Model {
 public:
  explicit Model(ModelConfig cfg) : cfg_(std::move(cfg)) {}

  const ModelConfig& config() const { return cfg_; }
  // Maps are built with it from now on; their serials move with the caller
  // (reissue_all, or a replicated change's serials).
  void set_dns_domain(std::string d) { cfg_.dns_domain = std::move(d); }

  // --- loading (no recompute until rebuild)
  void load_peer(std::unique_ptr<Peer> p);
  void load_policy(Policy p) { policy_ = std::move(p); }
  void set_serial_counter(uint64_t s) { serial_counter_ = s; }
  void set_next_host(uint32_t n) { next_host_ = n; }
  void set_next_id(uint32_t n) { next_id_ = std::max(next_id_, n); }
  void set_cred_window(int64_t w) { cred_window_ = w; }
  int64_t cred_window() const { return cred_window_; }
  // Compiles the policy and computes every digest; keeps loaded serials.
  void rebuild(int64_t now);

  // --- queries
  Peer* by_id(uint32_t id);
  const Peer* by_id(uint32_t id) const;
  Peer* by_key(const PublicKey& k);
  Peer* by_name(const std::string& n);
  // Name, public key (base64) or numeric id.
  Peer* find(const std::string& ref);
  std::vector<const Peer*> peers() const;  // by id
  size_t peer_count() const { return by_key_.size(); }
  const Policy& policy() const { return policy_; }
  uint64_t serial_counter() const { return serial_counter_; }
  uint32_t next_host() const { return next_host_; }
  int64_t credential_window(int64_t now) const;
  // The EXPIRY of the TURN credentials handed out in the current window (the
  // latest any peer holds).
  int64_t credential_expiry() const;

  // Ids of peers in `id`'s map (sorted).
  std::vector<uint32_t> visible(uint32_t id) const;
  NetMap build_map(const Peer& p, bool lists = true) const;
  // The map's JSON text, byte-for-byte netmap_json_text(build_map(p)), made
  // from per-peer and per-rule pieces rendered when they change, so that
  // serving 1,000 maps after one change does not re-render every entry.
  std::string map_json(const Peer& p) const { return map_text(p, nullptr, nullptr).text; }
  // The same, or with `base` (the peers of a map of p's the watcher holds)
  // the delta from it (mesh-netmap(5), Deltas). `sent`, when given, receives
  // this map's peers: the base of the next delta.
  struct MapText {
    std::string text;
    bool delta = false;
  };
  MapText map_text(const Peer& p, const SentPeers* base, SentPeers* sent) const;
  // The text of p's firewall.inbound rules (inside the brackets), appended
  // to `out`; false when a rule needs the slow path (netmap_json_text).
  bool inbound_text(const Peer& p, std::string& out) const;

  // --- allocation (pure: nothing is reserved until add_peer)
  Result<uint32_t> allocate_host() const;
  uint16_t pick_listen_port(uint32_t seed) const;
  IpAddr host_v4(uint32_t index) const;
  IpAddr host_v6(uint32_t index) const;
  uint32_t new_peer_id() const { return next_id_; }

  // --- mutations, each recomputing only the maps they affect
  // While a DeferDigests lives, mutations return no Changes and leave the
  // digests of the maps they affect to the next mutation made without one,
  // which computes them first. For a replica applying another replica's
  // change: it adopts that writer's serials, so it needs no digest then,
  // and a change reaching 100,000 maps costs it none on the push's path.
  class DeferDigests {
   public:
    explicit DeferDigests(Model& m) : m_(m) { ++m_.defer_; }
    ~DeferDigests() { --m_.defer_; }
    DeferDigests(const DeferDigests&) = delete;
    DeferDigests& operator=(const DeferDigests&) = delete;

   private:
    Model& m_;
  };
  // Maps whose digest waits for the next mutation (ids, maybe repeated).
  size_t stale_digests() const { return stale_.size(); }
  Changes add_peer(std::unique_ptr<Peer> p, int64_t now);
  Changes remove_peer(uint32_t id, int64_t now);
  // `membership`: the change can move the peer in or out of rules (name,
  // groups, tags, enabled); otherwise only its neighbours' view of it changes.
  template <typename F>
  Changes update_peer(uint32_t id, bool membership, int64_t now, F&& mutate) {
    settle();
    Peer* p = by_id(id);
    if (!p) return {};
    std::vector<uint32_t> before = neighbours(*p);
    if (membership) unindex_rules(*p);
    mutate(*p);
    p->version = versions_[id] = ++version_counter_;
    render(*p);
    if (membership) index_rules(*p);
    std::vector<uint32_t> after = neighbours(*p);
    before.insert(before.end(), after.begin(), after.end());
    before.push_back(id);
    return recompute(before, now);
  }
  Changes rename_peer(uint32_t id, const std::string& name, int64_t now);
  // A new WireGuard key for the peer (key rotation); everything else stays.
  // The caller checks that no other peer holds `key`.
  Changes rekey_peer(uint32_t id, const PublicKey& key, int64_t now);
  Changes set_policy(Policy p, int64_t now);
  Changes tick_credentials(int64_t now);
  // A new serial for every peer's map: their content changed in a way the
  // digests do not see (a setting such as the DNS domain changed across a
  // restart).
  Changes reissue_all(int64_t now);

  // Policy evaluation helpers.
  Result<PeerAttrs> resolve_test_party(const std::string& who) const;
  Status run_tests(const Policy& p) const;
  struct Plan {
    std::vector<AccessEntry> gained, lost;
  };
  // Access that replacing the current policy by `next` would add and remove,
  // per (source peer, destination peer, service), over the current peers.
  Plan plan(const Policy& next) const;

  // --- routes (coord/routes.h; defined in routes.cpp)
  // Routes defined by `mesh-coord route` (the policy's own are in policy()).
  const std::map<std::string, Route>& admin_routes() const { return routes_; }
  void load_routes(std::map<std::string, Route> r) { routes_ = std::move(r); }
  Changes set_routes(std::map<std::string, Route> r, int64_t now);
  // Every route, admin and policy-defined, by name.
  std::vector<const Route*> all_routes() const;
  const Route* find_route(const std::string& name) const;
  // Live routing peers of a route and the peers allowed to use it (names).
  std::vector<std::pair<std::string, int>> route_routers(const std::string& name) const;
  std::vector<std::string> route_clients(const std::string& name) const;
  // For policy tests and `policy check` with "route:NAME" as destination.
  Verdict evaluate_route(const Policy& p, const PeerAttrs& from, const Route& r,
                         const Service& s) const;

  // Time of the last full recompute and its duration (metrics).
  struct Stats {
    uint64_t map_computations = 0;
    double last_full_recompute_ms = 0;
    double last_incremental_ms = 0;
    uint64_t full_recomputes = 0;
    uint64_t incremental_recomputes = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  struct CompiledRule {
    std::vector<uint32_t> src, dst;  // sorted peer ids
    uint64_t src_hash = 0;           // XOR of mix(id) over src
    uint64_t content_hash = 0;       // name, proto, ports, index
    std::string head_text;           // JSON of the firewall rule up to "sources":[
    bool text_ok = false;
  };
  void render(Peer& p) const;
  void compile();
  void index_rules(Peer& p);
  void unindex_rules(Peer& p);
  std::vector<uint32_t> neighbours(const Peer& p) const;
  // Marks for set unions without allocation, one set per thread.
  struct Stamps {
    std::vector<uint32_t> mark;  // per id
    uint32_t gen = 0;
  };
  uint64_t compute_digest(const Peer& p, Stamps& st) const;
  // The digests of `ids` (0 for an id no longer there), on several cores
  // when there are many.
  std::vector<uint64_t> digests(const std::vector<uint32_t>& ids) const;
  // Rule r as a firewall rule of `self`'s map: its sources (both addresses
  // of each, `self` left out), proto, ports and name. No sources: none.
  std::optional<FirewallRule> rule_firewall(uint32_t r, uint32_t self) const;
  Changes recompute(std::vector<uint32_t> ids, int64_t now);
  Changes recompute_all(int64_t now);
  // Computes the digests deferred (DeferDigests) over the content they
  // stand for: every mutation outside a DeferDigests calls it before it
  // changes anything, or a change it makes could go unseen.
  void settle();
  // Routes (routes.cpp): compiled from routes_, the policy's routes and its
  // rules; routers follow peers' membership changes through index_routes.
  void compile_routes();
  void index_routes(const Peer& p);
  void unindex_routes(const Peer& p);
  void route_hash(CompiledRoute& c) const;
  bool uses_route(const Peer& p, const CompiledRoute& c, std::vector<uint8_t>* nets) const;
  void route_neighbours(const Peer& p, std::vector<uint32_t>& out) const;
  uint64_t route_digest(const Peer& p, std::vector<uint32_t>& linked) const;
  void router_map(const Peer& p, NetMap& m) const;
  // Per routing peer (sorted by id), the routes `p` may use through it.
  std::vector<std::pair<uint32_t, std::vector<PeerRoute>>> client_routes(const Peer& p) const;

  ModelConfig cfg_;
  Policy policy_;
  std::vector<std::unique_ptr<Peer>> by_id_;  // index = id
  // Each peer's version by id, dense: a digest reads ~250 of them, and
  // chasing each Peer object instead missed the cache every time.
  std::vector<uint64_t> versions_;
  std::unordered_map<std::string, uint32_t> by_name_;
  std::map<PublicKey, uint32_t> by_key_;
  std::vector<CompiledRule> rules_;
  std::map<std::string, Route> routes_;  // admin-defined
  std::vector<CompiledRoute> croutes_;   // every route, by name
  uint64_t serial_counter_ = 0;
  uint64_t version_counter_ = 0;
  uint32_t next_host_ = 1;
  uint32_t next_id_ = 1;
  int64_t cred_window_ = -1;
  std::set<uint32_t> used_hosts_;
  std::set<uint16_t> used_ports_;
  mutable Stamps stamps_;  // the calling thread's
  int defer_ = 0;               // live DeferDigests
  std::vector<uint32_t> stale_;  // deferred digests (settle)
  Stats stats_;
};

// coturn REST API credentials (username "EXPIRY:NAME", password
// base64(HMAC-SHA1(secret, username))).
std::string turn_password(const std::string& secret, const std::string& username);

}  // namespace mesh::coord
