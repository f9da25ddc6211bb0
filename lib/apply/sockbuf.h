// Sizing the UDP socket buffers of a userspace WireGuard daemon from
// outside it. wireguard-go before 0.0.20230223 (Debian 12 ships
// 0.0.20220316) leaves its sockets at the kernel default
// (net.core.rmem_default, usually 208 KiB: under a hundred 1420-byte
// datagrams once the kernel's per-packet overhead is counted), so any burst
// longer than that (a relay or a NAT box handing over a batch, the daemon
// descheduled for a millisecond) is dropped before WireGuard sees it. Newer
// wireguard-go asks for 7 MiB with SO_RCVBUFFORCE/SO_SNDBUFFORCE itself;
// this does the same to an older one through pidfd_getfd(2). See
// mesh-apply(8), "Socket buffers".
#pragma once

#include <sys/types.h>

#include "core/status.h"

namespace mesh::apply {

// What wireguard-go 0.0.20230223 and later request for each socket.
inline constexpr int kDaemonSocketBuffer = 7 << 20;

struct SocketSizing {
  int sockets = 0;  // IPv4/IPv6 UDP sockets the process holds
  int raised = 0;   // of those, the ones that were smaller than asked
};

// Raises the receive and send buffers of every IPv4/IPv6 UDP socket that
// process `pid` holds to at least `bytes` (SO_RCVBUFFORCE, which passes
// net.core.rmem_max; SO_RCVBUF when that is refused). Buffers already at
// least that big are left alone, so it never shrinks one. Needs ptrace
// access to the process (root) and CAP_NET_ADMIN for the FORCE variants.
// NoPerm when the process's descriptors cannot be taken, Unavailable when
// it has exited.
Result<SocketSizing> size_udp_sockets(pid_t pid, int bytes);

}  // namespace mesh::apply
