#include "apply/uapi.h"

#include <charconv>
#include <cstring>

#include "apply/format.h"
#include "core/base64.h"

namespace mesh::apply {
namespace {


bool unhex(std::string_view s, std::array<uint8_t, kKeyLen>* out) {
  if (s.size() != 2 * kKeyLen) return false;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < kKeyLen; ++i) {
    int h = nib(s[2 * i]), l = nib(s[2 * i + 1]);
    if (h < 0 || l < 0) return false;
    (*out)[i] = static_cast<uint8_t>(h << 4 | l);
  }
  return true;
}

template <typename T>
bool num(std::string_view s, T* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

namespace {

// Appended in place: thousands of peers, no temporaries (format.h).
void append_key(std::string* o, const char* name, const std::array<uint8_t, kKeyLen>& b) {
  static constexpr char kHex[] = "0123456789abcdef";
  *o += name;
  for (uint8_t c : b) {
    o->push_back(kHex[c >> 4]);
    o->push_back(kHex[c & 15]);
  }
  o->push_back('\n');
}

}  // namespace

void uapi_append_peer(std::string* o, const PeerUpdate& p) {
  append_key(o, "public_key=", p.public_key.bytes);
  if (p.remove) {
    *o += "remove=true\n";
    return;
  }
  if (p.update_only) *o += "update_only=true\n";
  if (p.preshared_key) append_key(o, "preshared_key=", p.preshared_key->bytes());
  if (p.endpoint) {
    *o += "endpoint=";
    append_sockaddr(o, *p.endpoint);
    o->push_back('\n');
  }
  if (p.keepalive) *o += "persistent_keepalive_interval=" + std::to_string(*p.keepalive) + "\n";
  if (p.replace_allowed_ips) *o += "replace_allowed_ips=true\n";
  for (const auto& a : p.allowed_ips) {
    *o += "allowed_ip=";
    append_prefix(o, a);
    o->push_back('\n');
  }
}

std::string uapi_encode_device(const DeviceUpdate& u) {
  std::string o = "set=1\n";
  o.reserve(64 + u.peers.size() * 160);
  if (u.private_key) append_key(&o, "private_key=", u.private_key->bytes());
  if (u.listen_port) o += "listen_port=" + std::to_string(*u.listen_port) + "\n";
  if (u.fwmark) o += "fwmark=" + std::to_string(*u.fwmark) + "\n";
  if (u.replace_peers) o += "replace_peers=true\n";
  return o;
}

std::string uapi_encode_set(const DeviceUpdate& u) {
  std::string o = uapi_encode_device(u);
  for (const auto& p : u.peers) uapi_append_peer(&o, p);
  o += "\n";
  return o;
}

bool uapi_response_complete(std::string_view buf) {
  return buf.size() >= 2 && buf.substr(buf.size() - 2) == "\n\n";
}

Result<int> uapi_parse_errno(std::string_view text) {
  // The last non-empty line must be errno=N.
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  auto nl = text.rfind('\n');
  std::string_view line = nl == std::string_view::npos ? text : text.substr(nl + 1);
  int e = 0;
  if (line.substr(0, 6) != "errno=" || !num(line.substr(6), &e))
    return data_error("UAPI: malformed response (no errno line)");
  return e;
}

Result<DeviceState> uapi_parse_get(std::string_view text) {
  if (!uapi_response_complete(text)) return data_error("UAPI: truncated GET response");
  DeviceState d;
  PeerState* peer = nullptr;
  bool have_errno = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) break;  // end of response
    auto eq = line.find('=');
    if (eq == std::string_view::npos)
      return data_error("UAPI: malformed line '" + std::string(line.substr(0, 80)) + "'");
    std::string_view k = line.substr(0, eq), v = line.substr(eq + 1);
    auto bad = [&] { return data_error("UAPI: bad value for " + std::string(k)); };
    std::array<uint8_t, kKeyLen> key{};
    if (k == "errno") {
      int e = 0;
      if (!num(v, &e)) return bad();
      if (e != 0) return io_error("UAPI: get failed: errno=" + std::to_string(e) + " (" + strerror(e) + ")");
      have_errno = true;
    } else if (k == "private_key") {
      if (!unhex(v, &key)) return bad();
      d.private_key = SecretKey(key);
      std::memset(key.data(), 0, key.size());
    } else if (k == "listen_port") {
      if (!num(v, &d.listen_port)) return bad();
    } else if (k == "fwmark") {
      if (!num(v, &d.fwmark)) return bad();
    } else if (k == "public_key") {
      if (!unhex(v, &key)) return bad();
      d.peers.emplace_back();
      peer = &d.peers.back();
      peer->public_key.bytes = key;
    } else if (!peer) {
      // Unknown device-level keys are ignored for forward compatibility.
      continue;
    } else if (k == "preshared_key") {
      if (!unhex(v, &key)) return bad();
      peer->preshared_key = SecretKey(key);
      std::memset(key.data(), 0, key.size());
    } else if (k == "endpoint") {
      auto sa = SockAddr::parse(v);
      if (!sa) return bad();
      peer->endpoint = *sa;
    } else if (k == "persistent_keepalive_interval") {
      if (!num(v, &peer->keepalive)) return bad();
    } else if (k == "allowed_ip") {
      auto p = Prefix::parse(v);
      if (!p) return bad();
      peer->allowed_ips.push_back(*p);
    } else if (k == "last_handshake_time_sec") {
      if (!num(v, &peer->last_handshake_sec)) return bad();
    } else if (k == "last_handshake_time_nsec") {
      if (!num(v, &peer->last_handshake_nsec)) return bad();
    } else if (k == "rx_bytes") {
      if (!num(v, &peer->rx_bytes)) return bad();
    } else if (k == "tx_bytes") {
      if (!num(v, &peer->tx_bytes)) return bad();
    }  // protocol_version and future keys: ignored
  }
  if (!have_errno) return data_error("UAPI: GET response without errno");
  normalise(&d);
  return d;
}

}  // namespace mesh::apply
