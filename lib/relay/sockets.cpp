#include "relay/sockets.h"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace mesh::relay {

void set_buffers(int fd, int bytes) {
  if (bytes <= 0) return;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

static Result<UniqueFd> open_bound(const SockAddr& addr, bool udp, int buffer_bytes, bool reuse) {
  int type = (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  UniqueFd fd(socket(addr.ip.family, type, 0));
  if (!fd) return errno_status("socket", errno);
  int one = 1;
  if (reuse) {
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (!udp) setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (addr.ip.family == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (udp) set_buffers(fd.get(), buffer_bytes);
  sockaddr_storage ss;
  socklen_t sl = addr.to_sockaddr(&ss);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), sl) < 0) {
    int e = errno;
    Status s = errno_status("bind " + std::string(udp ? "udp " : "tcp ") + addr.to_string(), e);
    if (e == EADDRINUSE || e == EADDRNOTAVAIL) return Status(Exit::Unavailable, s.message());
    return s;
  }
  if (!udp && listen(fd.get(), 1024) < 0) return errno_status("listen " + addr.to_string(), errno);
  return fd;
}

Result<UniqueFd> open_listener(const SockAddr& addr, bool udp, int buffer_bytes) {
  return open_bound(addr, udp, buffer_bytes, true);
}

Result<UniqueFd> open_udp(const SockAddr& addr, int buffer_bytes) {
  return open_bound(addr, true, buffer_bytes, false);
}

size_t RxBatch::segment_size(int i) {
  msghdr& h = msgs[i].msg_hdr;
  if (!h.msg_control) return 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
      int v = 0;
      std::memcpy(&v, CMSG_DATA(c), sizeof v);
      return v > 0 ? static_cast<size_t>(v) : 0;
    }
  }
  return 0;
}

bool enable_gro(int fd) {
  int one = 1;
  return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
}

TxBatch::TxBatch() {
  // Kernels before 4.18 ignore a SOL_UDP cmsg and would send a GSO train as
  // one big datagram: use GSO only where the socket option exists.
  UniqueFd probe(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  int v = 0;
  socklen_t vl = sizeof v;
  gso_supported_ = probe && getsockopt(probe.get(), SOL_UDP, UDP_SEGMENT, &v, &vl) == 0;
  gso_ = gso_supported_;
}

void TxBatch::add(int fd, const sockaddr_storage* to, socklen_t tl, const uint8_t* p, size_t len) {
  if (n_ == kRxBatch) flush();
  int k = n_++;
  iov_[k] = {const_cast<uint8_t*>(p), len};
  msgs_[k].msg_hdr = {};
  if (to) {
    addrs_[k] = *to;
    msgs_[k].msg_hdr.msg_name = &addrs_[k];
    msgs_[k].msg_hdr.msg_namelen = tl;
  }
  msgs_[k].msg_hdr.msg_iov = &iov_[k];
  msgs_[k].msg_hdr.msg_iovlen = 1;
  fds_[k] = fd;
}

void TxBatch::flush() {
  int i = 0;
  while (i < n_) {
    int fd = fds_[i];
    int j = i;
    while (j < n_ && fds_[j] == fd) ++j;
    int pending = i;
    for (int k = i; k < j;) {
      int g = k + 1;
      if (gso_) {
        size_t seg = iov_[k].iov_len, total = seg;
        const msghdr& hk = msgs_[k].msg_hdr;
        while (g < j) {
          const msghdr& hg = msgs_[g].msg_hdr;
          size_t len = iov_[g].iov_len;
          // 65000: the train is one IP datagram until it is segmented.
          if (len > seg || total + len > 65000 || hg.msg_namelen != hk.msg_namelen ||
              (hk.msg_namelen && std::memcmp(hg.msg_name, hk.msg_name, hk.msg_namelen) != 0))
            break;
          total += len;
          ++g;
          if (len < seg) break;  // only the last segment may be shorter
        }
      }
      if (g - k >= 2) {
        send_batch(fd, pending, k);  // in order
        pending = send_gso(fd, k, g) ? g : k;
      }
      k = g;
    }
    send_batch(fd, pending, j);
    i = j;
  }
  n_ = 0;
}

// Sends [from, to) as one GSO datagram train. False when nothing was sent
// (the caller sends them one by one).
bool TxBatch::send_gso(int fd, int from, int to) {
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(uint16_t))] = {};
  msghdr h = msgs_[from].msg_hdr;
  h.msg_iov = &iov_[from];
  h.msg_iovlen = static_cast<size_t>(to - from);
  h.msg_control = ctl;
  h.msg_controllen = sizeof ctl;
  cmsghdr* cm = CMSG_FIRSTHDR(&h);
  cm->cmsg_level = SOL_UDP;
  cm->cmsg_type = UDP_SEGMENT;
  cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t seg = static_cast<uint16_t>(iov_[from].iov_len);
  std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  for (int tries = 0; tries < 4; ++tries) {
    if (sendmsg(fd, &h, MSG_DONTWAIT) >= 0) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      drop(static_cast<uint64_t>(to - from));
      return true;  // as sendmmsg would: the socket buffer is full
    }
    // EIO: the device cannot checksum GSO trains; give up GSO. Others
    // (EINVAL: a segment over the path MTU; an ICMP error from an earlier
    // send): this train goes one datagram at a time.
    if (errno == EIO || errno == ENOPROTOOPT || errno == EOPNOTSUPP) gso_ = false;
    return false;
  }
  return false;
}

void TxBatch::send_batch(int fd, int from, int to) {
  int k = from;
  for (int tries = 0; k < to && tries < 4; ++tries) {
    int r = sendmmsg(fd, msgs_ + k, static_cast<unsigned>(to - k), MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      // EAGAIN (socket buffer full) or a per-destination error (ICMP
      // unreachable from an earlier send): drop this datagram, go on.
      ++k;
      drop(1);
      continue;
    }
    k += r;
  }
  if (k < to) drop(static_cast<uint64_t>(to - k));
}

SockAddr bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace mesh::relay
