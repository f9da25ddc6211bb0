// Socket helpers shared by the relay server, the relay client and benchmarks.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>

#include "core/fd.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh::relay {

// A receive batch for recvmmsg (also reused for sendmmsg): kRxBatch slots of
// kRxSlot bytes, each read kRxHeadroom bytes in so a ChannelData or Data
// indication header can be written in front of the payload in place.
inline constexpr int kRxBatch = 64;
inline constexpr size_t kRxHeadroom = 64;
inline constexpr size_t kRxSlot = 65536 + kRxHeadroom;

struct RxBatch {
  std::unique_ptr<uint8_t[]> buf{new uint8_t[kRxBatch * kRxSlot]};
  mmsghdr msgs[kRxBatch];
  iovec iov[kRxBatch];
  sockaddr_storage addrs[kRxBatch];
  uint8_t* slot(int i) { return buf.get() + static_cast<size_t>(i) * kRxSlot; }
  // Resets every slot to receive a full datagram with its source address.
  void prepare() {
    for (int i = 0; i < kRxBatch; ++i) {
      iov[i] = {slot(i) + kRxHeadroom, kRxSlot - kRxHeadroom};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_len = 0;
    }
  }
};

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
