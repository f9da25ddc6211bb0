// Raw UDP for a port another process owns (WireGuard listens on it): send
// datagrams with a hand-built UDP header whose source port is that port, and
// receive the STUN datagrams addressed to it through raw sockets with a
// classic BPF filter (SO_ATTACH_FILTER) so the kernel copies us only what we
// want while the owner still gets every datagram.
//
// The packet helpers are pure functions over byte spans (unit-tested); the
// RawUdp class owns the sockets (needs CAP_NET_RAW).
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/fd.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh::rawsock {

using Bytes = std::span<const uint8_t>;

inline constexpr uint32_t kStunMagicCookie = 0x2112A442;

// Classic BPF programs accepting UDP datagrams to `port` whose payload has
// the STUN magic cookie at offset 4 (RFC 8489 section 5).
// IPv4 raw sockets see the IP header: the program skips it using its IHL
// (options included) and rejects non-first fragments. IPv6 raw sockets see
// the packet from the UDP header on (RFC 3542 section 3), so the program
// looks at fixed offsets.
std::vector<sock_filter> stun_filter_v4(uint16_t port);
std::vector<sock_filter> stun_filter_v6(uint16_t port);

// The UDP checksum (RFC 768; RFC 8200 section 8.1 for IPv6) of `udp`
// (header with a zero checksum field, plus payload), never 0 (0 is sent as
// 0xFFFF).
uint16_t udp_checksum(const IpAddr& src, const IpAddr& dst, Bytes udp);

// Writes an 8-byte UDP header and the payload into `out`, with the checksum
// computed over the pseudo-header of src/dst. Returns the size written, 0
// when `out` is too small or the datagram exceeds 65535 bytes.
size_t build_udp(std::span<uint8_t> out, const SockAddr& src, const SockAddr& dst, Bytes payload);

// A UDP datagram found in a raw packet.
struct UdpView {
  SockAddr src;
  SockAddr dst;
  Bytes payload;
};

// Parses an IPv4 packet (header of 20-60 bytes, options allowed) carrying
// UDP. DataErr for anything else: not IPv4, not UDP, a fragment, lengths
// that do not add up.
Result<UdpView> parse_ipv4_udp(Bytes packet);

// Parses a UDP header + payload received on an IPv6 raw socket (addresses
// come from the socket API).
Result<UdpView> parse_udp(Bytes datagram, const IpAddr& src, const IpAddr& dst);

// Sends and receives UDP datagrams "from" a local port that some other
// socket owns. IPv4 and IPv6; IPv6 is optional (skipped when the kernel has
// no IPv6).
class RawUdp {
 public:
  // Opens the raw sockets and attaches the STUN filter for `port`.
  // NoPerm without CAP_NET_RAW.
  static Result<RawUdp> open(uint16_t port);

  // Sends `payload` from local port `port` to `to`. ttl > 0 sets the IPv4
  // TTL / IPv6 hop limit of this datagram; 0 uses the system default.
  // Unavailable when `to` cannot be reached (no route, dropped by a local
  // firewall); other errors are the socket's.
  Status send(const SockAddr& to, Bytes payload, int ttl = 0);

  // File descriptors to poll for input (one or two).
  std::vector<int> fds() const;
  // Reads one datagram from `fd` (after poll said readable). Returns
  // std::nullopt when the packet was not a well-formed match (skipped).
  // The view points into `buf`.
  Result<std::optional<UdpView>> read(int fd, std::span<uint8_t> buf);

  uint16_t port() const { return port_; }

 private:
  Result<IpAddr> source_for(const SockAddr& to);

  uint16_t port_ = 0;
  UniqueFd fd4_, fd6_;         // one raw IPPROTO_UDP socket per family
  int ttl4_ = 0, ttl6_ = 0;    // currently set on fd4_/fd6_ (0 = default)
  std::vector<std::pair<IpAddr, IpAddr>> sources_;  // destination -> source address
};

}  // namespace mesh::rawsock
