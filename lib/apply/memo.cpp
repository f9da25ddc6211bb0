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
  std::sort(s.peers.begin(), s.peers.end(),
            [](const SnapshotPeer& a, const SnapshotPeer& b) { return a.public_key < b.public_key; });
  return s;
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

std::string serialise_snapshot(const Snapshot& s) {
  std::string out;
  out.reserve(64 + s.peers.size() * 128);
  out += "device " + (s.private_key.empty() ? "-" : s.private_key) + " " +
         std::to_string(s.listen_port) + " " + std::to_string(s.fwmark) + "\n";
  for (const auto& p : s.peers) {
    out += "peer ";
    out += p.public_key.to_base64();
    out += ' ';
    out += p.psk.empty() ? "-" : p.psk;
    out += ' ';
    out += p.endpoint ? p.endpoint->to_string() : "-";
    out += ' ';
    out += std::to_string(p.keepalive);
    out += ' ';
    if (p.allowed_ips.empty()) out += '-';
    for (size_t i = 0; i < p.allowed_ips.size(); ++i) {
      if (i) out += ',';
      out += p.allowed_ips[i].to_string();
    }
    out += '\n';
  }
  return out;
}

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    auto at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

template <typename T>
bool number(std::string_view s, T* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

Result<Snapshot> parse_snapshot(std::string_view text) {
  auto bad = [] { return data_error("malformed mesh-apply memo snapshot"); };
  Snapshot s;
  bool have_device = false;
  while (!text.empty()) {
    auto nl = text.find('\n');
    if (nl == std::string_view::npos) return bad();
    auto f = split(text.substr(0, nl), ' ');
    text.remove_prefix(nl + 1);
    if (f[0] == "device" && f.size() == 4 && !have_device) {
      if (f[1] != "-") s.private_key = f[1];
      if (!number(f[2], &s.listen_port) || !number(f[3], &s.fwmark)) return bad();
      have_device = true;
    } else if (f[0] == "peer" && f.size() == 6 && have_device) {
      SnapshotPeer p;
      MESH_ASSIGN(p.public_key, PublicKey::from_base64(f[1]));
      if (f[2] != "-") p.psk = f[2];
      if (f[3] != "-") { MESH_ASSIGN(p.endpoint, SockAddr::parse(f[3])); }
      if (!number(f[4], &p.keepalive)) return bad();
      if (f[5] != "-") {
        for (auto ip : split(f[5], ',')) {
          MESH_ASSIGN(auto pfx, Prefix::parse(ip));
          p.allowed_ips.push_back(pfx);
        }
      }
      if (!s.peers.empty() && !(s.peers.back().public_key < p.public_key)) return bad();
      s.peers.push_back(std::move(p));
    } else {
      return bad();
    }
  }
  if (!have_device) return bad();
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
  c.device.fwmark = before.device.fwmark;
  std::map<PublicKey, const PeerState*> cur;
  for (const auto& p : before.device.peers) cur[p.public_key] = &p;
  for (const auto& d : want.peers) {
    PeerState p;
    p.public_key = d.public_key;
    p.preshared_key = d.preshared_key;
    auto it = cur.find(d.public_key);
    if (d.forced_endpoint)
      p.endpoint = d.forced_endpoint;
    else if (it != cur.end() && it->second->endpoint)
      p.endpoint = it->second->endpoint;
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
// ifindex, backend, verified_at), then the snapshot (serialise_snapshot).
static constexpr char kMemoHeader[] = "mesh-apply memo 2";

std::optional<Memo> load_memo(const std::string& path) {
  auto text = read_file(path);
  if (!text) return std::nullopt;
  std::string_view t = *text;
  std::vector<std::string_view> lines;
  for (int i = 0; i < 8; ++i) {
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
  m.device_text = t;
  return m;
}

void store_memo(const std::string& dir, const std::string& interface, const Memo& m) {
  if (!make_dirs(dir, 0700)) return;
  std::string text;
  text.reserve(256 + m.device_text.size());
  for (const std::string& line :
       {std::string(kMemoHeader), m.inputs, m.state, std::to_string(m.peers),
        m.link.empty() ? std::string("-") : m.link, std::to_string(m.ifindex),
        m.backend.empty() ? std::string("-") : m.backend, std::to_string(m.verified_at)}) {
    text += line;
    text += '\n';
  }
  text += m.device_text;
  (void)write_file_atomic(memo_path(dir, interface), text, 0600);
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
