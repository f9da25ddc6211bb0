// The coordinator's HTTP(S) server with connection limits (man/mesh-coord.8,
// LIMITS). cpp-httplib gives one thread per connection, a timeout per read
// and no bound on the request line, the headers or the task queue, so a
// few idle or slow sockets could hold every thread. GuardedServer keeps
// httplib's parser and routing but owns the connection loop:
//   - connections in total and per source (limits.h: source_key) are
//     capped; beyond, the connection gets 503 or 429 at once;
//   - each request, from the wait for its first byte to its last body
//     byte, has one deadline (408 when missed: no slowloris);
//   - request line and headers together are capped in bytes (431);
//   - connections that find every thread busy wait in a bounded queue;
//     beyond it they get 503 at once.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coord/limits.h"

namespace mesh::coord {

struct GuardOptions {
  size_t max_connections = 4096;  // also the most worker threads
  size_t max_per_source = 1024;
  size_t max_queue = 1024;        // connections waiting for a thread
  int request_timeout = 10;       // seconds for a whole request, idle wait included
  size_t max_header_bytes = 16384;
  int write_timeout = 10;         // seconds per write of a response
};

// A thread pool that grows on demand up to `max` threads (long-polls hold
// their thread while waiting, blocked, not spinning) with a bounded queue.
// A task that finds the queue full runs at once on the enqueuing thread
// (httplib's accept loop) with shedding() true, so it can answer 503
// without reading the request and close.
class ElasticPool : public httplib::TaskQueue {
 public:
  ElasticPool(size_t max_threads, size_t max_queue) : max_(max_threads), max_queue_(max_queue) {}
  ~ElasticPool() override { shutdown(); }
  void enqueue(std::function<void()> fn) override;
  void shutdown() override;
  size_t threads();
  // True on the thread running a task the queue had no room for.
  bool shedding() const { return shed_thread_.load() == std::this_thread::get_id(); }

 private:
  void work();
  size_t max_, max_queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stop_ = false;
  std::atomic<std::thread::id> shed_thread_{};
};

// The connection side of GuardedServer and GuardedTlsServer: accounting,
// the TLS handshake under the request deadline, and httplib's request loop
// over a GuardedStream.
class ConnectionGuard {
 public:
  using RequestFn = std::function<bool(httplib::Stream&, bool close, bool& closed)>;
  explicit ConnectionGuard(const GuardOptions& o);
  ElasticPool* make_pool();  // for httplib's new_task_queue (httplib owns it)
  ElasticPool* pool() const { return pool_; }
  size_t connections() const { return limits_.open(); }
  // Connections refused by a limit (any of them), for /metrics.
  uint64_t refused() const { return refused_.load(); }
  // Serves one accepted connection and closes it. `tls`: null for plain HTTP.
  void serve(int sock, SSL_CTX* tls, size_t max_requests, const std::function<bool()>& running,
             const RequestFn& request);

 private:
  bool admit(int sock, bool tls, std::string* source);
  SSL* handshake(int sock, SSL_CTX* ctx) const;
  GuardOptions opt_;
  ConnectionLimits limits_;
  ElasticPool* pool_ = nullptr;
  std::atomic<uint64_t> refused_{0};
};

class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(const GuardOptions& o);
  ConnectionGuard& guard() { return guard_; }

 private:
  bool process_and_close_socket(socket_t sock) override;
  ConnectionGuard guard_;
};

class GuardedTlsServer : public httplib::SSLServer {
 public:
  GuardedTlsServer(const GuardOptions& o, const char* cert, const char* key);
  ConnectionGuard& guard() { return guard_; }

 private:
  bool process_and_close_socket(socket_t sock) override;
  ConnectionGuard guard_;
};

}  // namespace mesh::coord
