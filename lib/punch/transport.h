// How mesh-punch sends and receives on the WireGuard port P.
//
// When P is free, plain UDP sockets bound to P (IPv4, and IPv6 when
// available). When another process owns P (wireguard-go or the kernel's
// WireGuard), raw sockets (lib/rawsock): datagrams leave with source port P
// and the STUN datagrams addressed to P are copied to us by a BPF filter,
// while the owner keeps receiving everything (WireGuard drops STUN).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/net.h"
#include "core/status.h"

namespace mesh::punch {

enum class SocketMode { Auto, Plain, Raw };

// "auto", "socket" or "raw".
Result<SocketMode> parse_socket_mode(std::string_view s);

struct Received {
  SockAddr from;
  size_t len = 0;  // payload bytes written to the caller's buffer
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends one datagram from port P. ttl > 0 limits its IPv4 TTL / IPv6 hop
  // limit (short-TTL opening packets); 0 is the system default.
  virtual Status send(const SockAddr& to, std::span<const uint8_t> data, int ttl = 0) = 0;
  // Waits up to timeout_ms (>= 0) for one datagram to port P. Returns
  // std::nullopt on timeout. Only STUN-looking datagrams are guaranteed in
  // raw mode; callers validate everything anyway.
  virtual Result<std::optional<Received>> recv(int timeout_ms, std::span<uint8_t> buf) = 0;
  // File descriptors a caller may poll(2) for POLLIN before recv(0, ...).
  virtual std::vector<int> fds() const = 0;
  // "socket" or "raw".
  virtual std::string mode() const = 0;
  virtual uint16_t port() const = 0;
};

// Opens port P. Auto: a plain socket when P can be bound, raw sockets when it
// is in use (EADDRINUSE). Plain on a busy port -> TempFail; raw without
// CAP_NET_RAW -> NoPerm.
Result<std::unique_ptr<Transport>> open_transport(uint16_t port, SocketMode mode);

// A plain socket on a fresh ephemeral port (IPv4 and, when available, IPv6).
Result<std::unique_ptr<Transport>> open_ephemeral();

// Waits up to timeout_ms for any of the transports to have input; returns
// the index of one that has, or -1 on timeout.
Result<int> wait_any(const std::vector<Transport*>& ts, int timeout_ms);

}  // namespace mesh::punch
