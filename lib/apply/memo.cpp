#include "apply/memo.h"

#include <sodium.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <charconv>
#include <cstring>
#include <map>

#include "core/base64.h"
#include "core/file.h"

namespace mesh::apply {

// BLAKE2b-256: about three times faster than SHA-256 in libsodium, and every
// run digests the whole map. Its state must be 64-byte aligned.
crypto_generichash_state* InputDigest::st() {
  auto p = reinterpret_cast<uintptr_t>(state_.data());
  return reinterpret_cast<crypto_generichash_state*>((p + 63) & ~uintptr_t{63});
}

InputDigest::InputDigest() : state_(sizeof(crypto_generichash_state) + 64) {
  if (sodium_init() < 0) std::abort();  // only when the system has no randomness
  crypto_generichash_init(st(), nullptr, 0, 32);
}

void InputDigest::add(std::string_view label, std::string_view bytes) {
  // Length-prefixed so that no two sequences of fields collide.
  std::string head = std::string(label) + ":" + std::to_string(bytes.size()) + ":";
  crypto_generichash_update(st(), reinterpret_cast<const unsigned char*>(head.data()), head.size());
  crypto_generichash_update(st(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::string InputDigest::hex() {
  unsigned char h[32];
  crypto_generichash_final(st(), h, sizeof h);
  return hex_encode(std::span<const uint8_t>(h, sizeof h));
}

namespace {

void add_link(InputDigest* d, const Current& c) {
  d->add("link", std::string(c.link.exists ? "1" : "0") + std::to_string(c.link.mtu) + (c.link.up ? "u" : "d"));
  for (const auto& a : c.link.addresses) d->add("addr", a.to_string());
  for (const auto& r : c.link.routes) d->add("route", r.to_string());
  d->add("fw", c.firewall_digest.value_or(""));
}

}  // namespace

std::string state_digest(const Current& c) {
  InputDigest d;
  const DeviceState& dev = c.device;
  d.add("pk", dev.private_key ? std::string_view(reinterpret_cast<const char*>(dev.private_key->bytes().data()), kKeyLen)
                              : std::string_view());
  d.add("port", std::to_string(dev.listen_port));
  d.add("fwmark", std::to_string(dev.fwmark));
  // Raw bytes, one update per peer: thousands of peers are digested on
  // every run, so no text formatting here. Every field is fixed-size or
  // length-prefixed, so distinct states give distinct byte strings.
  std::string s;
  s.reserve(1024);  // no reallocation (and stray key copies) for ordinary peers
  for (const auto& p : dev.peers) {
    s.clear();
    auto put = [&s](const void* b, size_t n) { s.append(static_cast<const char*>(b), n); };
    put(p.public_key.bytes.data(), kKeyLen);
    uint8_t has_psk = p.preshared_key ? 1 : 0;
    put(&has_psk, 1);
    if (p.preshared_key) put(p.preshared_key->bytes().data(), kKeyLen);
    uint8_t has_ep = p.endpoint ? 1 : 0;
    put(&has_ep, 1);
    if (p.endpoint) {
      uint8_t fam = p.endpoint->ip.is_v4() ? 4 : 6;
      put(&fam, 1);
      put(p.endpoint->ip.bytes.data(), p.endpoint->ip.bytes.size());
      put(&p.endpoint->port, sizeof p.endpoint->port);
    }
    int32_t ka = p.keepalive;
    put(&ka, sizeof ka);
    uint32_t n = static_cast<uint32_t>(p.allowed_ips.size());
    put(&n, sizeof n);
    for (const auto& a : p.allowed_ips) {
      uint8_t fam = a.addr.is_v4() ? 4 : 6, len = static_cast<uint8_t>(a.len);
      put(&fam, 1);
      put(&len, 1);
      put(a.addr.bytes.data(), a.addr.bytes.size());
    }
    d.add("peer", s);
  }
  wipe(s);
  add_link(&d, c);
  return d.hex();
}

std::string link_digest(const Current& c) {
  InputDigest d;
  add_link(&d, c);
  return d.hex();
}

std::string key_digest(const SecretKey& k) {
  // Keyed BLAKE2b (domain separation), 128 bits: enough to tell keys apart,
  // and one-way, so the memo holds no secret.
  static constexpr char kContext[] = "mesh-apply memo key digest";
  unsigned char h[16];
  crypto_generichash(h, sizeof h, k.bytes().data(), k.bytes().size(),
                     reinterpret_cast<const unsigned char*>(kContext), sizeof kContext - 1);
  return hex_encode(std::span<const uint8_t>(h, sizeof h));
}

Snapshot snapshot_of(const DeviceState& d) {
  Snapshot s;
  if (d.private_key) s.private_key = key_digest(*d.private_key);
  s.listen_port = d.listen_port;
  s.fwmark = d.fwmark;
  s.peers.reserve(d.peers.size());
  for (const auto& p : d.peers) {
    SnapshotPeer q;
    q.public_key = p.public_key;
    if (p.preshared_key) q.psk = key_digest(*p.preshared_key);
    q.endpoint = p.endpoint;
    q.keepalive = p.keepalive;
    q.allowed_ips = p.allowed_ips;
    s.peers.push_back(std::move(q));
  }
  auto by_key = [](const SnapshotPeer& a, const SnapshotPeer& b) { return a.public_key < b.public_key; };
  if (!std::is_sorted(s.peers.begin(), s.peers.end(), by_key))
    std::sort(s.peers.begin(), s.peers.end(), by_key);
  return s;
}

DeviceState device_from_snapshot(Snapshot&& s, const Desired& want) {
  // The copying version, then the peers' lists moved in instead of copied.
  std::vector<std::vector<Prefix>> ips;
  ips.reserve(s.peers.size());
  for (auto& q : s.peers) ips.push_back(std::move(q.allowed_ips));
  DeviceState d = device_from_snapshot(static_cast<const Snapshot&>(s), want);
  for (size_t i = 0; i < ips.size(); ++i) d.peers[i].allowed_ips = std::move(ips[i]);
  return d;
}

DeviceState device_from_snapshot(const Snapshot& s, const Desired& want) {
  // A stand-in for a key we only know the digest of: random, so it matches
  // nothing that is wanted and diff() sets the wanted key.
  auto resolve = [](const std::string& digest, const std::optional<SecretKey>& wanted,
                    bool is_private) -> std::optional<SecretKey> {
    if (digest.empty()) return std::nullopt;
    if (wanted && key_digest(*wanted) == digest) return *wanted;
    return is_private ? SecretKey::generate_private() : SecretKey::generate_preshared();
  };
  DeviceState d;
  d.private_key = resolve(s.private_key, want.private_key, true);
  d.listen_port = s.listen_port;
  d.fwmark = s.fwmark;
  d.peers.reserve(s.peers.size());
  for (const auto& q : s.peers) {
    PeerState p;
    p.public_key = q.public_key;
    if (!q.psk.empty()) {
      auto it = std::lower_bound(want.peers.begin(), want.peers.end(), q.public_key,
                                 [](const DesiredPeer& a, const PublicKey& k) { return a.public_key < k; });
      std::optional<SecretKey> wanted;
      if (it != want.peers.end() && it->public_key == q.public_key) wanted = it->preshared_key;
      p.preshared_key = resolve(q.psk, wanted, false);
    }
    p.endpoint = q.endpoint;
    p.keepalive = q.keepalive;
    p.allowed_ips = q.allowed_ips;
    d.peers.push_back(std::move(p));
  }
  return d;
}

// The snapshot is binary (host byte order: it never leaves this machine's
// /run): formatting and parsing thousands of addresses and base64 keys as
// text cost more than the rest of a one-peer run. Layout:
//   kSnapshotMagic
//   str private-key digest; u16 listen port; u32 fwmark; u32 peer count
//   per peer: 32-byte public key; str preshared-key digest;
//             u8 endpoint family (0 none, 4, 6) [address (4|16), u16 port];
//             i32 keepalive; u32 allowed-IP count,
//             per allowed IP: u8 family (4, 6), u8 length, address (4|16)
//   32-byte BLAKE2b of everything before it
// (str: u8 length, then that many bytes). Anything else, a failed checksum
// or peers out of order is malformed: the caller reads the device instead.
static constexpr std::string_view kSnapshotMagic = "mesh-apply snapshot 1\n";

namespace {

class Writer {
 public:
  explicit Writer(size_t reserve) { out_.reserve(reserve); }
  void bytes(const void* b, size_t n) { out_.append(static_cast<const char*>(b), n); }
  template <typename T>
  void num(T v) { bytes(&v, sizeof v); }
  void str(const std::string& s) {
    num(static_cast<uint8_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void addr(const IpAddr& a) { bytes(a.bytes.data(), a.is_v4() ? 4 : 16); }
  std::string finish() {
    unsigned char h[32];
    crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(out_.data()), out_.size(),
                       nullptr, 0);
    bytes(h, sizeof h);
    return std::move(out_);
  }

 private:
  std::string out_;
};

class Cursor {
 public:
  explicit Cursor(std::string_view t) : t_(t) {}
  bool bytes(void* b, size_t n) {
    if (t_.size() < n) return false;
    std::memcpy(b, t_.data(), n);
    t_.remove_prefix(n);
    return true;
  }
  template <typename T>
  bool num(T* v) { return bytes(v, sizeof *v); }
  bool str(std::string* s) {
    uint8_t n;
    if (!num(&n) || t_.size() < n) return false;
    s->assign(t_.data(), n);
    t_.remove_prefix(n);
    return true;
  }
  bool addr(uint8_t family, IpAddr* a) {
    if (family != 4 && family != 6) return false;
    a->family = family == 4 ? AF_INET : AF_INET6;
    return bytes(a->bytes.data(), family == 4 ? 4 : 16);
  }
  size_t left() const { return t_.size(); }

 private:
  std::string_view t_;
};

template <typename T>
bool number(std::string_view s, T* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

// A key digest as key_digest() writes it: 32 hex digits (or none).
bool digest_ok(const std::string& d) {
  if (d.empty()) return true;
  if (d.size() != 32) return false;
  for (char c : d)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

namespace {

// One writer for both forms: `psk(p)` gives a peer's preshared-key digest.
template <typename Peers, typename Psk>
std::string write_snapshot(const std::string& private_key, uint16_t listen_port, uint32_t fwmark,
                           const Peers& peers, Psk psk) {
  Writer w(64 + peers.size() * 72);
  w.bytes(kSnapshotMagic.data(), kSnapshotMagic.size());
  w.str(private_key);
  w.num(listen_port);
  w.num(fwmark);
  w.num(static_cast<uint32_t>(peers.size()));
  for (const auto& p : peers) {
    w.bytes(p.public_key.bytes.data(), kKeyLen);
    w.str(psk(p));
    w.num(static_cast<uint8_t>(!p.endpoint ? 0 : p.endpoint->ip.is_v4() ? 4 : 6));
    if (p.endpoint) {
      w.addr(p.endpoint->ip);
      w.num(p.endpoint->port);
    }
    w.num(static_cast<int32_t>(p.keepalive));
    w.num(static_cast<uint32_t>(p.allowed_ips.size()));
    for (const auto& a : p.allowed_ips) {
      w.num(static_cast<uint8_t>(a.addr.is_v4() ? 4 : 6));
      w.num(static_cast<uint8_t>(a.len));
      w.addr(a.addr);
    }
  }
  return w.finish();
}

}  // namespace

std::string serialise_snapshot(const Snapshot& s) {
  return write_snapshot(s.private_key, s.listen_port, s.fwmark, s.peers,
                        [](const SnapshotPeer& p) -> const std::string& { return p.psk; });
}

std::string serialise_snapshot(const DeviceState& d) {
  auto by_key = [](const PeerState& a, const PeerState& b) { return a.public_key < b.public_key; };
  if (!std::is_sorted(d.peers.begin(), d.peers.end(), by_key)) return serialise_snapshot(snapshot_of(d));
  // Straight from the device: no copy of every peer's allowed IPs.
  return write_snapshot(d.private_key ? key_digest(*d.private_key) : std::string(), d.listen_port,
                        d.fwmark, d.peers, [](const PeerState& p) {
                          return p.preshared_key ? key_digest(*p.preshared_key) : std::string();
                        });
}

Result<Snapshot> parse_snapshot(std::string_view text) {
  auto bad = [] { return data_error("malformed mesh-apply memo snapshot"); };
  if (text.size() < kSnapshotMagic.size() + 32 ||
      text.substr(0, kSnapshotMagic.size()) != kSnapshotMagic)
    return bad();
  std::string_view body = text.substr(0, text.size() - 32);
  unsigned char h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(body.data()), body.size(),
                     nullptr, 0);
  if (sodium_memcmp(h, text.data() + body.size(), sizeof h) != 0) return bad();
  Cursor c(body.substr(kSnapshotMagic.size()));
  Snapshot s;
  uint32_t n = 0;
  if (!c.str(&s.private_key) || !digest_ok(s.private_key) || !c.num(&s.listen_port) ||
      !c.num(&s.fwmark) || !c.num(&n))
    return bad();
  // Each peer takes at least 42 bytes: a count the rest cannot hold is bad
  // (and must not make us reserve gigabytes).
  if (n > c.left() / 42) return bad();
  s.peers.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    SnapshotPeer p;
    uint8_t fam = 0;
    int32_t ka = 0;
    uint32_t nips = 0;
    if (!c.bytes(p.public_key.bytes.data(), kKeyLen) || !c.str(&p.psk) || !digest_ok(p.psk) ||
        !c.num(&fam))
      return bad();
    if (fam != 0) {
      SockAddr ep;
      if (!c.addr(fam, &ep.ip) || !c.num(&ep.port)) return bad();
      p.endpoint = ep;
    }
    if (!c.num(&ka) || ka < 0 || ka > 65535 || !c.num(&nips) || nips > c.left() / 6) return bad();
    p.keepalive = ka;
    p.allowed_ips.reserve(nips);
    for (uint32_t k = 0; k < nips; ++k) {
      Prefix a;
      uint8_t len = 0;
      if (!c.num(&fam) || !c.num(&len) || !c.addr(fam, &a.addr) || len > a.max_len()) return bad();
      a.len = len;
      p.allowed_ips.push_back(a);
    }
    if (!s.peers.empty() && !(s.peers.back().public_key < p.public_key)) return bad();
    s.peers.push_back(std::move(p));
  }
  if (c.left() != 0) return bad();
  return s;
}

bool snapshot_trusted(const Memo& m, const std::string& backend, int ifindex, int64_t now,
                      int64_t interval) {
  return interval > 0 && !m.device_text.empty() && m.ifindex > 0 && m.ifindex == ifindex &&
         m.backend == backend && m.verified_at <= now && now - m.verified_at < interval;
}

Current expected_state(const Desired& want, const Current& before) {
  Current c;
  c.device.private_key = want.private_key;
  c.device.listen_port = want.listen_port ? *want.listen_port : before.device.listen_port;
  c.device.fwmark = want.fwmark;  // diff() sets it (exit nodes)
  // The current peers by key: a binary search when they are sorted (as
  // normalise() leaves them), a map otherwise.
  const auto& before_peers = before.device.peers;
  auto by_key = [](const PeerState& a, const PeerState& b) { return a.public_key < b.public_key; };
  bool sorted = std::is_sorted(before_peers.begin(), before_peers.end(), by_key);
  std::map<PublicKey, const PeerState*> cur;
  if (!sorted)
    for (const auto& p : before_peers) cur[p.public_key] = &p;
  auto current = [&](const PublicKey& k) -> const PeerState* {
    if (!sorted) {
      auto it = cur.find(k);
      return it == cur.end() ? nullptr : it->second;
    }
    auto it = std::lower_bound(before_peers.begin(), before_peers.end(), k,
                               [](const PeerState& a, const PublicKey& key) { return a.public_key < key; });
    return it != before_peers.end() && it->public_key == k ? &*it : nullptr;
  };
  c.device.peers.reserve(want.peers.size());
  for (const auto& d : want.peers) {
    PeerState p;
    p.public_key = d.public_key;
    p.preshared_key = d.preshared_key;
    const PeerState* now = current(d.public_key);
    if (d.forced_endpoint)
      p.endpoint = d.forced_endpoint;
    else if (now && now->endpoint)
      p.endpoint = now->endpoint;
    else
      p.endpoint = d.map_endpoint;
    p.keepalive = d.keepalive;
    p.allowed_ips = d.allowed_ips;
    c.device.peers.push_back(std::move(p));
  }
  normalise(&c.device);
  c.link.exists = true;
  c.link.mtu = want.mtu;
  c.link.up = true;
  c.link.addresses = want.addresses;
  c.link.routes = want.routes;
  c.firewall_digest = want.firewall_digest;
  return c;
}

std::string memo_path(const std::string& dir, const std::string& interface) {
  return dir + "/" + interface + ".state";
}

// File: a header line, then one field per line (inputs, state, peers, link,
// ifindex, backend, verified_at, hosts), then the snapshot
// (serialise_snapshot).
static constexpr char kMemoHeader[] = "mesh-apply memo 4";

std::string hosts_digest(std::string_view block) {
  InputDigest d;
  d.add("hosts", block);
  return d.hex();
}

std::optional<Memo> load_memo(const std::string& path) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  std::string_view t = *text;
  std::vector<std::string_view> lines;
  for (int i = 0; i < 9; ++i) {
    auto nl = t.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    lines.push_back(t.substr(0, nl));
    t.remove_prefix(nl + 1);
  }
  if (lines[0] != kMemoHeader || lines[1].size() != 64 || lines[2].size() != 64) return std::nullopt;
  Memo m;
  m.inputs = lines[1];
  m.state = lines[2];
  if (!number(lines[3], &m.peers) || !number(lines[5], &m.ifindex) ||
      !number(lines[7], &m.verified_at))
    return std::nullopt;
  if (lines[4] != "-") m.link = lines[4];
  if (lines[6] != "-") m.backend = lines[6];
  if (lines[8] != "-") m.hosts = lines[8];
  m.device_text = t;
  return m;
}

Result<PendingFile> prepare_memo(const std::string& dir, const Memo& m) {
  MESH_TRY(make_dirs(dir, 0700));
  std::string text;
  text.reserve(256 + m.device_text.size());
  for (const std::string& line :
       {std::string(kMemoHeader), m.inputs, m.state, std::to_string(m.peers),
        m.link.empty() ? std::string("-") : m.link, std::to_string(m.ifindex),
        m.backend.empty() ? std::string("-") : m.backend, std::to_string(m.verified_at),
        m.hosts.empty() ? std::string("-") : m.hosts}) {
    text += line;
    text += '\n';
  }
  text += m.device_text;
  return PendingFile::write(dir, std::move(text), 0600);
}

void store_memo(const std::string& dir, const std::string& interface, const Memo& m) {
  auto f = prepare_memo(dir, m);
  if (f) (void)f->commit(memo_path(dir, interface));
}

UniqueFd lock_interface(const std::string& dir, const std::string& interface) {
  if (!make_dirs(dir, 0700)) return UniqueFd();
  UniqueFd fd(::open((dir + "/" + interface + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return fd;
  while (::flock(fd.get(), LOCK_EX) != 0)
    if (errno != EINTR) return UniqueFd();
  return fd;
}

void remove_memo(const std::string& dir, const std::string& interface) {
  ::unlink(memo_path(dir, interface).c_str());
}

}  // namespace mesh::apply
