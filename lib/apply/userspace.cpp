#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <thread>

#include "apply/backend.h"
#include "apply/process.h"
#include "apply/rtnl.h"
#include "apply/uapi.h"
#include "core/fd.h"

namespace mesh::apply {
namespace {

using Clock = std::chrono::steady_clock;

// Alive and not a zombie (an exited daemon may wait for its reaper).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::string stat;
  if (FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r")) {
    char buf[512];
    size_t n = std::fread(buf, 1, sizeof buf, f);
    std::fclose(f);
    stat.assign(buf, n);
  }
  auto rp = stat.rfind(')');
  return !(rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] == 'Z');
}

class Userspace final : public WgBackend {
 public:
  Userspace(std::string ifname, BackendEnv env) : if_(std::move(ifname)), env_(std::move(env)) {}
  const char* name() const override { return "userspace"; }

  std::string sock_path() const { return env_.uapi_dir + "/" + if_ + ".sock"; }

  Result<UniqueFd> connect_sock() {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return errno_status("socket", errno);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string p = sock_path();
    if (p.size() >= sizeof sa.sun_path) return usage_error("UAPI socket path too long: " + p);
    std::memcpy(sa.sun_path, p.c_str(), p.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
      int e = errno;
      if (e == ECONNREFUSED || e == ENOENT)
        return unavailable("no WireGuard userspace daemon on " + p + " (" + strerror(e) + ")");
      return errno_status(p, e);
    }
    return fd;
  }

  // One request/response exchange on a fresh connection (wireguard-go
  // serves one operation per connection line-set; a new one is simplest).
  Result<std::string> exchange(const std::string& req) {
    MESH_ASSIGN(UniqueFd fd, connect_sock());
    size_t off = 0;
    while (off < req.size()) {
      ssize_t n = ::send(fd.get(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("UAPI write " + sock_path(), errno);
      }
      off += static_cast<size_t>(n);
    }
    std::string resp;
    char buf[65536];
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!uapi_response_complete(resp)) {
      pollfd p{fd.get(), POLLIN, 0};
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0) return temp_failure("UAPI: no answer from " + sock_path());
      int pr = ::poll(&p, 1, left);
      if (pr < 0 && errno != EINTR) return errno_status("UAPI poll", errno);
      if (pr <= 0) continue;
      ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("UAPI read " + sock_path(), errno);
      }
      if (n == 0) return io_error("UAPI: " + sock_path() + " closed the connection mid-answer");
      resp.append(buf, static_cast<size_t>(n));
    }
    return resp;
  }

  Result<bool> exists() override {
    struct stat st{};
    if (::stat(sock_path().c_str(), &st) != 0) {
      if (errno == ENOENT) return false;
      return errno_status(sock_path(), errno);
    }
    auto fd = connect_sock();
    if (!fd) {
      if (fd.status().code() == Exit::Unavailable) return false;  // stale socket
      return fd.status();
    }
    return true;
  }

  Status create() override {
    // wireguard-go daemonises by default: its parent exits 0 only once the
    // TUN device and the UAPI socket exist, or non-zero with the reason on
    // stderr. The daemon's own stdio goes to /dev/null unless LOG_LEVEL is
    // set, so drop LOG_LEVEL (and a stray WG_PROCESS_FOREGROUND) to never
    // hold our pipes open.
    auto r = run_process({env_.userspace_impl, if_}, "",
                         std::chrono::milliseconds(env_.start_timeout_ms),
                         {"LOG_LEVEL", "WG_PROCESS_FOREGROUND", "WG_TUN_FD", "WG_UAPI_FD"});
    if (!r) return r.status().with_context("cannot start " + env_.userspace_impl);
    if (r->exit_code != 0) {
      std::string msg = r->err;
      // wireguard-go's Linux warning banner is noise; keep the last line.
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      auto nl = msg.rfind('\n');
      if (nl != std::string::npos) msg = msg.substr(nl + 1);
      Exit code = msg.find("ermission") != std::string::npos || msg.find("not permitted") != std::string::npos
                      ? Exit::NoPerm
                      : Exit::Unavailable;
      return Status(code, env_.userspace_impl + " " + if_ + " exited with status " +
                              std::to_string(r->exit_code) + (msg.empty() ? "" : ": " + msg));
    }
    auto deadline = Clock::now() + std::chrono::milliseconds(env_.start_timeout_ms);
    for (;;) {
      auto e = exists();
      if (e && *e) return Status::ok();
      if (Clock::now() > deadline)
        return unavailable(env_.userspace_impl + " started but " + sock_path() + " did not appear");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  Result<DeviceState> get() override {
    MESH_ASSIGN(auto resp, exchange("get=1\n\n"));
    auto d = uapi_parse_get(resp);
    wipe(resp);
    return d;
  }

  Status set(const DeviceUpdate& u) override {
    if (u.empty()) return Status::ok();
    std::string req = uapi_encode_set(u);
    auto resp = exchange(req);
    wipe(req);
    if (!resp) return resp.status();
    MESH_ASSIGN(int e, uapi_parse_errno(*resp));
    if (e != 0)
      return io_error("UAPI set on " + sock_path() + " failed: errno=" + std::to_string(e) + " (" +
                      strerror(e) + ")");
    return Status::ok();
  }

  Status destroy() override {
    // The daemon serving the socket is found by SO_PEERCRED, so we stop
    // exactly the process that served IF and nothing else.
    pid_t pid = 0;
    if (auto fd = connect_sock(); fd) {
      ucred cr{};
      socklen_t len = sizeof cr;
      if (::getsockopt(fd->get(), SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) pid = cr.pid;
    }
    MESH_ASSIGN(auto rt, Rtnl::open());
    MESH_ASSIGN(auto link, rt.get_link(if_));
    // Deleting the TUN link makes wireguard-go shut down and remove its socket.
    if (link) MESH_TRY(rt.delete_link(link->ifindex));
    if (pid > 0) {
      auto deadline = Clock::now() + std::chrono::seconds(5);
      bool term_sent = !link;  // no link: nothing will make it exit by itself
      if (term_sent) ::kill(pid, SIGTERM);
      while (alive(pid)) {
        if (Clock::now() > deadline) {
          if (term_sent) {
            ::kill(pid, SIGKILL);
            break;
          }
          ::kill(pid, SIGTERM);
          term_sent = true;
          deadline = Clock::now() + std::chrono::seconds(3);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (auto e = exists(); e && !*e) ::unlink(sock_path().c_str());  // stale, if any
    return Status::ok();
  }

 private:
  std::string if_;
  BackendEnv env_;
};

}  // namespace

std::unique_ptr<WgBackend> make_userspace_backend(const std::string& ifname, const BackendEnv& env) {
  return std::make_unique<Userspace>(ifname, env);
}

}  // namespace mesh::apply
