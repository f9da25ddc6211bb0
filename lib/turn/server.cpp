#include "turn/server.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace mesh::turn {

using stun::Builder;
using stun::Bytes;
using stun::MessageView;

std::vector<Prefix> default_denied_peers() {
  static const char* const kRanges[] = {
      "0.0.0.0/8",       "10.0.0.0/8",      "100.64.0.0/10",  "127.0.0.0/8",
      "169.254.0.0/16",  "172.16.0.0/12",   "192.0.0.0/24",   "192.0.2.0/24",
      "192.88.99.0/24",  "192.168.0.0/16",  "198.18.0.0/15",   "198.51.100.0/24", "203.0.113.0/24",
      "224.0.0.0/4",     "240.0.0.0/4",     "::/128",         "::1/128",
      "::ffff:0:0/96",   "64:ff9b::/96",    "64:ff9b:1::/48",  "100::/64",
      "2002::/16",       "2001:db8::/32",
      "fc00::/7",        "fe80::/10",       "ff00::/8",
  };
  std::vector<Prefix> out;
  for (const char* r : kRanges) out.push_back(*Prefix::parse(r));
  return out;
}

size_t ClientKeyHash::operator()(const ClientKey& k) const noexcept {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  const uint8_t* b = k.addr.ip.bytes.data();
  uint64_t lo = 0, hi = 0;
  std::memcpy(&lo, b, 8);
  std::memcpy(&hi, b + 8, 8);
  mix(lo);
  mix(hi);
  mix(uint64_t{k.addr.port} << 32 | uint64_t{k.conn} << 8 | k.transport);
  return static_cast<size_t>(h ^ (h >> 29));
}

std::array<uint8_t, 19> nonce_binding(const ClientKey& k) {
  std::array<uint8_t, 19> out{};
  std::memcpy(out.data(), k.addr.ip.bytes.data(), 16);
  out[16] = static_cast<uint8_t>(k.addr.port >> 8);
  out[17] = static_cast<uint8_t>(k.addr.port);
  out[18] = k.transport;
  return out;
}

// ---- Shared -------------------------------------------------------------------

Shared::Shared(Config cfg, std::unique_ptr<Credentials> creds)
    : cfg_(std::move(cfg)), creds_(std::move(creds)) {}

std::shared_ptr<const Credentials> Shared::credentials() const {
  std::lock_guard lk(mu_);
  return creds_;
}

void Shared::set_credentials(std::unique_ptr<Credentials> c) {
  std::shared_ptr<const Credentials> n(std::move(c));
  std::lock_guard lk(mu_);
  creds_.swap(n);
}

bool Shared::is_self(const IpAddr& ip) const {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (!ip.is_v4() && std::memcmp(ip.bytes.data(), kMapped, 12) == 0) {
    IpAddr v4{AF_INET, {}};
    std::memcpy(v4.bytes.data(), ip.bytes.data() + 12, 4);
    return is_self(v4);  // ::ffff:a.b.c.d reaches a.b.c.d
  }
  if (ip.is_loopback() || ip == IpAddr{ip.family, {}}) return true;
  for (const auto& r : cfg_.relay_ips)
    if (r == ip) return true;
  for (const auto& r : cfg_.self_ips)
    if (r == ip) return true;
  return false;
}

void Shared::add_relayed(const SockAddr& a) {
  std::lock_guard lk(mu_);
  relayed_.insert({a.ip, a.port});
}

void Shared::remove_relayed(const SockAddr& a) {
  std::lock_guard lk(mu_);
  relayed_.erase({a.ip, a.port});
}

bool Shared::peer_allowed(const SockAddr& peer) const {
  const IpAddr& ip = peer.ip;
  // The host's own addresses come first: --allow-peer must not open its
  // services (a relay on 127.0.0.1 in the tests, or a public address).
  if (cfg_.allow_loopback && ip.is_loopback()) return true;
  if (is_self(ip)) {
    if (!cfg_.self_relay) return false;
    if (peer.port == 0) return true;
    std::lock_guard lk(mu_);
    return relayed_.count({ip, peer.port}) > 0;
  }
  for (const auto& p : cfg_.allow_peers)
    if (p.contains(ip)) return true;
  for (const auto& p : cfg_.deny_peers)
    if (p.contains(ip)) return false;
  return true;
}

