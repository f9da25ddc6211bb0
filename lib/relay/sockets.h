// Socket helpers shared by the relay server, the relay client and benchmarks.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "core/fd.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh::relay {

// A receive batch for recvmmsg (also reused for sendmmsg): kRxBatch slots of
// kRxSlot bytes, each read kRxHeadroom bytes in so a ChannelData or Data
// indication header can be written in front of the payload in place. A slot
// holds the largest UDP payload, so a socket with UDP GRO on (enable_gro)
// can hand over a whole train of coalesced datagrams in one slot:
// segment_size(i) then says where they split.
inline constexpr int kRxBatch = 64;
inline constexpr size_t kRxHeadroom = 64;
inline constexpr size_t kRxSlot = 65536 + kRxHeadroom;

struct RxBatch {
  std::unique_ptr<uint8_t[]> buf{new uint8_t[kRxBatch * kRxSlot]};
  mmsghdr msgs[kRxBatch];
  iovec iov[kRxBatch];
  sockaddr_storage addrs[kRxBatch];
  alignas(cmsghdr) char ctl[kRxBatch][64];
  uint8_t* slot(int i) { return buf.get() + static_cast<size_t>(i) * kRxSlot; }
  // Resets every slot to receive a full datagram with its source address
  // (and, with `control`, the ancillary data segment_size() reads).
  void prepare(bool control = false) {
    for (int i = 0; i < kRxBatch; ++i) {
      iov[i] = {slot(i) + kRxHeadroom, kRxSlot - kRxHeadroom};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      if (control) {
        msgs[i].msg_hdr.msg_control = ctl[i];
        msgs[i].msg_hdr.msg_controllen = sizeof ctl[i];
      }
      msgs[i].msg_len = 0;
    }
  }
  // The size of the datagrams coalesced into message i (all but the last
  // of the train have it), or 0 when the message is one datagram.
  size_t segment_size(int i);
};

// Turns on UDP GRO (Linux 5.0): datagrams of one flow that arrive as a GSO
// train (or that the device coalesced) are read as one message, split with
// RxBatch::segment_size. False when the kernel does not have it.
bool enable_gro(int fd);

// A send batch: datagrams queued with add() leave on flush() (add flushes
// when the batch is full), in order per socket. Runs of datagrams to one
// destination with one size (the last may be shorter) leave as one UDP GSO
// send (UDP_SEGMENT, Linux 4.18): one trip through the stack, and through
// veth and netfilter, instead of one per datagram. The rest leaves in
// sendmmsg batches. The queued bytes must stay valid until the flush.
class TxBatch {
 public:
  TxBatch();
  // `to`: the destination, or nullptr on a connected socket.
  void add(int fd, const sockaddr_storage* to, socklen_t tl, const uint8_t* p, size_t len);
  void flush();
  bool empty() const { return n_ == 0; }
  // Datagrams dropped so far (a full socket buffer, an ICMP error from an
  // earlier send), as sendmmsg would drop them.
  uint64_t drops() const { return drops_.load(std::memory_order_relaxed); }
  bool gso() const { return gso_; }
  void set_gso(bool on) { gso_ = on && gso_supported_; }

 private:
  void send_batch(int fd, int from, int to);
  bool send_gso(int fd, int from, int to);
  void drop(uint64_t n) { drops_.fetch_add(n, std::memory_order_relaxed); }

  mmsghdr msgs_[kRxBatch];
  iovec iov_[kRxBatch];
  sockaddr_storage addrs_[kRxBatch];
  int fds_[kRxBatch];
  int n_ = 0;
  bool gso_supported_ = false;  // this kernel has UDP_SEGMENT
  bool gso_ = false;            // in use (cleared on the first refusal)
  std::atomic<uint64_t> drops_{0};
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
