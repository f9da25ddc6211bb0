#include "apply/sockbuf.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/fd.h"

namespace mesh::apply {
namespace {

// glibc 2.36 has wrappers for these, but not every libc that builds this
// does; the system calls are the same (Linux 5.3 and 5.6).
int pidfd_open_(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_getfd_(int pidfd, int fd) { return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }

int get_int(int fd, int opt) {
  int v = 0;
  socklen_t l = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, opt, &v, &l) == 0 ? v : -1;
}

// One direction. The kernel reports twice a size set with setsockopt (the
// other half is its bookkeeping allowance, socket(7)) but the default as it
// is: halving what it reports errs towards raising, never towards shrinking
// (the new size is only ever bigger than the old).
bool raise_buffer(int fd, int get_opt, int force_opt, int bytes) {
  int cur = get_int(fd, get_opt);
  if (cur >= 0 && cur / 2 >= bytes) return false;
  if (::setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) != 0)
    ::setsockopt(fd, SOL_SOCKET, get_opt, &bytes, sizeof bytes);  // clamped to *mem_max
  return get_int(fd, get_opt) > cur;
}

}  // namespace

Result<SocketSizing> size_udp_sockets(pid_t pid, int bytes) {
  UniqueFd pidfd(pidfd_open_(pid));
  if (!pidfd) {
    if (errno == ESRCH) return unavailable("process " + std::to_string(pid) + " has exited");
    return errno_status("pidfd_open " + std::to_string(pid), errno);
  }
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return errno_status(dir, errno);
  SocketSizing out;
  Status failure;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    // Only sockets are worth taking: the link names their kind.
    char link[64];
    ssize_t n = ::readlinkat(::dirfd(d), e->d_name, link, sizeof link - 1);
    if (n < 8 || std::memcmp(link, "socket:[", 8) != 0) continue;
    UniqueFd fd(pidfd_getfd_(pidfd.get(), std::atoi(e->d_name)));
    if (!fd) {
      if (errno == EBADF) continue;  // closed meanwhile
      failure = errno_status("pidfd_getfd (process " + std::to_string(pid) + ")", errno);
      break;
    }
    // The duplicate is the same open socket, so the options set on it are
    // the daemon's.
    if (get_int(fd.get(), SO_TYPE) != SOCK_DGRAM) continue;
    int domain = get_int(fd.get(), SO_DOMAIN);
    if (domain != AF_INET && domain != AF_INET6) continue;
    ++out.sockets;
    bool r = raise_buffer(fd.get(), SO_RCVBUF, SO_RCVBUFFORCE, bytes);
    bool s = raise_buffer(fd.get(), SO_SNDBUF, SO_SNDBUFFORCE, bytes);
    if (r || s) ++out.raised;
  }
  ::closedir(d);
  if (!failure) return failure;
  return out;
}

}  // namespace mesh::apply
