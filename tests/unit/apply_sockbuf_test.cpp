// Unit tests of sizing another process's UDP socket buffers
// (lib/apply/sockbuf.h), on this test process's own sockets: pidfd_getfd
// on oneself goes through the same checks as on a daemon.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apply/sockbuf.h"
#include "core/fd.h"

namespace mesh::apply {
namespace {

int opt(int fd, int name) {
  int v = 0;
  socklen_t l = sizeof v;
  getsockopt(fd, SOL_SOCKET, name, &v, &l);
  return v;
}

TEST(ApplySockbuf, RaisesUdpSocketsOnlyAndNeverShrinks) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (pidfd_getfd, SO_RCVBUFFORCE)";
  UniqueFd udp(socket(AF_INET, SOCK_DGRAM, 0)), udp6(socket(AF_INET6, SOCK_DGRAM, 0));
  UniqueFd tcp(socket(AF_INET, SOCK_STREAM, 0)), unix_dgram(socket(AF_UNIX, SOCK_DGRAM, 0));
  ASSERT_TRUE(udp && tcp && unix_dgram);
  int small = 4096;
  for (int fd : {udp.get(), tcp.get(), unix_dgram.get()}) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  }
  const int tcp_before = opt(tcp.get(), SO_RCVBUF), unix_before = opt(unix_dgram.get(), SO_SNDBUF);

  auto r = size_udp_sockets(getpid(), 3 << 20);
  ASSERT_TRUE(r) << r.status().message();
  int expect = udp6 ? 2 : 1;  // IPv6 may be disabled here
  EXPECT_EQ(r->sockets, expect);
  EXPECT_EQ(r->raised, expect);
  // The kernel reports twice what was set (socket(7)).
  EXPECT_GE(opt(udp.get(), SO_RCVBUF), 2 * (3 << 20));
  EXPECT_GE(opt(udp.get(), SO_SNDBUF), 2 * (3 << 20));
  EXPECT_EQ(opt(tcp.get(), SO_RCVBUF), tcp_before);
  EXPECT_EQ(opt(unix_dgram.get(), SO_SNDBUF), unix_before);

  // Big enough already: nothing raised, and a smaller request shrinks nothing.
  auto again = size_udp_sockets(getpid(), 3 << 20);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->raised, 0);
  auto smaller = size_udp_sockets(getpid(), 1 << 20);
  ASSERT_TRUE(smaller);
  EXPECT_EQ(smaller->raised, 0);
  EXPECT_GE(opt(udp.get(), SO_RCVBUF), 2 * (3 << 20));
}

TEST(ApplySockbuf, ExitedProcessIsUnavailable) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  auto r = size_udp_sockets(child, 1 << 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Exit::Unavailable);
}

}  // namespace
}  // namespace mesh::apply