void Shared::revoke(const std::vector<std::pair<std::string, int64_t>>& entries, bool full,
                    int64_t now) {
  if (!full && entries.empty()) return;  // an empty long-poll answer: nothing new
  std::lock_guard lk(mu_);
  if (full) revoked_.clear();
  for (const auto& [subject, until] : entries) {
    int64_t& u = revoked_[subject];
    u = std::max(u, until);
  }
  std::erase_if(revoked_, [now](const auto& kv) { return kv.second < now; });
  rev_gen_.fetch_add(1, std::memory_order_release);
}

bool Shared::revoked(std::string_view subject, int64_t now) const {
  std::lock_guard lk(mu_);
  if (revoked_.empty()) return false;
  auto it = revoked_.find(std::string(subject));
  return it != revoked_.end() && it->second >= now;
}

Shared::Admit Shared::admit(const std::string& name) {
  std::lock_guard lk(mu_);
  if (cfg_.max_allocations && total_ >= cfg_.max_allocations) return Admit::TotalQuota;
  size_t& n = per_user_[name];
  if (cfg_.user_quota && n >= cfg_.user_quota) {
    if (n == 0) per_user_.erase(name);
    return Admit::UserQuota;
  }
  ++n;
  ++total_;
  return Admit::Ok;
}

void Shared::release(const std::string& name) {
  std::lock_guard lk(mu_);
  auto it = per_user_.find(name);
  if (it != per_user_.end() && --it->second == 0) per_user_.erase(it);
  if (total_) --total_;
}

size_t Shared::total_allocations() const {
  std::lock_guard lk(mu_);
  return total_;
}

// ---- Engine -------------------------------------------------------------------

struct Engine::Auth {
  std::string username;
  std::string quota_name;
  bool rest = false;
  LongTermKey key{};
  bool ok = false;
};

Engine::Engine(Shared& shared, Io& io, Stats& stats) : shared_(shared), io_(io), stats_(stats) {}

Engine::~Engine() { clear(); }

Allocation* Engine::find(const ClientKey& k) {
  auto it = allocs_.find(k);
  return it == allocs_.end() ? nullptr : it->second.get();
}

Allocation* Engine::find_relayed(const SockAddr& relayed) {
  if (by_relayed_.empty()) return nullptr;
  auto it = by_relayed_.find(ClientKey{relayed, 0, kUdp});
  return it == by_relayed_.end() ? nullptr : it->second;
}

