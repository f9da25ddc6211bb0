#include "relay/sockets.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

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

SockAddr bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  return SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace mesh::relay
