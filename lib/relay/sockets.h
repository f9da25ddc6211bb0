// Socket helpers shared by the relay server, the relay client and benchmarks.
#pragma once

#include "core/fd.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh::relay {

// Sets SO_RCVBUF/SO_SNDBUF to `bytes`, forcing past net.core.*mem_max with
// SO_*BUFFORCE when allowed (root), so bursts of relayed datagrams queue
// instead of being dropped (coturn keeps its relay sockets at 128 KiB).
void set_buffers(int fd, int bytes);

// A non-blocking UDP (or listening TCP) socket bound to `addr` with
// SO_REUSEPORT (several workers share one address) and SO_REUSEADDR (TCP).
Result<UniqueFd> open_listener(const SockAddr& addr, bool udp, int buffer_bytes);

// A non-blocking UDP socket bound to `addr` (port 0: any), without sharing.
Result<UniqueFd> open_udp(const SockAddr& addr, int buffer_bytes);

// getsockname() as a SockAddr.
SockAddr bound_address(int fd);

}  // namespace mesh::relay
