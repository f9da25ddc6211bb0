// IP addresses, prefixes (CIDR) and socket addresses, parsed strictly and
// formatted canonically. Used by every file format (man/mesh-netmap.5,
// man/mesh-endpoints.5) so that all programs agree on what is valid.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace mesh {

struct IpAddr {
  int family = AF_INET;              // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};   // IPv4 uses the first 4

  static Result<IpAddr> parse(std::string_view text);
  static IpAddr v4(uint32_t host_order);
  std::string to_string() const;
  bool is_v4() const { return family == AF_INET; }
  size_t size() const { return is_v4() ? 4 : 16; }
  uint32_t v4_host_order() const;
  // 127.0.0.0/8 or ::1.
  bool is_loopback() const;
  auto operator<=>(const IpAddr&) const = default;
};

// An address with a prefix length; `addr` has the host bits as given
// (100.64.0.5/10 is a valid interface address). canonical() zeroes them.
struct Prefix {
  IpAddr addr;
  int len = 32;

  // "A.B.C.D/N", "X::Y/N"; a bare address means /32 or /128.
  static Result<Prefix> parse(std::string_view text);
  std::string to_string() const;
  Prefix canonical() const;
  bool contains(const IpAddr& a) const;
  bool contains(const Prefix& p) const { return p.len >= len && contains(p.addr); }
  int max_len() const { return addr.is_v4() ? 32 : 128; }
  auto operator<=>(const Prefix&) const = default;
};

// "A.B.C.D:PORT" or "[X::Y]:PORT".
struct SockAddr {
  IpAddr ip;
  uint16_t port = 0;

  static Result<SockAddr> parse(std::string_view text);
  static SockAddr from_sockaddr(const sockaddr* sa);
  std::string to_string() const;
  // Fills a sockaddr_storage; returns its length.
  socklen_t to_sockaddr(sockaddr_storage* ss) const;
  auto operator<=>(const SockAddr&) const = default;
};

}  // namespace mesh