void Engine::on_message(const ClientKey& from, Bytes pkt, Now now) {
  auto r = stun::parse(pkt);
  if (!r) {
    if (!classic_binding(from, pkt)) stats_.dropped_other.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const MessageView& m = *r;
  if (m.cls == stun::kRequest) {
    stats_.requests.fetch_add(1, std::memory_order_relaxed);
    handle_request(from, m, now);
  } else if (m.cls == stun::kIndication && m.method == stun::kSend) {
    handle_send(from, m, now);
  } else {
    // Responses and other indications are not for a server; ignore them
    // (RFC 8489 section 6.3: unknown indications are discarded silently).
    stats_.dropped_other.fetch_add(1, std::memory_order_relaxed);
  }
}

namespace {

// Comprehension-required attributes (0x0000-0x7FFF) we understand in
// requests; others trigger 420 (RFC 8489 section 7.3.1).
bool known_attr(uint16_t t) {
  switch (t) {
    case stun::kMappedAddress: case stun::kChangeRequest: case stun::kUsername:
    case stun::kMessageIntegrity: case stun::kErrorCode: case stun::kUnknownAttributes:
    case stun::kChannelNumber: case stun::kLifetime: case stun::kXorPeerAddress:
    case stun::kData_: case stun::kRealm: case stun::kNonce: case stun::kXorRelayedAddress:
    case stun::kRequestedAddressFamily: case stun::kEvenPort: case stun::kRequestedTransport:
    case stun::kDontFragment: case stun::kMessageIntegritySha256: case stun::kPasswordAlgorithm:
    case stun::kUserhash: case stun::kXorMappedAddress: case stun::kReservationToken:
    case stun::kPriority: case stun::kUseCandidate: case stun::kPadding: case stun::kResponsePort:
      return true;
    default:
      return t >= 0x8000;
  }
}

// EXPIRY of a REST username "EXPIRY[:NAME]" (0 when it is not one).
int64_t rest_expiry(std::string_view username) {
  int64_t expiry = 0;
  std::string_view name;
  return parse_rest_username(username, &expiry, &name) ? expiry : 0;
}

uint32_t clamp_lifetime(const MessageView& m, const Config& c) {
  uint32_t lt = c.default_lifetime;
  if (const auto* a = m.find(stun::kLifetime)) {
    if (auto v = stun::decode_u32(*a)) {
      lt = *v;
      if (lt != 0 && lt < c.default_lifetime) lt = c.default_lifetime;
    }
  }
  return std::min(lt, c.max_lifetime);
}

}  // namespace

void Engine::handle_request(const ClientKey& from, const MessageView& m, Now now) {
  uint16_t unknown[16];
  size_t nunknown = 0;
  for (const auto& a : m.attributes())
    if (!known_attr(a.type) && nunknown < 16) unknown[nunknown++] = a.type;
  if (nunknown) {
    Builder b(out_, m.method, stun::kError, m.tx);
    b.add_error(420, "Unknown Attribute");
    uint8_t ua[32];
    for (size_t i = 0; i < nunknown; ++i) {
      ua[2 * i] = static_cast<uint8_t>(unknown[i] >> 8);
      ua[2 * i + 1] = static_cast<uint8_t>(unknown[i]);
    }
    b.add(stun::kUnknownAttributes, Bytes(ua, 2 * nunknown));
    finish_unauthenticated(b, m);
    io_.reply(from, b.finish(), 0);
    return;
  }
  if (m.method == stun::kBinding) return binding(from, m);
  if (m.method != stun::kAllocate && m.method != stun::kRefresh &&
      m.method != stun::kCreatePermission && m.method != stun::kChannelBind) {
    send_error(from, m, 400, "Bad Request", nullptr, now);
    return;
  }
  Auth auth;
  if (!authenticate(from, m, now, &auth)) return;
  if (m.method == stun::kAllocate) return allocate(from, m, now, auth);
  Allocation* a = find(from);
  if (!a) {
    send_error(from, m, 437, "Allocation Mismatch", &auth, now);
    return;
  }
  if (a->username != auth.username) {
    if (a->rest && auth.rest && a->quota_name == auth.quota_name &&
        rest_expiry(auth.username) > rest_expiry(a->username)) {
      // The same REST subject with a newer credential: mesh-coord re-mints
      // them every half lifetime, and the allocation follows its user rather
      // than end (a new relayed address every half hour).
      a->username = auth.username;
      a->key = auth.key;
    } else {
      // RFC 8656 section 5: the same credentials as the Allocate.
      send_error(from, m, 441, "Wrong Credentials", &auth, now);
      return;
    }
  }
  switch (m.method) {
    case stun::kRefresh: return refresh(*a, m, now, auth);
    case stun::kCreatePermission: return create_permission(*a, m, now, auth);
    case stun::kChannelBind: return channel_bind(*a, m, now, auth);
  }
}

void Engine::binding(const ClientKey& from, const MessageView& m) {
  stats_.bindings.fetch_add(1, std::memory_order_relaxed);
  uint32_t change = 0;
  if (const auto* cr = m.find(stun::kChangeRequest)) {
    auto v = stun::decode_u32(*cr);
    if (!v) {
      send_error(from, m, 400, "Bad Request", nullptr, {});
      return;
    }
    change = *v & (stun::kChangeIp | stun::kChangePort);
  }
  Io::Origin origin;
  if (!io_.origin(from, change, &origin)) {
    // RFC 5780 section 6.1: no alternate address -> 420.
    Builder b(out_, m.method, stun::kError, m.tx);
    b.add_error(420, "Unknown Attribute (no alternate address)");
    uint8_t ua[2] = {0x00, 0x03};
    b.add(stun::kUnknownAttributes, Bytes(ua, 2));
    finish_unauthenticated(b, m);
    io_.reply(from, b.finish(), 0);
    return;
  }
  Builder b(out_, stun::kBinding, stun::kSuccess, m.tx);
  b.add_xor_address(stun::kXorMappedAddress, from.addr);
  if (origin.response_origin) b.add_address(stun::kResponseOrigin, *origin.response_origin);
  if (origin.other_address) b.add_address(stun::kOtherAddress, *origin.other_address);
  finish_unauthenticated(b, m);
  io_.reply(from, b.finish(), change);
}

// RFC 3489 clients (the `stun` client of Debian's stun-client package) send
// a 16-byte transaction id where RFC 8489 has the magic cookie, and read
// MAPPED-ADDRESS; RFC 8489 section 12 asks servers to answer them so. With
// an RFC 5780 grid, CHANGE-REQUEST is honoured and SOURCE-ADDRESS and
// CHANGED-ADDRESS tell where from and where else; a change we cannot make
// gets no answer (RFC 3489 has no error for it: the client reads silence).
bool Engine::classic_binding(const ClientKey& from, Bytes pkt) {
  if (pkt.size() < stun::kHeaderSize || pkt[0] != 0x00 || pkt[1] != 0x01) return false;
  size_t len = static_cast<size_t>(pkt[2] << 8 | pkt[3]);
  if (len % 4 != 0 || len + stun::kHeaderSize != pkt.size()) return false;
  uint32_t change = 0;
  for (size_t off = stun::kHeaderSize; off + 4 <= pkt.size();) {
    uint16_t type = static_cast<uint16_t>(pkt[off] << 8 | pkt[off + 1]);
    size_t alen = static_cast<size_t>(pkt[off + 2] << 8 | pkt[off + 3]);
    if (off + 4 + alen > pkt.size()) return false;
    if (type == stun::kChangeRequest && alen == 4) change = pkt[off + 7] & (stun::kChangeIp | stun::kChangePort);
    off += 4 + ((alen + 3) & ~size_t{3});
  }
  stats_.bindings.fetch_add(1, std::memory_order_relaxed);
  Io::Origin origin;
  if (!io_.origin(from, change, &origin)) return true;
  stun::TxId tx;
  std::memcpy(tx.data(), pkt.data() + 8, tx.size());
  Builder b(out_, stun::kBinding, stun::kSuccess, tx);
  b.add_address(stun::kMappedAddress, from.addr);
  if (origin.response_origin) b.add_address(0x0004, *origin.response_origin);  // SOURCE-ADDRESS
  if (origin.other_address) b.add_address(0x0005, *origin.other_address);      // CHANGED-ADDRESS
  Bytes out = b.finish();
  std::memcpy(out_.data() + 4, pkt.data() + 4, 4);  // the id's first 4 bytes, not the cookie
  io_.reply(from, out, change);
  return true;
}

bool Engine::authenticate(const ClientKey& from, const MessageView& m, Now now, Auth* out) {
  auto creds = shared_.credentials();
  const auto* mi = m.integrity_offset ? &m : nullptr;
  const auto* user = m.find(stun::kUsername);
  const auto* realm = m.find(stun::kRealm);
  const auto* nonce = m.find(stun::kNonce);
  if (!mi) {
    send_error(from, m, 401, "Unauthorized", nullptr, now, true);
    return false;
  }
  if (!user || !realm || !nonce) {
    send_error(from, m, 400, "Bad Request", nullptr, now);
    return false;
  }
  auto bound = nonce_binding(from);
  if (shared_.nonces().check(stun::as_string(*nonce), now.unix_s, bound) != NonceMint::Check::Valid) {
    send_error(from, m, 438, "Stale Nonce", nullptr, now, true);
    return false;
  }
  std::string_view uname = stun::as_string(*user);
  if (stun::as_string(*realm) != creds->realm() ||
      creds->keys_for(uname, now.unix_s, &keys_, &out->quota_name) != Credentials::Lookup::Ok) {
    stats_.auth_failures.fetch_add(1, std::memory_order_relaxed);
    send_error(from, m, 401, "Unauthorized", nullptr, now, true);
    return false;
  }
  out->rest = !creds->has_user(uname);
  if (out->rest && shared_.revoked(out->quota_name, now.unix_s)) {
    // A deleted peer's credential (mesh-coord publishes them): as unknown.
    stats_.auth_failures.fetch_add(1, std::memory_order_relaxed);
    send_error(from, m, 401, "Unauthorized", nullptr, now, true);
    return false;
  }
  for (const auto& k : keys_) {
    if (stun::check_integrity(m, k)) {
      out->key = k;
      out->username.assign(uname);
      out->ok = true;
      return true;
    }
  }
  stats_.auth_failures.fetch_add(1, std::memory_order_relaxed);
  send_error(from, m, 401, "Unauthorized", nullptr, now, true);
  return false;
}

void Engine::send_error(const ClientKey& to, const MessageView& m, int code,
                        std::string_view reason, const Auth* auth, Now now, bool with_nonce) {
  Builder b(out_, m.method, stun::kError, m.tx);
  b.add_error(code, reason);
  if (with_nonce) {
    auto creds = shared_.credentials();
    b.add_string(stun::kRealm, creds->realm());
    b.add_string(stun::kNonce, shared_.nonces().make(now.unix_s, shared_.config().nonce_lifetime,
                                                     nonce_binding(to)));
  }
  if (auth && auth->ok) {
    b.add_string(stun::kSoftware, shared_.config().software);
    b.add_integrity(auth->key).add_fingerprint();
  } else {
    finish_unauthenticated(b, m);
  }
  io_.reply(to, b.finish(), 0);
}

void Engine::finish_unauthenticated(Builder& b, const MessageView& m) {
  if (m.fingerprint_offset) b.add_fingerprint();
}

void Engine::send_success(const ClientKey& to, Builder& b, const Auth& auth) {
  b.add_string(stun::kSoftware, shared_.config().software);
  b.add_integrity(auth.key).add_fingerprint();
  io_.reply(to, b.finish(), 0);
}

void Engine::allocate(const ClientKey& from, const MessageView& m, Now now, const Auth& auth) {
  const Config& cfg = shared_.config();
  if (Allocation* a = find(from)) {
    if (a->alloc_tx == m.tx && a->username == auth.username) {
      // A retransmission: answer as before (RFC 8656 section 7.2).
      Builder b(out_, stun::kAllocate, stun::kSuccess, m.tx);
      b.add_xor_address(stun::kXorRelayedAddress, a->relay.addr);
      b.add_u32(stun::kLifetime, static_cast<uint32_t>(std::max<int64_t>(0, (a->expires_ms - now.mono_ms) / 1000)));
      b.add_xor_address(stun::kXorMappedAddress, from.addr);
      send_success(from, b, auth);
    } else {
      send_error(from, m, 437, "Allocation Mismatch", &auth, now);
    }
    return;
  }
  const auto* rt = m.find(stun::kRequestedTransport);
  if (!rt || rt->value.size() != 4) {
    send_error(from, m, 400, "Bad Request: REQUESTED-TRANSPORT missing", &auth, now);
    return;
  }
  if (rt->value[0] != kUdp) {
    send_error(from, m, 442, "Unsupported Transport Protocol", &auth, now);
    return;
  }
  const auto* even = m.find(stun::kEvenPort);
  if (m.find(stun::kReservationToken)) {
    if (even) {
      send_error(from, m, 400, "Bad Request: EVEN-PORT with RESERVATION-TOKEN", &auth, now);
    } else {
      // We keep no reservations: a token can only be unknown.
      send_error(from, m, 508, "Insufficient Capacity: unknown reservation", &auth, now);
    }
    return;
  }
  int family = AF_INET;
  if (const auto* raf = m.find(stun::kRequestedAddressFamily)) {
    if (raf->value.size() != 4 || (raf->value[0] != 0x01 && raf->value[0] != 0x02)) {
      send_error(from, m, 440, "Address Family not Supported", &auth, now);
      return;
    }
    family = raf->value[0] == 0x02 ? AF_INET6 : AF_INET;
  }
  bool have_family = false;
  for (const auto& ip : cfg.relay_ips) have_family |= ip.family == family;
  if (!have_family) {
    send_error(from, m, 440, "Address Family not Supported", &auth, now);
    return;
  }
  uint32_t lifetime = clamp_lifetime(m, cfg);
  if (lifetime == 0) lifetime = cfg.default_lifetime;
  switch (shared_.admit(auth.quota_name)) {
    case Shared::Admit::Ok: break;
    case Shared::Admit::UserQuota:
    case Shared::Admit::TotalQuota:
      stats_.quota_rejections.fetch_add(1, std::memory_order_relaxed);
      send_error(from, m, 486, "Allocation Quota Reached", &auth, now);
      return;
  }
  auto a = std::make_unique<Allocation>();
  a->client = from;
  a->username = auth.username;
  a->quota_name = auth.quota_name;
  a->rest = auth.rest;
  a->key = auth.key;
  a->alloc_tx = m.tx;
  a->created_ms = now.mono_ms;
  a->lifetime_s = lifetime;
  a->expires_ms = now.mono_ms + int64_t{lifetime} * 1000;
  a->tokens = static_cast<double>(cfg.max_bps);
  a->tokens_ms = now.mono_ms;
  bool even_port = even && !even->value.empty();
  auto sock = io_.open_relay(family, even_port, a.get());
  if (!sock) {
    shared_.release(auth.quota_name);
    send_error(from, m, 508, "Insufficient Capacity", &auth, now);
    return;
  }
  a->relay = *sock;
  Builder b(out_, stun::kAllocate, stun::kSuccess, m.tx);
  b.add_xor_address(stun::kXorRelayedAddress, a->relay.addr);
  b.add_u32(stun::kLifetime, lifetime);
  b.add_xor_address(stun::kXorMappedAddress, from.addr);
  by_relayed_[ClientKey{a->relay.addr, 0, kUdp}] = a.get();
  shared_.add_relayed(a->relay.addr);
  allocs_.emplace(from, std::move(a));
  last_alloc_ = nullptr;
  stats_.allocations_created.fetch_add(1, std::memory_order_relaxed);
  stats_.allocations.fetch_add(1, std::memory_order_relaxed);
  send_success(from, b, auth);
}

void Engine::refresh(Allocation& a, const MessageView& m, Now now, const Auth& auth) {
  if (const auto* raf = m.find(stun::kRequestedAddressFamily)) {
    int fam = raf->value.size() == 4 && raf->value[0] == 0x02 ? AF_INET6 : AF_INET;
    if (fam != a.relay.addr.ip.family) {
      send_error(a.client, m, 443, "Peer Address Family Mismatch", &auth, now);
      return;
    }
  }
  uint32_t lifetime = clamp_lifetime(m, shared_.config());
  ClientKey key = a.client;
  Builder b(out_, stun::kRefresh, stun::kSuccess, m.tx);
  b.add_u32(stun::kLifetime, lifetime);
  if (lifetime == 0) {
    remove(key, false);
  } else {
    a.lifetime_s = lifetime;
    a.expires_ms = now.mono_ms + int64_t{lifetime} * 1000;
  }
  send_success(key, b, auth);
}

void Engine::add_permission(Allocation& a, const IpAddr& ip, int64_t now_ms) {
  int64_t exp = now_ms + int64_t{shared_.config().permission_lifetime} * 1000;
  for (auto& p : a.perms) {
    if (p.ip == ip) {
      p.expires_ms = exp;
      return;
    }
  }
  a.perms.push_back({ip, exp});
  stats_.permissions.fetch_add(1, std::memory_order_relaxed);
}

void Engine::create_permission(Allocation& a, const MessageView& m, Now now, const Auth& auth) {
  IpAddr ips[stun::kMaxAttributes];
  size_t n = 0;
  for (const auto& at : m.attributes()) {
    if (at.type != stun::kXorPeerAddress) continue;
    auto sa = stun::decode_xor_address(at, m.tx);
    if (!sa) {
      send_error(a.client, m, 400, "Bad Request: XOR-PEER-ADDRESS", &auth, now);
      return;
    }
    if (sa->ip.family != a.relay.addr.ip.family) {
      send_error(a.client, m, 443, "Peer Address Family Mismatch", &auth, now);
      return;
    }
    if (!shared_.peer_allowed(*sa)) {
      stats_.forbidden_peers.fetch_add(1, std::memory_order_relaxed);
      send_error(a.client, m, 403, "Forbidden", &auth, now);
      return;
    }
    ips[n++] = sa->ip;
  }
  if (n == 0) {
    send_error(a.client, m, 400, "Bad Request: no XOR-PEER-ADDRESS", &auth, now);
    return;
  }
  size_t fresh = 0;
  for (size_t i = 0; i < n; ++i) fresh += !a.permitted(ips[i], INT64_MIN);
  if (a.perms.size() + fresh > shared_.config().max_permissions) {
    send_error(a.client, m, 508, "Insufficient Capacity: too many permissions", &auth, now);
    return;
  }
  for (size_t i = 0; i < n; ++i) add_permission(a, ips[i], now.mono_ms);
  Builder b(out_, stun::kCreatePermission, stun::kSuccess, m.tx);
  send_success(a.client, b, auth);
}

void Engine::channel_bind(Allocation& a, const MessageView& m, Now now, const Auth& auth) {
  const auto* cn = m.find(stun::kChannelNumber);
  const auto* pa = m.find(stun::kXorPeerAddress);
  if (!cn || !pa || cn->value.size() != 4) {
    send_error(a.client, m, 400, "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS required",
               &auth, now);
    return;
  }
  uint16_t num = static_cast<uint16_t>(cn->value[0] << 8 | cn->value[1]);
  if (num < kChannelMin || num > kChannelMax) {
    send_error(a.client, m, 400, "Bad Request: channel number out of range", &auth, now);
    return;
  }
  auto peer = stun::decode_xor_address(*pa, m.tx);
  if (!peer) {
    send_error(a.client, m, 400, "Bad Request: XOR-PEER-ADDRESS", &auth, now);
    return;
  }
  if (peer->ip.family != a.relay.addr.ip.family) {
    send_error(a.client, m, 443, "Peer Address Family Mismatch", &auth, now);
    return;
  }
  if (!shared_.peer_allowed(*peer) || (peer->port == 0 && shared_.is_self(peer->ip))) {
    stats_.forbidden_peers.fetch_add(1, std::memory_order_relaxed);
    send_error(a.client, m, 403, "Forbidden", &auth, now);
    return;
  }
  const Allocation::Channel* by_num = a.channel(num);
  const Allocation::Channel* by_peer = a.channel_for(*peer);
  if ((by_num && by_num->peer != *peer) || (by_peer && by_peer->number != num)) {
    send_error(a.client, m, 400, "Bad Request: channel or peer already bound", &auth, now);
    return;
  }
  if (!a.permitted(peer->ip, INT64_MIN) && a.perms.size() >= shared_.config().max_permissions) {
    send_error(a.client, m, 508, "Insufficient Capacity: too many permissions", &auth, now);
    return;
  }
  int64_t exp = now.mono_ms + int64_t{shared_.config().channel_lifetime} * 1000;
  if (by_num) {
    a.channels[a.channel_index[num - kChannelMin] - 1].expires_ms = exp;
  } else {
    a.channels.push_back({num, *peer, exp});
    a.channel_index[num - kChannelMin] = static_cast<uint16_t>(a.channels.size());
    stats_.channels.fetch_add(1, std::memory_order_relaxed);
  }
  add_permission(a, peer->ip, now.mono_ms);
  Builder b(out_, stun::kChannelBind, stun::kSuccess, m.tx);
  send_success(a.client, b, auth);
}

void Engine::handle_send(const ClientKey& from, const MessageView& m, Now now) {
  Allocation* a = find(from);
  const auto* pa = m.find(stun::kXorPeerAddress);
  const auto* data = m.find(stun::kData_);
  if (!a || !pa || !data) {
    stats_.dropped_other.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  auto peer = stun::decode_xor_address(*pa, m.tx);
  if (!peer || !a->permitted(peer->ip, now.mono_ms)) {
    stats_.dropped_no_permission.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // A permission is per IP: on this host's addresses the port decides too.
  if (!shared_.peer_allowed(*peer) || (peer->port == 0 && shared_.is_self(peer->ip))) {
    stats_.forbidden_peers.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!take_tokens(*a, data->value.size(), now.mono_ms)) {
    stats_.dropped_rate.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  a->packets_out++;
  a->bytes_out += data->value.size();
  stats_.client_to_peer_packets.fetch_add(1, std::memory_order_relaxed);
  stats_.client_to_peer_bytes.fetch_add(data->value.size(), std::memory_order_relaxed);
  if (Allocation* to = find_relayed(*peer)) {
    int ch = hand_over(*a, *to, data->value.size(), now.mono_ms);
    if (ch >= 0) io_.deliver(*to, a->relay.addr, ch, data->value);
    return;
  }
  io_.send_to_peer(a->relay, *peer, data->value);
}

// Both peers relayed through this server: the kernel would carry the
// datagram from `from`'s relay socket to `to`'s, and `to` would see it come
// from `from`'s relayed address. Apply exactly what on_peer_data() applies
// then: `to`'s permission for that address (RFC 8656 section 9: checked,
// with its expiry, at the receiving allocation), its bandwidth quota and
// counters, and its channel for the address if one is bound. The sending
// side's checks (channel or permission, quota) were made by the caller, and
// the peer-address rules (denied ranges, self relay) at CreatePermission and
// ChannelBind on both sides, as for the kernel path.
int Engine::hand_over(Allocation& from, Allocation& to, size_t len, int64_t now_ms) {
  int ch = on_peer_data(to, from.relay.addr, len, now_ms);
  if (ch >= 0) {
    stats_.internal_packets.fetch_add(1, std::memory_order_relaxed);
    stats_.internal_bytes.fetch_add(len, std::memory_order_relaxed);
  }
  return ch;
}

bool Engine::take_tokens(Allocation& a, size_t len, int64_t now_ms) {
  uint64_t rate = shared_.config().max_bps;
  if (!rate) return true;
  if (now_ms > a.tokens_ms) {
    // Burst allowance: one second's worth.
    a.tokens = std::min<double>(static_cast<double>(rate),
                                a.tokens + static_cast<double>(rate) * (now_ms - a.tokens_ms) / 1000.0);
    a.tokens_ms = now_ms;
  }
  if (a.tokens < static_cast<double>(len)) return false;
  a.tokens -= static_cast<double>(len);
  return true;
}

Engine::Route Engine::route_channel(const ClientKey& from, uint16_t channel, size_t len,
                                    int64_t now_ms) {
  Allocation* a;
  if (last_alloc_ && last_key_ == from) {
    a = last_alloc_;
  } else {
    a = find(from);
    if (!a) {
      stats_.dropped_no_channel.fetch_add(1, std::memory_order_relaxed);
      return {};
    }
    last_key_ = from;
    last_alloc_ = a;
  }
  const Allocation::Channel* c = a->channel(channel);
  if (!c || c->expires_ms <= now_ms) {
    stats_.dropped_no_channel.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  if (!take_tokens(*a, len, now_ms)) {
    stats_.dropped_rate.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  a->packets_out++;
  a->bytes_out += len;
  Route r{a, &c->peer};
  if ((r.local = find_relayed(c->peer))) r.local_channel = hand_over(*a, *r.local, len, now_ms);
  return r;
}

int Engine::on_peer_data(Allocation& a, const SockAddr& peer, size_t len, int64_t now_ms) {
  if (!a.permitted(peer.ip, now_ms)) {
    stats_.dropped_no_permission.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  if (!take_tokens(a, len, now_ms)) {
    stats_.dropped_rate.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  a.packets_in++;
  a.bytes_in += len;
  const Allocation::Channel* c = a.channel_for(peer);
  return c && c->expires_ms > now_ms ? c->number : 0;
}

Bytes Engine::build_data_indication(std::span<uint8_t> out, const SockAddr& peer, Bytes data) {
  Builder b(out, stun::kData, stun::kIndication, stun::random_txid());
  b.add_xor_address(stun::kXorPeerAddress, peer).add(stun::kData_, data);
  return b.finish();
}

void Engine::remove(const ClientKey& k, bool expired) {
  auto it = allocs_.find(k);
  if (it == allocs_.end()) return;
  Allocation& a = *it->second;
  by_relayed_.erase(ClientKey{a.relay.addr, 0, kUdp});
  shared_.remove_relayed(a.relay.addr);
  io_.close_relay(a.relay);
  shared_.release(a.quota_name);
  stats_.allocations.fetch_sub(1, std::memory_order_relaxed);
  stats_.permissions.fetch_sub(static_cast<int64_t>(a.perms.size()), std::memory_order_relaxed);
  stats_.channels.fetch_sub(static_cast<int64_t>(a.channels.size()), std::memory_order_relaxed);
  (expired ? stats_.allocations_expired : stats_.allocations_deleted)
      .fetch_add(1, std::memory_order_relaxed);
  graveyard_.push_back(std::move(it->second));
  allocs_.erase(it);
  last_alloc_ = nullptr;
}

void Engine::expire(int64_t now_ms) {
  std::vector<ClientKey> dead;
  for (auto& [k, a] : allocs_) {
    if (a->expires_ms <= now_ms) {
      dead.push_back(k);
      continue;
    }
    size_t before = a->perms.size();
    std::erase_if(a->perms, [&](const Allocation::Permission& p) { return p.expires_ms <= now_ms; });
    stats_.permissions.fetch_sub(static_cast<int64_t>(before - a->perms.size()),
                                 std::memory_order_relaxed);
    before = a->channels.size();
    std::erase_if(a->channels, [&](const Allocation::Channel& c) { return c.expires_ms <= now_ms; });
    if (before != a->channels.size()) {
      stats_.channels.fetch_sub(static_cast<int64_t>(before - a->channels.size()),
                                std::memory_order_relaxed);
      a->channel_index.fill(0);
      for (size_t i = 0; i < a->channels.size(); ++i)
        a->channel_index[a->channels[i].number - kChannelMin] = static_cast<uint16_t>(i + 1);
    }
  }
  for (const auto& k : dead) remove(k, true);
}

void Engine::end_revoked(int64_t unix_s) {
  uint64_t gen = shared_.revocation_generation();
  if (gen == rev_seen_) return;
  rev_seen_ = gen;
  std::vector<ClientKey> dead;
  for (auto& [k, a] : allocs_)
    if (a->rest && shared_.revoked(a->quota_name, unix_s)) dead.push_back(k);
  for (const auto& k : dead) {
    stats_.allocations_revoked.fetch_add(1, std::memory_order_relaxed);
    remove(k, false);
  }
}

void Engine::client_gone(const ClientKey& k) { remove(k, false); }

void Engine::collect() { graveyard_.clear(); }

void Engine::clear() {
  std::vector<ClientKey> all;
  for (auto& [k, a] : allocs_) all.push_back(k);
  for (const auto& k : all) remove(k, false);
  collect();
}

}  // namespace mesh::turn
