// The ceiling for bench/relay: a bare UDP forwarder with recvmmsg/sendmmsg
// (no TURN): every datagram received on LISTEN goes to TARGET.
// Usage: bench_relay_forwarder LISTEN_ADDR:PORT TARGET_ADDR:PORT
// Prints "listening ADDR:PORT" when ready; runs until killed.
#include <fcntl.h>
#include <sys/socket.h>

#include <cstdio>
#include <memory>

#include "relay/sockets.h"

using namespace mesh;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s LISTEN TARGET\n", argv[0]);
    return 64;
  }
  auto l = SockAddr::parse(argv[1]);
  auto t = SockAddr::parse(argv[2]);
  if (!l || !t) return 64;
  auto fd = relay::open_udp(*l, 4 << 20);
  if (!fd) {
    std::fprintf(stderr, "%s\n", fd.status().message().c_str());
    return 69;
  }
  fcntl(fd->get(), F_SETFL, 0);  // blocking: sleep in recvmmsg
  int flags = MSG_WAITFORONE;
  std::printf("listening %s\n", relay::bound_address(fd->get()).to_string().c_str());
  std::fflush(stdout);
  constexpr int kB = 64;
  static uint8_t buf[kB][2048];
  mmsghdr msgs[kB];
  iovec iov[kB];
  sockaddr_storage to;
  socklen_t tl = t->to_sockaddr(&to);
  while (true) {
    for (int i = 0; i < kB; ++i) {
      iov[i] = {buf[i], sizeof buf[i]};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd->get(), msgs, kB, flags, nullptr);
    if (n <= 0) continue;
    for (int i = 0; i < n; ++i) {
      iov[i].iov_len = msgs[i].msg_len;
      msgs[i].msg_hdr.msg_name = &to;
      msgs[i].msg_hdr.msg_namelen = tl;
    }
    int k = 0;
    while (k < n) {
      int r = sendmmsg(fd->get(), msgs + k, static_cast<unsigned>(n - k), 0);
      if (r <= 0) break;
      k += r;
    }
  }
}
