// Unit tests of the userspace backend's SetStream (lib/apply/backend.h,
// userspace.cpp) against a stand-in for wireguard-go's UAPI socket: a unix
// socket in a temporary directory that records what it reads and answers
// with a given errno. (The real daemon is the e2e tests' job: 030, 031.)
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "apply/backend.h"

namespace mesh::apply {
namespace {

// Accepts one connection on DIR/IF.sock, reads until the blank line that
// ends a SET, answers "errno=N\n\n" and keeps what it read.
class FakeUapi {
 public:
  FakeUapi(const std::string& dir, const std::string& ifname, int answer_errno) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string p = dir + "/" + ifname + ".sock";
    std::memcpy(sa.sun_path, p.c_str(), p.size() + 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    server_ = std::thread([this, answer_errno] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      while (got_.size() < 2 || got_.compare(got_.size() - 2, 2, "\n\n") != 0) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        got_.append(buf, static_cast<size_t>(n));
      }
      std::string a = "errno=" + std::to_string(answer_errno) + "\n\n";
      (void)!::write(c, a.data(), a.size());
      ::close(c);
    });
  }
  ~FakeUapi() {
    ::shutdown(fd_, SHUT_RDWR);
    if (server_.joinable()) server_.join();
    ::close(fd_);
  }
  // What the server read; call after the stream finished.
  std::string got() {
    if (server_.joinable()) server_.join();
    return got_;
  }

 private:
  int fd_ = -1;
  std::thread server_;
  std::string got_;
};

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/mesh-uapi-test.XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

BackendEnv env_in(const std::string& dir) {
  BackendEnv env;
  env.uapi_dir = dir;
  return env;
}

TEST(ApplyUserspace, SetStreamSendsEverythingInOrderThenTheBlankLine) {
  TempDir d;
  FakeUapi daemon(d.path, "zzt0", 0);
  auto wg = make_userspace_backend("zzt0", env_in(d.path));
  auto stream = wg->open_set_stream();
  ASSERT_TRUE(stream);
  std::string want = "set=1\n";
  stream->append("set=1\n");
  // Far more than a socket buffer holds, queued faster than it is read.
  for (int i = 0; i < 20000; ++i) {
    std::string line = "public_key=" + std::to_string(i) + std::string(50, 'x') + "\n";
    want += line;
    stream->append(line);
  }
  EXPECT_TRUE(stream->finish());
  EXPECT_EQ(daemon.got(), want + "\n");
  EXPECT_TRUE(stream->finish());  // again: the same answer, nothing sent
}

TEST(ApplyUserspace, SetStreamReportsTheDaemonsErrno) {
  TempDir d;
  FakeUapi daemon(d.path, "zzt1", 22);
  auto stream = make_userspace_backend("zzt1", env_in(d.path))->open_set_stream();
  ASSERT_TRUE(stream);
  stream->append("set=1\nlisten_port=x\n");
  Status s = stream->finish();
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("errno=22"), std::string::npos) << s.message();
}

TEST(ApplyUserspace, NoDaemonNoStream) {
  TempDir d;
  EXPECT_FALSE(make_userspace_backend("zzt2", env_in(d.path))->open_set_stream());
}

TEST(ApplyUserspace, SetStreamFinishesWhenDestroyed) {
  TempDir d;
  FakeUapi daemon(d.path, "zzt3", 0);
  {
    auto stream = make_userspace_backend("zzt3", env_in(d.path))->open_set_stream();
    ASSERT_TRUE(stream);
    stream->append("set=1\n");
  }
  EXPECT_EQ(daemon.got(), "set=1\n\n");
}

}  // namespace
}  // namespace mesh::apply
