#include "coord/httpguard.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/exit.h"
#include "core/json.h"

namespace mesh::coord {
namespace {

using Clock = std::chrono::steady_clock;

// A complete HTTP/1.1 error response with the API's JSON error document
// (man/mesh-coord.8, HTTP API), for answers given outside httplib.
std::string error_response(int status, const char* reason, Exit exit, const std::string& msg) {
  std::string body = dump_json(Json{{"error", {{"status", status},
                                               {"exit", exit_name(exit)},
                                               {"message", msg}}}}) +
                     "\n";
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  r += "Content-Type: application/json\r\nConnection: close\r\n";
  if (status == 429 || status == 503) r += "Retry-After: 1\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  return r;
}

// Best effort, never blocking: the answer to a connection we will not serve.
void send_now(int fd, const std::string& r) {
  (void)::send(fd, r.data(), r.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

void name_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  ip.clear();
  port = 0;
  if (rc != 0) return;
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return;
  ip = host;
  port = std::atoi(serv);
}

// httplib's Stream over a connected socket, with one deadline for each
// request (idle wait, request line, headers and body) instead of a timeout
// per read, and a cap on the bytes before the blank line that ends the
// headers. A request that misses either gets its error answer here and
// every later read or write fails, so httplib gives up on the connection.
class GuardedStream : public httplib::Stream {
 public:
  GuardedStream(int fd, const GuardOptions& o) : fd_(fd), opt_(o) {}

  // Arms the deadline of the next request and waits for its first byte.
  // False when the connection closed or stayed idle past the deadline.
  bool next_request() {
    deadline_ = Clock::now() + std::chrono::seconds(opt_.request_timeout);
    header_bytes_ = 0;
    in_body_ = false;
    tail_ = 0;
    return !dead_ && fill_if_empty(/*answer_timeout=*/false);
  }

  bool is_readable() const override { return off_ < len_ || wait_for(POLLIN, remaining_ms()); }
  bool is_writable() const override { return !dead_ && wait_for(POLLOUT, opt_.write_timeout * 1000); }

  ssize_t read(char* ptr, size_t size) override {
    if (dead_ || !fill_if_empty(true)) return -1;
    size_t n = std::min(size, len_ - off_);
    if (!in_body_ && !count_header_bytes(buf_ + off_, n)) return -1;
    std::memcpy(ptr, buf_ + off_, n);
    off_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (dead_ || !is_writable()) return -1;
    return ::send(fd_, ptr, size, MSG_NOSIGNAL);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { name_of(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { name_of(fd_, false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  int remaining_ms() const {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  }

  bool wait_for(short events, int ms) const {
    pollfd p{fd_, events, 0};
    int rc;
    do rc = ::poll(&p, 1, ms);
    while (rc < 0 && errno == EINTR);
    return rc > 0;
  }

  // Refills the buffer when empty. A missed deadline is answered 408 when
  // part of a request came (`answer_timeout`); an idle connection is closed.
  bool fill_if_empty(bool answer_timeout) {
    if (off_ < len_) return true;
    if (!wait_for(POLLIN, remaining_ms())) {
      if (answer_timeout)
        fail(error_response(408, "Request Timeout", Exit::TempFail,
                            "request not received within " + std::to_string(opt_.request_timeout) +
                                " s (--request-timeout)"));
      dead_ = true;
      return false;
    }
    ssize_t n;
    do n = ::recv(fd_, buf_, sizeof buf_, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    off_ = 0;
    len_ = static_cast<size_t>(n);
    return true;
  }

  // Counts the request line and headers up to the blank line ("\r\n\r\n").
  bool count_header_bytes(const char* p, size_t& n) {
    for (size_t i = 0; i < n; ++i) {
      tail_ = tail_ << 8 | static_cast<uint8_t>(p[i]);
      if (++header_bytes_ > opt_.max_header_bytes) {
        fail(error_response(431, "Request Header Fields Too Large", Exit::DataErr,
                            "request line and headers larger than " +
                                std::to_string(opt_.max_header_bytes) + " bytes"));
        return false;
      }
      if (tail_ == 0x0d0a0d0a) {
        in_body_ = true;
        return true;
      }
    }
    return true;
  }

  void fail(const std::string& answer) {
    send_now(fd_, answer);
    dead_ = true;
  }

  int fd_;
  const GuardOptions& opt_;
  char buf_[4096];
  size_t off_ = 0, len_ = 0;
  Clock::time_point deadline_{};
  size_t header_bytes_ = 0;
  bool in_body_ = false;
  uint32_t tail_ = 0;
  bool dead_ = false;
};

}  // namespace

// ------------------------------------------------------------ ElasticPool

void ElasticPool::enqueue(std::function<void()> fn) {
  std::unique_lock lk(mu_);
  bool no_thread = idle_ <= q_.size() && threads_.size() >= max_;
  if (no_thread && q_.size() >= max_queue_) {
    // Shed on this (the accept) thread: the task only answers and closes.
    lk.unlock();
    shed_thread_ = std::this_thread::get_id();
    fn();
    shed_thread_ = std::thread::id{};
    return;
  }
  q_.push_back(std::move(fn));
  if (q_.size() > idle_ && threads_.size() < max_) threads_.emplace_back([this] { work(); });
  cv_.notify_one();
}

void ElasticPool::shutdown() {
  {
    std::lock_guard lk(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  std::vector<std::thread> ts;
  {
    std::lock_guard lk(mu_);
    ts.swap(threads_);
  }
  for (auto& t : ts) t.join();
}

size_t ElasticPool::threads() {
  std::lock_guard lk(mu_);
  return threads_.size();
}

void ElasticPool::work() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock lk(mu_);
      ++idle_;
      cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
      --idle_;
      if (q_.empty()) return;  // stopping
      fn = std::move(q_.front());
      q_.pop_front();
    }
    fn();
  }
}

// ------------------------------------------------------------ GuardedServer

GuardedServer::GuardedServer(const GuardOptions& o)
    : opt_(o), limits_(o.max_connections, o.max_per_source) {
  new_task_queue = [this] {
    pool_ = new ElasticPool(opt_.max_connections, opt_.max_queue);
    return pool_;
  };
}

bool GuardedServer::process_and_close_socket(socket_t sock) {
  serve_connection(sock);
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return true;
}

void GuardedServer::serve_connection(socket_t sock) {
  if (pool_ && pool_->shedding()) {
    ++refused_;
    return send_now(sock, error_response(503, "Service Unavailable", Exit::Unavailable,
                                         "coordinator busy: every connection slot and the queue "
                                         "are taken; retry later"));
  }
  std::string ip;
  int port = 0;
  name_of(sock, true, ip, port);
  std::string src = source_key(ip);
  switch (limits_.try_open(src)) {
    case ConnectionLimits::Verdict::Ok: break;
    case ConnectionLimits::Verdict::SourceFull:
      ++refused_;
      return send_now(sock, error_response(429, "Too Many Requests", Exit::TempFail,
                                           "too many connections from " + src + " (limit " +
                                               std::to_string(opt_.max_per_source) + ")"));
    case ConnectionLimits::Verdict::ServerFull:
      ++refused_;
      return send_now(sock, error_response(503, "Service Unavailable", Exit::Unavailable,
                                           "coordinator at its connection limit (" +
                                               std::to_string(opt_.max_connections) +
                                               "); retry later"));
  }
  GuardedStream strm(sock, opt_);
  // httplib's own loop (process_server_socket) with our stream: keep-alive
  // up to keep_alive_max_count_ requests, each under its own deadline.
  for (size_t i = 0; i < keep_alive_max_count_ && svr_sock_ != INVALID_SOCKET; ++i) {
    if (!strm.next_request()) break;
    bool closed = false;
    if (!process_request(strm, i + 1 == keep_alive_max_count_, closed, nullptr) || closed) break;
  }
  limits_.close(src);
}

}  // namespace mesh::coord
