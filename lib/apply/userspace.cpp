#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/file.h"
#include "apply/backend.h"
#include "apply/process.h"
#include "apply/rtnl.h"
#include "apply/sockbuf.h"
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

Status send_all(int fd, std::string_view data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("UAPI write " + path, errno);
    }
    off += static_cast<size_t>(n);
  }
  return Status::ok();
}

// Reads one response, up to its blank line.
Result<std::string> read_response(int fd, const std::string& path) {
  std::string resp;
  char buf[65536];
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (!uapi_response_complete(resp)) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return temp_failure("UAPI: no answer from " + path);
    int pr = ::poll(&p, 1, left);
    if (pr < 0 && errno != EINTR) return errno_status("UAPI poll", errno);
    if (pr <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("UAPI read " + path, errno);
    }
    if (n == 0) return io_error("UAPI: " + path + " closed the connection mid-answer");
    resp.append(buf, static_cast<size_t>(n));
  }
  return resp;
}

Status set_answer(std::string_view resp, const std::string& path) {
  MESH_ASSIGN(int e, uapi_parse_errno(resp));
  if (e != 0)
    return io_error("UAPI set on " + path + " failed: errno=" + std::to_string(e) + " (" + strerror(e) + ")");
  return Status::ok();
}

// The lines queue up and a writer thread sends them: the daemon reads a
// SET far more slowly than a map is parsed, and the parser must not wait
// for it.
class UapiSetStream final : public SetStream {
 public:
  UapiSetStream(UniqueFd fd, std::string path)
      : fd_(std::move(fd)), path_(std::move(path)), writer_([this] { run(); }) {}
  ~UapiSetStream() override { (void)finish(); }

  void append(std::string lines) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(lines));
    }
    cv_.notify_one();
  }

  Status finish() override {
    if (finished_) return result_;
    finished_ = true;
    append("\n");  // the blank line that ends the SET
    {
      std::lock_guard<std::mutex> l(mu_);
      closing_ = true;
    }
    cv_.notify_one();
    writer_.join();
    if (!sent_) return result_ = sent_;
    auto resp = read_response(fd_.get(), path_);
    result_ = resp ? set_answer(*resp, path_) : resp.status();
    return result_;
  }

 private:
  void run() {
    for (;;) {
      std::string lines;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return !queue_.empty() || closing_; });
        if (queue_.empty()) return;
        lines = std::move(queue_.front());
        queue_.pop_front();
      }
      if (sent_) sent_ = send_all(fd_.get(), lines, path_);  // after a failure: only wiped
      wipe(lines);  // keys
    }
  }

  UniqueFd fd_;
  std::string path_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool closing_ = false;
  Status sent_ = Status::ok();  // the writer's; read after join
  bool finished_ = false;
  Status result_ = Status::ok();
  std::thread writer_;  // last: starts once the rest exists
};

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
    MESH_TRY(send_all(fd.get(), req, sock_path()));
    return read_response(fd.get(), sock_path());
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
    return set_answer(*resp, sock_path());
  }

  std::unique_ptr<SetStream> open_set_stream() override {
    auto fd = connect_sock();
    if (!fd) return nullptr;
    return std::make_unique<UapiSetStream>(std::move(*fd), sock_path());
  }

  // The daemon serving IF: a process of this network namespace whose
  // command line is `IMPL IF`, as create() started it, or `IMPL -f IF`
  // (foreground, as a service manager runs it). (SO_PEERCRED on the socket
  // names the launcher that called listen(), which exits once the daemon
  // runs.) The namespace check keeps an interface of the same name in
  // another namespace out of it.
  std::vector<pid_t> daemon_pids() const {
    std::vector<pid_t> out;
    std::string impl_base = env_.userspace_impl.substr(env_.userspace_impl.rfind('/') + 1);
    struct stat self_ns{};
    bool have_ns = ::stat("/proc/self/ns/net", &self_ns) == 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = e.path().filename();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      // A process may exit while we read: its cmdline then fails with ESRCH
      // (an exception from a stream), so read it as a plain file and skip it.
      auto text = read_file((e.path() / "cmdline").string(), 1 << 16);
      if (!text) continue;
      const std::string& cmd = *text;
      std::vector<std::string> args;
      for (size_t pos = 0; pos < cmd.size();) {
        size_t z = cmd.find('\0', pos);
        if (z == std::string::npos) z = cmd.size();
        args.push_back(cmd.substr(pos, z - pos));
        pos = z + 1;
      }
      bool shape = args.size() == 2 ||
                   (args.size() == 3 && (args[1] == "-f" || args[1] == "--foreground"));
      if (!shape || args.back() != if_) continue;
      if (args[0].substr(args[0].rfind('/') + 1) != impl_base) continue;
      struct stat ns{};
      if (have_ns && (::stat((e.path() / "ns/net").c_str(), &ns) != 0 || ns.st_ino != self_ns.st_ino ||
                      ns.st_dev != self_ns.st_dev))
        continue;
      out.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return out;
  }

  Result<SocketSizing> size_sockets(int bytes, int wait_ms) override {
    std::vector<pid_t> pids = daemon_pids();
    if (pids.empty())
      return unavailable("no " + env_.userspace_impl + " process serving " + if_ +
                         " in this network namespace");
    // The daemon binds its sockets when the link comes up, after it has
    // read the event: a link set up a moment ago may have none yet.
    auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
    for (;;) {
      SocketSizing all;
      for (pid_t p : pids) {
        auto r = size_udp_sockets(p, bytes);
        if (!r) {
          if (r.status().code() == Exit::Unavailable) continue;  // exited meanwhile
          return r.status();
        }
        all.sockets += r->sockets;
        all.raised += r->raised;
      }
      if (all.sockets > 0 || Clock::now() >= deadline) return all;
      // The daemon binds within a millisecond or so of the link-up: poll
      // finely, this wait is the last thing an apply does.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  Status destroy() override {
    std::vector<pid_t> pids = daemon_pids();
    MESH_ASSIGN(auto rt, Rtnl::open());
    MESH_ASSIGN(auto link, rt.get_link(if_));
    // Deleting the TUN link makes wireguard-go shut down and remove its socket.
    if (link) MESH_TRY(rt.delete_link(link->ifindex));
    auto gone = [&] {
      for (pid_t p : pids)
        if (alive(p)) return false;
      auto e = exists();
      return e && !*e;
    };
    auto wait = [&](std::chrono::milliseconds limit) {
      auto deadline = Clock::now() + limit;
      while (!gone() && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return gone();
    };
    if (!wait(std::chrono::seconds(link ? 5 : 0))) {
      for (pid_t p : pids) ::kill(p, SIGTERM);
      if (!wait(std::chrono::seconds(3))) {
        for (pid_t p : pids) ::kill(p, SIGKILL);
        wait(std::chrono::seconds(2));
      }
    }
    if (auto e = exists(); e && !*e) ::unlink(sock_path().c_str());  // stale, if any
    else if (e && *e) return io_error("the daemon serving " + sock_path() + " did not exit");
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
