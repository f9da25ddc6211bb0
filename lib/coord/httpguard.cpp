#include "coord/httpguard.h"

#include <fcntl.h>
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
//
// With TLS (`ssl` not null) the socket is non-blocking and bytes go through
// SSL_read/SSL_write, which may want to read or write first (renegotiation,
// a partial record): both wait under the same deadline.
class GuardedStream : public httplib::Stream {
 public:
  GuardedStream(int fd, SSL* ssl, const GuardOptions& o) : fd_(fd), ssl_(ssl), opt_(o) {}

  // Arms the deadline of the next request and waits for its first byte.
  // False when the connection closed or stayed idle past the deadline.
  bool next_request() {
    deadline_ = Clock::now() + std::chrono::seconds(opt_.request_timeout);
    header_bytes_ = 0;
    in_body_ = false;
    tail_ = 0;
    return !dead_ && fill_if_empty(/*answer_timeout=*/false);
  }

  bool is_readable() const override {
    return off_ < len_ || (ssl_ && SSL_pending(ssl_) > 0) || wait_for(POLLIN, remaining_ms());
  }
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
    if (!ssl_) return ::send(fd_, ptr, size, MSG_NOSIGNAL);
    int len = static_cast<int>(std::min<size_t>(size, 1 << 20));
    for (;;) {
      int n = SSL_write(ssl_, ptr, len);
      if (n > 0) return n;
      int e = SSL_get_error(ssl_, n);
      short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
      if (!want || !wait_for(want, opt_.write_timeout * 1000)) return -1;
    }
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
    bool pending = ssl_ && SSL_pending(ssl_) > 0;  // decrypted bytes the socket no longer shows
    if (!pending && !wait_for(POLLIN, remaining_ms())) {
      if (answer_timeout)
        fail(error_response(408, "Request Timeout", Exit::TempFail,
                            "request not received within " + std::to_string(opt_.request_timeout) +
                                " s (--request-timeout)"));
      dead_ = true;
      return false;
    }
    ssize_t n = ssl_ ? tls_read() : plain_read();
    if (n <= 0) return false;
    off_ = 0;
    len_ = static_cast<size_t>(n);
    return true;
  }

  ssize_t plain_read() {
    ssize_t n;
    do n = ::recv(fd_, buf_, sizeof buf_, 0);
    while (n < 0 && errno == EINTR);
    return n;
  }

  // Until a record is whole or the deadline passes (then 0: no data).
  ssize_t tls_read() {
    for (;;) {
      int n = SSL_read(ssl_, buf_, sizeof buf_);
      if (n > 0) return n;
      int e = SSL_get_error(ssl_, n);
      short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
      if (!want || !wait_for(want, remaining_ms())) return 0;
    }
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
    if (ssl_) (void)SSL_write(ssl_, answer.data(), static_cast<int>(answer.size()));
    else send_now(fd_, answer);
    dead_ = true;
  }

  int fd_;
  SSL* ssl_;
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

// ------------------------------------------------------------ ConnectionGuard

ConnectionGuard::ConnectionGuard(const GuardOptions& o)
    : opt_(o), limits_(o.max_connections, o.max_per_source) {}

ElasticPool* ConnectionGuard::make_pool() {
  pool_ = new ElasticPool(opt_.max_connections, opt_.max_queue);
  return pool_;
}

// Only plain HTTP can be answered before a TLS handshake: a refused TLS
// connection is closed without a word.
bool ConnectionGuard::admit(int sock, bool tls, std::string* source) {
  auto refuse = [&](int status, const char* reason, Exit e, const std::string& msg) {
    ++refused_;
    if (!tls) send_now(sock, error_response(status, reason, e, msg));
    return false;
  };
  if (pool_ && pool_->shedding())
    return refuse(503, "Service Unavailable", Exit::Unavailable,
                  "coordinator busy: every connection slot and the queue are taken; retry later");
  std::string ip;
  int port = 0;
  name_of(sock, true, ip, port);
  *source = source_key(ip);
  switch (limits_.try_open(*source)) {
    case ConnectionLimits::Verdict::Ok: return true;
    case ConnectionLimits::Verdict::SourceFull:
      return refuse(429, "Too Many Requests", Exit::TempFail,
                    "too many connections from " + *source + " (limit " +
                        std::to_string(opt_.max_per_source) + ")");
    case ConnectionLimits::Verdict::ServerFull:
      break;
  }
  return refuse(503, "Service Unavailable", Exit::Unavailable,
                "coordinator at its connection limit (" + std::to_string(opt_.max_connections) +
                    "); retry later");
}

// The TLS handshake, on a non-blocking socket, within the request deadline.
SSL* ConnectionGuard::handshake(int sock, SSL_CTX* ctx) const {
  SSL* ssl = SSL_new(ctx);
  if (!ssl) return nullptr;
  ::fcntl(sock, F_SETFL, ::fcntl(sock, F_GETFL) | O_NONBLOCK);
  SSL_set_fd(ssl, sock);
  auto deadline = Clock::now() + std::chrono::seconds(opt_.request_timeout);
  for (;;) {
    int rc = SSL_accept(ssl);
    if (rc == 1) return ssl;
    int e = SSL_get_error(ssl, rc);
    short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{sock, want, 0};
    if (!want || left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      SSL_free(ssl);
      return nullptr;
    }
  }
}

void ConnectionGuard::serve(int sock, SSL_CTX* tls, size_t max_requests,
                            const std::function<bool()>& running, const RequestFn& request) {
  std::string src;
  if (admit(sock, tls != nullptr, &src)) {
    SSL* ssl = tls ? handshake(sock, tls) : nullptr;
    if (!tls || ssl) {
      GuardedStream strm(sock, ssl, opt_);
      // httplib's own loop (process_server_socket) with our stream:
      // keep-alive up to max_requests requests, each under its own deadline.
      for (size_t i = 0; i < max_requests && running(); ++i) {
        if (!strm.next_request()) break;
        bool closed = false;
        if (!request(strm, i + 1 == max_requests, closed) || closed) break;
      }
    }
    if (ssl) {
      (void)SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    limits_.close(src);
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

// ------------------------------------------------------------ servers

GuardedServer::GuardedServer(const GuardOptions& o) : guard_(o) {
  new_task_queue = [this] { return guard_.make_pool(); };
}

bool GuardedServer::process_and_close_socket(socket_t sock) {
  guard_.serve(
      sock, nullptr, keep_alive_max_count_, [this] { return svr_sock_ != INVALID_SOCKET; },
      [this](httplib::Stream& s, bool close, bool& closed) {
        return process_request(s, close, closed, nullptr);
      });
  return true;
}

GuardedTlsServer::GuardedTlsServer(const GuardOptions& o, const char* cert, const char* key)
    : httplib::SSLServer(cert, key), guard_(o) {
  new_task_queue = [this] { return guard_.make_pool(); };
}

bool GuardedTlsServer::process_and_close_socket(socket_t sock) {
  guard_.serve(
      sock, ssl_context(), keep_alive_max_count_, [this] { return svr_sock_ != INVALID_SOCKET; },
      [this](httplib::Stream& s, bool close, bool& closed) {
        return process_request(s, close, closed, nullptr);
      });
  return true;
}

}  // namespace mesh::coord
