#include "core/net.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace mesh {

Result<IpAddr> IpAddr::parse(std::string_view text) {
  // inet_pton needs a C string; a stack copy avoids a heap one per address
  // (a network map has thousands). Longer than any address: invalid.
  char s[INET6_ADDRSTRLEN + 1];
  auto bad = [&] { return data_error("invalid IP address '" + std::string(text) + "'"); };
  if (text.size() >= sizeof s || text.find('\0') != std::string_view::npos) return bad();
  std::memcpy(s, text.data(), text.size());
  s[text.size()] = '\0';
  IpAddr a;
  if (text.find(':') == std::string_view::npos) {
    in_addr v4{};
    if (inet_pton(AF_INET, s, &v4) != 1) return bad();
    a.family = AF_INET;
    std::memcpy(a.bytes.data(), &v4, 4);
    return a;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, s, &v6) != 1) return bad();
  a.family = AF_INET6;
  std::memcpy(a.bytes.data(), &v6, 16);
  return a;
}

IpAddr IpAddr::v4(uint32_t h) {
  IpAddr a;
  a.family = AF_INET;
  a.bytes[0] = static_cast<uint8_t>(h >> 24);
  a.bytes[1] = static_cast<uint8_t>(h >> 16);
  a.bytes[2] = static_cast<uint8_t>(h >> 8);
  a.bytes[3] = static_cast<uint8_t>(h);
  return a;
}

uint32_t IpAddr::v4_host_order() const {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         bytes[3];
}

bool IpAddr::is_loopback() const {
  if (is_v4()) return bytes[0] == 127;
  for (size_t i = 0; i < 15; ++i)
    if (bytes[i] != 0) return false;
  return bytes[15] == 1;
}

std::string IpAddr::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, bytes.data(), buf, sizeof buf);
  return buf;
}

Result<Prefix> Prefix::parse(std::string_view text) {
  auto slash = text.find('/');
  auto a = IpAddr::parse(text.substr(0, slash));
  if (!a) return data_error("invalid prefix '" + std::string(text) + "': bad address");
  Prefix p;
  p.addr = *a;
  p.len = p.max_len();
  if (slash != std::string_view::npos) {
    auto ls = text.substr(slash + 1);
    int len = -1;
    auto [ptr, ec] = std::from_chars(ls.data(), ls.data() + ls.size(), len);
    if (ls.empty() || ec != std::errc() || ptr != ls.data() + ls.size() || len < 0 ||
        len > p.max_len())
      return data_error("invalid prefix '" + std::string(text) + "': bad length");
    p.len = len;
  }
  return p;
}

std::string Prefix::to_string() const { return addr.to_string() + "/" + std::to_string(len); }

Prefix Prefix::canonical() const {
  Prefix p = *this;
  for (int i = 0; i < static_cast<int>(addr.size()); ++i) {
    int bits = len - i * 8;
    if (bits >= 8) continue;
    p.addr.bytes[i] &= bits <= 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits));
  }
  return p;
}

bool Prefix::contains(const IpAddr& a) const {
  if (a.family != addr.family) return false;
  Prefix self = canonical();
  Prefix other{a, len};
  return other.canonical().addr == self.addr;
}

Result<SockAddr> SockAddr::parse(std::string_view text) {
  std::string_view host, port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return data_error("invalid endpoint '" + std::string(text) + "': expected [IPv6]:PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon)
      return data_error("invalid endpoint '" + std::string(text) +
                        "': expected IPv4:PORT or [IPv6]:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto ip = IpAddr::parse(host);
  if (!ip) return data_error("invalid endpoint '" + std::string(text) + "': bad address");
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p > 65535)
    return data_error("invalid endpoint '" + std::string(text) + "': bad port");
  SockAddr s;
  s.ip = *ip;
  s.port = static_cast<uint16_t>(p);
  return s;
}

SockAddr SockAddr::from_sockaddr(const sockaddr* sa) {
  SockAddr s;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    s.ip.family = AF_INET;
    std::memcpy(s.ip.bytes.data(), &in->sin_addr, 4);
    s.port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    s.ip.family = AF_INET6;
    std::memcpy(s.ip.bytes.data(), &in6->sin6_addr, 16);
    s.port = ntohs(in6->sin6_port);
  }
  return s;
}

std::string SockAddr::to_string() const {
  if (ip.is_v4()) return ip.to_string() + ":" + std::to_string(port);
  return "[" + ip.to_string() + "]:" + std::to_string(port);
}

socklen_t SockAddr::to_sockaddr(sockaddr_storage* ss) const {
  std::memset(ss, 0, sizeof *ss);
  if (ip.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, ip.bytes.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(ss);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  std::memcpy(&in6->sin6_addr, ip.bytes.data(), 16);
  return sizeof(sockaddr_in6);
}

}  // namespace mesh
