// The ceiling for bench/relay: a bare UDP forwarder with recvmmsg/sendmmsg
// and no TURN, doing the same socket work per packet as a TURN relay with
// two allocations (both peers relayed): a datagram received on LISTEN is
// sent from a second socket ("A's relayed address") to a third ("B's relayed
// address"), and from there out of LISTEN to TARGET. Two receives and two
// sends per packet, one thread, epoll, batches of 64 (as mesh-relay).
// Usage: bench_relay_forwarder LISTEN_ADDR:PORT TARGET_ADDR:PORT
// Prints "listening ADDR:PORT" when ready; runs until killed.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cstdio>

#include "relay/sockets.h"

using namespace mesh;

namespace {

constexpr int kB = 64;
uint8_t buf[kB][2048];
mmsghdr msgs[kB];
iovec iov[kB];

// Moves everything queued on `from` out of `out` to `to`.
void pump(int from, int out, const sockaddr_storage& to, socklen_t tl) {
  for (int round = 0; round < 16; ++round) {
    for (int i = 0; i < kB; ++i) {
      iov[i] = {buf[i], sizeof buf[i]};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(from, msgs, kB, MSG_DONTWAIT, nullptr);
    if (n <= 0) return;
    for (int i = 0; i < n; ++i) {
      iov[i].iov_len = msgs[i].msg_len;
      msgs[i].msg_hdr.msg_name = const_cast<sockaddr_storage*>(&to);
      msgs[i].msg_hdr.msg_namelen = tl;
    }
    int k = 0;
    for (int tries = 0; k < n && tries < 4; ++tries) {
      int r = sendmmsg(out, msgs + k, static_cast<unsigned>(n - k), MSG_DONTWAIT);
      if (r <= 0) break;
      k += r;
    }
    if (n < kB) return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s LISTEN TARGET\n", argv[0]);
    return 64;
  }
  auto l = SockAddr::parse(argv[1]);
  auto t = SockAddr::parse(argv[2]);
  if (!l || !t) return 64;
  SockAddr any{l->ip, 0};
  auto in = relay::open_udp(*l, 4 << 20);
  auto mid1 = relay::open_udp(any, 4 << 20);
  auto mid2 = relay::open_udp(any, 4 << 20);
  if (!in || !mid1 || !mid2) {
    std::fprintf(stderr, "cannot open sockets\n");
    return 69;
  }
  sockaddr_storage to, m2;
  socklen_t tl = t->to_sockaddr(&to);
  socklen_t m2l = relay::bound_address(mid2->get()).to_sockaddr(&m2);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event e{EPOLLIN, {}};
  e.data.u32 = 0;
  epoll_ctl(ep, EPOLL_CTL_ADD, in->get(), &e);
  e.data.u32 = 1;
  epoll_ctl(ep, EPOLL_CTL_ADD, mid2->get(), &e);
  std::printf("listening %s\n", relay::bound_address(in->get()).to_string().c_str());
  std::fflush(stdout);
  epoll_event evs[8];
  while (true) {
    int n = epoll_wait(ep, evs, 8, -1);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u32 == 0) pump(in->get(), mid1->get(), m2, m2l);
      else pump(mid2->get(), in->get(), to, tl);
    }
  }
}
