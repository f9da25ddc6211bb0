#include "apply/memo.h"

#include <sodium.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include <map>

#include "core/base64.h"
#include "core/file.h"

namespace mesh::apply {

InputDigest::InputDigest() : state_(sizeof(crypto_hash_sha256_state)) {
  crypto_hash_sha256_init(reinterpret_cast<crypto_hash_sha256_state*>(state_.data()));
}

void InputDigest::add(std::string_view label, std::string_view bytes) {
  auto* st = reinterpret_cast<crypto_hash_sha256_state*>(state_.data());
  // Length-prefixed so that no two sequences of fields collide.
  std::string head = std::string(label) + ":" + std::to_string(bytes.size()) + ":";
  crypto_hash_sha256_update(st, reinterpret_cast<const unsigned char*>(head.data()), head.size());
  crypto_hash_sha256_update(st, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::string InputDigest::hex() {
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_.data()), h);
  return hex_encode(std::span<const uint8_t>(h, sizeof h));
}

std::string state_digest(const Current& c) {
  InputDigest d;
  const DeviceState& dev = c.device;
  d.add("pk", dev.private_key ? std::string_view(reinterpret_cast<const char*>(dev.private_key->bytes().data()), kKeyLen)
                              : std::string_view());
  d.add("port", std::to_string(dev.listen_port));
  d.add("fwmark", std::to_string(dev.fwmark));
  for (const auto& p : dev.peers) {
    std::string s = p.public_key.to_base64();
    s += '|';
    if (p.preshared_key) s += std::string(reinterpret_cast<const char*>(p.preshared_key->bytes().data()), kKeyLen);
    s += '|' + (p.endpoint ? p.endpoint->to_string() : "") + '|' + std::to_string(p.keepalive) + '|';
    for (const auto& a : p.allowed_ips) s += a.to_string() + ',';
    d.add("peer", s);
    wipe(s);
  }
  d.add("link", std::string(c.link.exists ? "1" : "0") + std::to_string(c.link.mtu) + (c.link.up ? "u" : "d"));
  for (const auto& a : c.link.addresses) d.add("addr", a.to_string());
  for (const auto& r : c.link.routes) d.add("route", r.to_string());
  d.add("fw", c.firewall_digest.value_or(""));
  return d.hex();
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

std::optional<Memo> load_memo(const std::string& path) {
  auto text = read_file(path, 4096);
  if (!text) return std::nullopt;
  Memo m;
  auto nl1 = text->find('\n');
  auto nl2 = text->find('\n', nl1 + 1);
  if (nl1 != 64 || nl2 != 129) return std::nullopt;
  m.inputs = text->substr(0, 64);
  m.state = text->substr(65, 64);
  try {
    m.peers = std::stoul(text->substr(130));
  } catch (...) {
    return std::nullopt;
  }
  return m;
}

void store_memo(const std::string& dir, const std::string& interface, const Memo& m) {
  if (!make_dirs(dir, 0700)) return;
  (void)write_file_atomic(memo_path(dir, interface),
                          m.inputs + "\n" + m.state + "\n" + std::to_string(m.peers) + "\n", 0600);
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
