#include "relay/server.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <unordered_map>

#include "core/file.h"
#include "core/fd.h"
#include "core/json.h"
#include "relay/revocations.h"
#include "relay/sockets.h"

namespace mesh::relay {
namespace {

using turn::ClientKey;

constexpr int kBatch = 64;
constexpr size_t kHeadroom = 64;  // room for a ChannelData or Data indication header
constexpr size_t kSlot = 65536 + kHeadroom;
// Per TCP/TLS connection: queued output beyond this drops relayed data, and
// a control reply that does not fit closes the connection (a client that
// sends requests and never reads must not grow our memory).
constexpr size_t kConnOutCap = 4u << 20;
// Input buffer: small while frames are (WireGuard, control), grown to the
// largest frame (20 + 65535 bytes) only for a frame that needs it.
constexpr size_t kConnInSmall = 4096;
constexpr size_t kConnInMax = 65536 + 24;

enum Tag : uint64_t { kTagAlloc = 0, kTagUdp = 1, kTagTcpListen = 2, kTagConn = 3, kTagWake = 4 };

uint64_t tag(const void* p, Tag t) { return reinterpret_cast<uint64_t>(p) | t; }

int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int64_t mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}


// A listen address and, for RFC 5780, its place in the 2x2 grid of
// (primary/alternate IP) x (primary/alternate port).
struct ListenerSpec {
  SockAddr addr;
  std::string proto;  // "udp", "tcp", "tls"
  int ip_sel = 0, port_sel = 0;
  bool grid = false;  // part of the RFC 5780 grid
};

struct Conn {
  uint32_t id = 0;
  UniqueFd fd;
  SSL* ssl = nullptr;
  SockAddr peer;
  std::vector<uint8_t> in;
  size_t in_len = 0;
  std::vector<uint8_t> out;
  size_t out_off = 0;
  // TLS: one record per TURN frame (coturn's clients read one message per
  // record), so frame boundaries in `out` are kept (absolute offsets).
  std::vector<size_t> frame_ends;
  size_t frames_done = 0;
  bool want_out = false;
  bool dirty = false;  // in Worker::dirty_: data queued, to flush
  bool dead = false;
  bool greeted = false;     // a whole TURN message arrived (after the TLS handshake)
  int64_t opened_ms = 0;    // handshake timeout from here
  int64_t last_rx_ms = 0;   // idle timeout from here
  ~Conn() {
    if (ssl) SSL_free(ssl);
  }
};

struct Server;

class Worker final : public turn::Io {
 public:
  Worker(int index, Server& srv);
  Status init();
  void run();
  void wake();

  turn::Stats stats;
  std::atomic<uint64_t> tx_drops{0};
  // TCP/TLS: refused at accept (over --max-connections), closed by the
  // handshake or idle timeout, closed for not reading their replies.
  std::atomic<uint64_t> conns_refused{0}, conns_timed_out{0}, conns_overflowed{0};
  std::atomic<int64_t> conns_open{0};
  uint64_t tx_batch_drops() const { return tx_.drops(); }

  // turn::Io
  Result<turn::RelaySocket> open_relay(int family, bool even_port, turn::Allocation* owner) override;
  void close_relay(turn::RelaySocket& s) override;
  void reply(const ClientKey& to, stun::Bytes msg, uint32_t change) override;
  void send_to_peer(const turn::RelaySocket& from, const SockAddr& peer, stun::Bytes data) override;
  void deliver(turn::Allocation& to, const SockAddr& peer, int channel, stun::Bytes data) override;
  bool origin(const ClientKey& from, uint32_t change, Origin* out) override;

 private:
  void on_udp(uint32_t listener);
  void on_relay(turn::Allocation* a);
  void on_accept(uint32_t listener);
  void on_conn(Conn* c, uint32_t events);
  void conn_read(Conn* c);
  void conn_flush(Conn* c);
  void conn_send(Conn* c, const uint8_t* p, size_t len, bool control);
  void conn_close(Conn* c);
  void conn_sweep();
  void queue_out(int fd, const SockAddr& to, const uint8_t* p, size_t len);
  void flush_out() { tx_.flush(); }
  void forward(const turn::Engine::Route& r, uint8_t* p, size_t len);
  bool to_client(turn::Allocation& a, const SockAddr& peer, int ch, uint8_t* p, size_t len);
  void flush_conns();
  void publish();

  int index_;
  Server& srv_;
  UniqueFd ep_, wake_;
  std::unique_ptr<turn::Engine> engine_;
  RxBatch rx_;
  TxBatch tx_;
  std::unordered_map<uint32_t, std::unique_ptr<Conn>> conns_;
  std::vector<std::unique_ptr<Conn>> dead_conns_;
  std::vector<Conn*> dirty_;  // connections with relayed data queued
  // Relayed datagrams counted since the last publish() (one atomic add per
  // loop iteration rather than per packet).
  uint64_t c2p_pkts_ = 0, c2p_bytes_ = 0, p2c_pkts_ = 0, p2c_bytes_ = 0;
  uint32_t next_conn_ = 1;
  std::mt19937 rng_;
  int64_t now_ms_ = 0;
  std::unique_ptr<uint8_t[]> scratch_{new uint8_t[kSlot]};
  std::unique_ptr<uint8_t[]> handover_{new uint8_t[kSlot]};  // deliver()'s copy
};

struct Server {
  const ServeOptions& opt;
  Log& log;
  std::unique_ptr<turn::Shared> shared;
  std::vector<ListenerSpec> specs;
  // sockets[w][j]: worker w's socket for specs[j].
  std::vector<std::vector<UniqueFd>> sockets;
  std::vector<std::unique_ptr<Worker>> workers;
  std::atomic<bool> stop{false};
  std::atomic<int> connections{0};  // TCP/TLS, all workers
  SSL_CTX* tls = nullptr;
  int64_t started_ms = 0;
  ~Server() {
    if (tls) SSL_CTX_free(tls);
  }
};

// ---- Worker -----------------------------------------------------------------

Worker::Worker(int index, Server& srv)
    : index_(index), srv_(srv), rng_(std::random_device{}() + index) {
  engine_ = std::make_unique<turn::Engine>(*srv.shared, *this, stats);
}

Status Worker::init() {
  ep_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!ep_) return errno_status("epoll_create1", errno);
  wake_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_) return errno_status("eventfd", errno);
  epoll_event ev{EPOLLIN, {}};
  ev.data.u64 = tag(nullptr, kTagWake);
  epoll_ctl(ep_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
  for (size_t j = 0; j < srv_.specs.size(); ++j) {
    epoll_event e{EPOLLIN, {}};
    e.data.u64 = (uint64_t{j} << 3) | (srv_.specs[j].proto == "udp" ? kTagUdp : kTagTcpListen);
    if (epoll_ctl(ep_.get(), EPOLL_CTL_ADD, srv_.sockets[index_][j].get(), &e) < 0)
      return errno_status("epoll_ctl", errno);
  }
  return Status::ok();
}

void Worker::wake() {
  uint64_t one = 1;
  ssize_t r = ::write(wake_.get(), &one, sizeof one);
  (void)r;
}

void Worker::run() {
  epoll_event evs[64];
  int64_t next_expire = mono_ms() + 1000;
  const int64_t coalesce_ns = int64_t{srv_.opt.coalesce_us} * 1000;
  // The relay rate over the last millisecond or so decides whether a short
  // sleep pays: only when it should gather two datagrams or more (below
  // that the sleep would be one more wakeup per packet, not one less).
  int64_t bucket_ns = mono_ns();
  uint64_t bucket_base = 0;
  int64_t per_ms = 0;  // datagrams relayed per millisecond, last bucket
  // The default timer slack (50 us) would stretch the sleep past the bound
  // the man page gives.
  if (coalesce_ns > 0) prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  while (!srv_.stop.load(std::memory_order_relaxed)) {
    // One clock read per wakeup: everything in the batch uses it. Only
    // coalescing needs to know "ready now?" before it waits; without it one
    // blocking epoll_wait does (at 25,000 datagrams/s most wakeups bring one
    // datagram, and every system call counts).
    int n = 0;
    if (coalesce_ns > 0) {
      n = epoll_wait(ep_.get(), evs, 64, 0);
      if (n == 0 && per_ms * coalesce_ns >= 2000000) {
        // Data is flowing and nothing is ready: let a batch gather. Each
        // wakeup costs a context switch and a round of syscalls, whether
        // it brings one datagram or sixty-four.
        timespec ts{0, static_cast<long>(coalesce_ns)};
        nanosleep(&ts, nullptr);
        n = epoll_wait(ep_.get(), evs, 64, 0);
      }
    }
    if (n == 0) {
      int timeout = static_cast<int>(std::max<int64_t>(0, next_expire - mono_ms()));
      n = epoll_wait(ep_.get(), evs, 64, timeout);
    }
    int64_t now_ns = mono_ns();
    now_ms_ = now_ns / 1000000;
    for (int i = 0; i < n; ++i) {
      uint64_t d = evs[i].data.u64;
      switch (d & 7) {
        case kTagAlloc: on_relay(reinterpret_cast<turn::Allocation*>(d & ~uint64_t{7})); break;
        case kTagUdp: on_udp(static_cast<uint32_t>(d >> 3)); break;
        case kTagTcpListen: on_accept(static_cast<uint32_t>(d >> 3)); break;
        case kTagConn: on_conn(reinterpret_cast<Conn*>(d & ~uint64_t{7}), evs[i].events); break;
        case kTagWake: {
          uint64_t v;
          ssize_t r = ::read(wake_.get(), &v, sizeof v);
          (void)r;
          break;
        }
      }
    }
    flush_conns();
    publish();
    if (now_ns - bucket_ns >= 1000000) {
      uint64_t relayed = stats.client_to_peer_packets.load(std::memory_order_relaxed) +
                         stats.peer_to_client_packets.load(std::memory_order_relaxed);
      per_ms = static_cast<int64_t>(relayed - bucket_base) * 1000000 / (now_ns - bucket_ns);
      bucket_ns = now_ns;
      bucket_base = relayed;
    }
    if (now_ms_ >= next_expire) {
      engine_->expire(now_ms_);
      engine_->end_revoked(static_cast<int64_t>(::time(nullptr)));
      conn_sweep();
      next_expire = now_ms_ + 1000;
    }
    engine_->collect();
    dead_conns_.clear();
  }
  engine_->clear();
  dirty_.clear();
  for (auto& [id, c] : conns_)
    if (c->ssl) SSL_shutdown(c->ssl);
  srv_.connections.fetch_sub(static_cast<int>(conns_.size()));
  conns_.clear();
}

void Worker::queue_out(int fd, const SockAddr& to, const uint8_t* p, size_t len) {
  sockaddr_storage ss;
  socklen_t sl = to.to_sockaddr(&ss);
  tx_.add(fd, &ss, sl, p, len);
}

void Worker::on_udp(uint32_t j) {
  int fd = srv_.sockets[index_][j].get();
  for (int round = 0; round < 16; ++round) {
    rx_.prepare();
    int n = recvmmsg(fd, rx_.msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      uint8_t* p = rx_.slot(i) + kHeadroom;
      size_t len = rx_.msgs[i].msg_len;
      if (len < 4 || (rx_.msgs[i].msg_hdr.msg_flags & MSG_TRUNC)) continue;
      ClientKey key{SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&rx_.addrs[i])), j,
                    turn::kUdp};
      if (stun::looks_like_channel_data({p, len})) {
        auto cd = stun::parse_channel_data({p, len});
        if (!cd) continue;
        auto r = engine_->route_channel(key, cd->channel, cd->data.size(), now_ms_);
        if (r.alloc) forward(r, p + 4, cd->data.size());
      } else if ((p[0] & 0xC0) == 0) {
        // Control path: earlier data first (a Refresh may close a socket).
        flush_out();
        engine_->on_message(key, {p, len}, {now_ms_, static_cast<int64_t>(::time(nullptr))});
      }
    }
    flush_out();
    flush_conns();
    if (n < kBatch) break;
  }
}

void Worker::forward(const turn::Engine::Route& r, uint8_t* p, size_t len) {
  ++c2p_pkts_;
  c2p_bytes_ += len;
  if (!r.local) {
    queue_out(r.alloc->relay.fd, *r.peer, p, len);
    return;
  }
  // The internal hop: the peer is another allocation's relayed address on
  // this worker, which the engine has checked as its relay socket would
  // (see turn::Engine::Route). Handing the datagram straight to that
  // allocation's client saves a sendmmsg and a recvmmsg per datagram (the
  // kernel would loop it back to us).
  if (r.local_channel >= 0 && to_client(*r.local, r.alloc->relay.addr, r.local_channel, p, len)) {
    ++p2c_pkts_;
    p2c_bytes_ += len;
  }
}

bool Worker::to_client(turn::Allocation& a, const SockAddr& peer, int ch, uint8_t* p, size_t len) {
  Conn* conn = nullptr;
  if (a.client.transport == turn::kTcp) {
    auto it = conns_.find(a.client.conn);
    if (it == conns_.end() || it->second->dead) return false;
    conn = it->second.get();
    if (!conn->dirty) {
      conn->dirty = true;
      dirty_.push_back(conn);
    }
  }
  if (ch > 0) {
    // RFC 8656 section 12.5: ChannelData, header in the headroom; padded to
    // 4 bytes on streams.
    uint8_t* h = p - 4;
    stun::write_channel_data_header(h, static_cast<uint16_t>(ch), static_cast<uint16_t>(len));
    size_t olen = len + 4;
    if (conn) {
      size_t pad = (4 - len % 4) % 4;
      std::memset(p + len, 0, pad);
      conn_send(conn, h, olen + pad, false);
    } else {
      queue_out(srv_.sockets[index_][a.client.conn].get(), a.client.addr, h, olen);
    }
    return true;
  }
  auto m = turn::Engine::build_data_indication({scratch_.get(), kSlot}, peer, {p, len});
  if (m.empty()) return false;
  if (conn) {
    conn_send(conn, m.data(), m.size(), false);
  } else {
    // scratch_ is reused by the next indication: send this one now.
    flush_out();
    queue_out(srv_.sockets[index_][a.client.conn].get(), a.client.addr, m.data(), m.size());
    flush_out();
  }
  return true;
}

void Worker::flush_conns() {
  for (Conn* c : dirty_) {
    c->dirty = false;
    conn_flush(c);
  }
  dirty_.clear();
}

void Worker::publish() {
  if (c2p_pkts_) {
    stats.client_to_peer_packets.fetch_add(c2p_pkts_, std::memory_order_relaxed);
    stats.client_to_peer_bytes.fetch_add(c2p_bytes_, std::memory_order_relaxed);
  }
  if (p2c_pkts_) {
    stats.peer_to_client_packets.fetch_add(p2c_pkts_, std::memory_order_relaxed);
    stats.peer_to_client_bytes.fetch_add(p2c_bytes_, std::memory_order_relaxed);
  }
  c2p_pkts_ = c2p_bytes_ = p2c_pkts_ = p2c_bytes_ = 0;
}

void Worker::on_relay(turn::Allocation* a) {
  for (int round = 0; round < 16; ++round) {
    if (a->relay.fd < 0) break;  // deleted earlier in this loop iteration
    rx_.prepare();
    int n = recvmmsg(a->relay.fd, rx_.msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      uint8_t* p = rx_.slot(i) + kHeadroom;
      size_t len = rx_.msgs[i].msg_len;
      if ((rx_.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) || len > 0xFFFF) continue;
      SockAddr peer = SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&rx_.addrs[i]));
      int ch = engine_->on_peer_data(*a, peer, len, now_ms_);
      if (ch >= 0 && to_client(*a, peer, ch, p, len)) {
        ++p2c_pkts_;
        p2c_bytes_ += len;
      }
    }
    flush_out();
    flush_conns();
    if (n < kBatch) break;
  }
}

// ---- TCP / TLS ------------------------------------------------------------------

void Worker::on_accept(uint32_t j) {
  int lfd = srv_.sockets[index_][j].get();
  for (int k = 0; k < 64; ++k) {
    sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(lfd, reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) break;
    UniqueFd owned(fd);
    // Accepted and closed rather than left in the backlog: the client
    // learns at once, and the backlog stays free for when a slot opens.
    if (srv_.connections.fetch_add(1) >= srv_.opt.max_connections) {
      srv_.connections.fetch_sub(1);
      conns_refused.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->fd = std::move(owned);
    c->id = (next_conn_++ << 8) | static_cast<uint32_t>(index_ & 0xFF);
    if (c->id < 0x10000) c->id |= 0x10000;  // never a UDP listener index
    c->peer = SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
    c->in.resize(kConnInSmall);
    c->opened_ms = c->last_rx_ms = now_ms_;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bool ok = true;
    if (srv_.specs[j].proto == "tls") {
      c->ssl = SSL_new(srv_.tls);
      ok = c->ssl != nullptr;
      if (ok) {
        SSL_set_fd(c->ssl, fd);
        SSL_set_accept_state(c->ssl);
      }
    }
    epoll_event e{EPOLLIN | EPOLLRDHUP, {}};
    e.data.u64 = tag(c.get(), kTagConn);
    if (!ok || epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &e) < 0) {
      srv_.connections.fetch_sub(1);
      continue;
    }
    conns_open.fetch_add(1, std::memory_order_relaxed);
    conns_.emplace(c->id, std::move(c));
  }
}

// Once a second: connections that never got as far as a TURN message, and
// connections without an allocation that went quiet, are closed (each
// holds a slot of --max-connections and its buffers).
void Worker::conn_sweep() {
  const int64_t hs = int64_t{srv_.opt.handshake_timeout_s} * 1000;
  const int64_t idle = int64_t{srv_.opt.idle_timeout_s} * 1000;
  std::vector<Conn*> doomed;
  for (auto& [id, c] : conns_) {
    if (c->dead) continue;
    if (!c->greeted) {
      if (now_ms_ - c->opened_ms >= hs) doomed.push_back(c.get());
    } else if (now_ms_ - c->last_rx_ms >= idle && !engine_->find({c->peer, c->id, turn::kTcp})) {
      doomed.push_back(c.get());
    }
  }
  for (Conn* c : doomed) {
    conns_timed_out.fetch_add(1, std::memory_order_relaxed);
    conn_close(c);
  }
}

void Worker::on_conn(Conn* c, uint32_t events) {
  if (c->dead) return;
  if (events & (EPOLLERR | EPOLLHUP)) return conn_close(c);
  if (events & EPOLLOUT) conn_flush(c);
  if (!c->dead && (events & (EPOLLIN | EPOLLRDHUP))) conn_read(c);
}

void Worker::conn_read(Conn* c) {
  for (int round = 0; round < 16 && !c->dead; ++round) {
    size_t space = c->in.size() - c->in_len;
    ssize_t r;
    if (c->ssl) {
      ERR_clear_error();
      int n = SSL_read(c->ssl, c->in.data() + c->in_len, static_cast<int>(space));
      if (n <= 0) {
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) {
          conn_flush(c);
          break;
        }
        return conn_close(c);
      }
      r = n;
    } else {
      r = ::read(c->fd.get(), c->in.data() + c->in_len, space);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
      if (r <= 0) return conn_close(c);
    }
    c->in_len += static_cast<size_t>(r);
    c->last_rx_ms = now_ms_;
    // Frames: STUN (20-byte header + length) or ChannelData (4 + length,
    // padded to 4 on streams: RFC 8656 section 12.5).
    size_t off = 0;
    ClientKey key{c->peer, c->id, turn::kTcp};
    for (;;) {
      uint8_t* p = c->in.data() + off;
      auto fr = stun::next_stream_frame({p, c->in_len - off});
      if (fr.kind == stun::StreamFrame::Kind::Invalid) return conn_close(c);  // not TURN
      if (fr.kind == stun::StreamFrame::Kind::Incomplete) {
        // A frame larger than the buffer: grow it for this frame only.
        if (fr.size > c->in.size()) c->in.resize(std::min(fr.size, kConnInMax));
        break;
      }
      c->greeted = true;
      if (fr.kind == stun::StreamFrame::Kind::ChannelData) {
        uint16_t ch = static_cast<uint16_t>(p[0] << 8 | p[1]);
        size_t dlen = fr.length - 4;
        auto rt = engine_->route_channel(key, ch, dlen, now_ms_);
        if (rt.alloc) forward(rt, p + 4, dlen);
      } else {
        flush_out();
        engine_->on_message(key, {p, fr.size}, {now_ms_, static_cast<int64_t>(::time(nullptr))});
        if (c->dead) return;
      }
      off += fr.size;
    }
    flush_out();
    if (off) {
      std::memmove(c->in.data(), c->in.data() + off, c->in_len - off);
      c->in_len -= off;
    }
    if (c->in_len == 0 && c->in.size() > kConnInSmall) {
      std::vector<uint8_t>(kConnInSmall).swap(c->in);  // back to small after a big frame
    }
    if (c->in_len == c->in.size()) return conn_close(c);  // cannot happen with valid frames
  }
}

void Worker::conn_send(Conn* c, const uint8_t* p, size_t len, bool control) {
  if (c->dead) return;
  size_t pending = c->out.size() - c->out_off;
  if (pending + len > kConnOutCap) {
    if (control) {
      // It does not read what it asked for: dropping a reply would stall
      // an honest client, keeping it would let this one grow without bound.
      conns_overflowed.fetch_add(1, std::memory_order_relaxed);
      return conn_close(c);
    }
    tx_drops.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (c->out_off > 0 && c->out_off == c->out.size()) {
    c->out.clear();
    c->out_off = 0;
    c->frame_ends.clear();
    c->frames_done = 0;
  }
  c->out.insert(c->out.end(), p, p + len);
  if (c->ssl) c->frame_ends.push_back(c->out.size());
  if (control) conn_flush(c);
}

void Worker::conn_flush(Conn* c) {
  while (!c->dead && c->out_off < c->out.size()) {
    size_t left = c->out.size() - c->out_off;
    ssize_t r;
    if (c->ssl) {
      ERR_clear_error();
      while (c->frames_done < c->frame_ends.size() && c->frame_ends[c->frames_done] <= c->out_off)
        ++c->frames_done;
      size_t end = c->frames_done < c->frame_ends.size() ? c->frame_ends[c->frames_done] : c->out.size();
      int n = SSL_write(c->ssl, c->out.data() + c->out_off, static_cast<int>(end - c->out_off));
      if (n <= 0) {
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
        return conn_close(c);
      }
      r = n;
    } else {
      r = ::send(c->fd.get(), c->out.data() + c->out_off, left, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
      if (r < 0) return conn_close(c);
    }
    c->out_off += static_cast<size_t>(r);
  }
  if (c->dead) return;
  if (c->out_off == c->out.size()) {
    c->out.clear();
    if (c->out.capacity() > (256u << 10)) c->out.shrink_to_fit();  // a burst is over
    c->out_off = 0;
    c->frame_ends.clear();
    c->frames_done = 0;
  } else if (c->out_off > (1u << 20)) {
    c->out.erase(c->out.begin(), c->out.begin() + static_cast<long>(c->out_off));
    c->frame_ends.erase(c->frame_ends.begin(), c->frame_ends.begin() + static_cast<long>(c->frames_done));
    for (auto& e : c->frame_ends) e -= c->out_off;
    c->frames_done = 0;
    c->out_off = 0;
  }
  bool want = c->out_off < c->out.size();
  if (want != c->want_out) {
    c->want_out = want;
    epoll_event e{EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u), {}};
    e.data.u64 = tag(c, kTagConn);
    epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c->fd.get(), &e);
  }
}

void Worker::conn_close(Conn* c) {
  if (c->dead) return;
  c->dead = true;
  srv_.connections.fetch_sub(1);
  conns_open.fetch_sub(1, std::memory_order_relaxed);
  engine_->client_gone({c->peer, c->id, turn::kTcp});
  epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c->fd.get(), nullptr);
  auto it = conns_.find(c->id);
  if (it != conns_.end()) {
    dead_conns_.push_back(std::move(it->second));
    conns_.erase(it);
  }
}

// ---- turn::Io -------------------------------------------------------------------

Result<turn::RelaySocket> Worker::open_relay(int family, bool even_port, turn::Allocation* owner) {
  const auto& cfg = srv_.shared->config();
  const IpAddr* ip = nullptr;
  for (const auto& r : cfg.relay_ips)
    if (r.family == family) { ip = &r; break; }
  if (!ip) return unavailable("no relay address of that family");
  UniqueFd fd(socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return errno_status("socket", errno);
  set_buffers(fd.get(), srv_.opt.socket_buffer);
  uint32_t lo = cfg.relay_ports.lo, hi = cfg.relay_ports.hi, span = hi - lo + 1;
  uint32_t start = std::uniform_int_distribution<uint32_t>(0, span - 1)(rng_);
  SockAddr a{*ip, 0};
  bool bound = false;
  for (uint32_t k = 0; k < span && k < 4096; ++k) {
    uint32_t port = lo + (start + k) % span;
    if (even_port && (port & 1)) continue;
    a.port = static_cast<uint16_t>(port);
    sockaddr_storage ss;
    socklen_t sl = a.to_sockaddr(&ss);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), sl) == 0) {
      bound = true;
      break;
    }
    if (errno != EADDRINUSE && errno != EACCES) return errno_status("bind relay socket", errno);
  }
  if (!bound) return temp_failure("no free port in the relay range");
  epoll_event e{EPOLLIN, {}};
  e.data.u64 = tag(owner, kTagAlloc);
  if (epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd.get(), &e) < 0) return errno_status("epoll_ctl", errno);
  return turn::RelaySocket{fd.release(), a};
}

void Worker::close_relay(turn::RelaySocket& s) {
  if (s.fd < 0) return;
  epoll_ctl(ep_.get(), EPOLL_CTL_DEL, s.fd, nullptr);
  ::close(s.fd);
  s.fd = -1;
}

void Worker::reply(const ClientKey& to, stun::Bytes msg, uint32_t change) {
  if (msg.empty()) return;
  if (to.transport == turn::kTcp) {
    auto it = conns_.find(to.conn);
    if (it != conns_.end()) conn_send(it->second.get(), msg.data(), msg.size(), true);
    return;
  }
  uint32_t j = to.conn;
  if (change) {
    const auto& s = srv_.specs[j];
    int want_ip = s.ip_sel ^ ((change & stun::kChangeIp) ? 1 : 0);
    int want_port = s.port_sel ^ ((change & stun::kChangePort) ? 1 : 0);
    for (size_t k = 0; k < srv_.specs.size(); ++k) {
      const auto& o = srv_.specs[k];
      if (o.grid && o.proto == "udp" && o.ip_sel == want_ip && o.port_sel == want_port) {
        j = static_cast<uint32_t>(k);
        break;
      }
    }
  }
  sockaddr_storage ss;
  socklen_t sl = to.addr.to_sockaddr(&ss);
  ::sendto(srv_.sockets[index_][j].get(), msg.data(), msg.size(), MSG_DONTWAIT,
           reinterpret_cast<sockaddr*>(&ss), sl);
}

void Worker::send_to_peer(const turn::RelaySocket& from, const SockAddr& peer, stun::Bytes data) {
  sockaddr_storage ss;
  socklen_t sl = peer.to_sockaddr(&ss);
  ::sendto(from.fd, data.data(), data.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss), sl);
}

void Worker::deliver(turn::Allocation& to, const SockAddr& peer, int channel, stun::Bytes data) {
  // A Send indication's payload (slow path): copied so that the ChannelData
  // header has room in front of it.
  if (data.size() > kSlot - kHeadroom - 4) return;
  uint8_t* p = handover_.get() + kHeadroom;
  std::memcpy(p, data.data(), data.size());
  if (to_client(to, peer, channel, p, data.size())) {
    ++p2c_pkts_;
    p2c_bytes_ += data.size();
  }
  flush_out();  // handover_ is reused by the next one
}

bool Worker::origin(const ClientKey& from, uint32_t change, Origin* out) {
  if (from.transport != turn::kUdp || from.conn >= srv_.specs.size()) return change == 0;
  const auto& s = srv_.specs[from.conn];
  if (!s.grid) return change == 0;
  int ip_sel = s.ip_sel ^ ((change & stun::kChangeIp) ? 1 : 0);
  int port_sel = s.port_sel ^ ((change & stun::kChangePort) ? 1 : 0);
  for (const auto& o : srv_.specs) {
    if (!o.grid || o.proto != "udp") continue;
    if (o.ip_sel == ip_sel && o.port_sel == port_sel) out->response_origin = o.addr;
    if (o.ip_sel == 1 - s.ip_sel && o.port_sel == 1 - s.port_sel) out->other_address = o.addr;
  }
  return out->response_origin.has_value();
}

// ---- setup, stats, signals ------------------------------------------------------------

Status open_listeners(Server& srv, int threads) {
  srv.sockets.resize(static_cast<size_t>(threads));
  for (size_t j = 0; j < srv.specs.size(); ++j) {
    auto& spec = srv.specs[j];
    bool udp = spec.proto == "udp";
    // TCP on a --listen address shares the port UDP got (port 0).
    if (spec.proto == "tcp" && spec.addr.port == 0 && j > 0 && srv.specs[j - 1].proto == "udp" &&
        srv.specs[j - 1].addr.ip == spec.addr.ip)
      spec.addr.port = srv.specs[j - 1].addr.port;
    for (int w = 0; w < threads; ++w) {
      MESH_ASSIGN(UniqueFd fd, open_listener(spec.addr, udp, srv.opt.socket_buffer));
      if (w == 0 && spec.addr.port == 0) spec.addr = bound_address(fd.get());
      srv.sockets[static_cast<size_t>(w)].push_back(std::move(fd));
      // Later workers bind the port the first one got (port 0).
      if (w == 0 && spec.addr.port == 0) return internal_error("could not read the bound port");
    }
  }
  return Status::ok();
}

Json stats_json(const Server& srv) {
  Json workers = Json::array();
  uint64_t tot[14] = {};
  int64_t gauges[3] = {};
  int64_t conns = 0;
  uint64_t refused = 0, timed_out = 0, overflowed = 0, revoked = 0;
  for (const auto& w : srv.workers) {
    conns += w->conns_open.load();
    refused += w->conns_refused.load();
    timed_out += w->conns_timed_out.load();
    overflowed += w->conns_overflowed.load();
    const auto& s = w->stats;
    revoked += s.allocations_revoked.load();
    uint64_t v[14] = {s.requests.load(), s.auth_failures.load(), s.allocations_created.load(),
                      s.allocations_expired.load(), s.quota_rejections.load(),
                      s.forbidden_peers.load(), s.client_to_peer_packets.load(),
                      s.client_to_peer_bytes.load(), s.peer_to_client_packets.load(),
                      s.peer_to_client_bytes.load(),
                      s.dropped_no_permission.load() + s.dropped_no_channel.load() +
                          s.dropped_rate.load() + s.dropped_other.load() + w->tx_drops.load() + w->tx_batch_drops(),
                      s.bindings.load(), s.internal_packets.load(), s.internal_bytes.load()};
    for (int i = 0; i < 14; ++i) tot[i] += v[i];
    gauges[0] += s.allocations.load();
    gauges[1] += s.permissions.load();
    gauges[2] += s.channels.load();
  }
  auto creds = srv.shared->credentials();
  Json j{{"uptime_s", (mono_ms() - srv.started_ms) / 1000},
         {"allocations", gauges[0]},
         {"permissions", gauges[1]},
         {"channels", gauges[2]},
         {"users", creds->user_count()},
         {"auth_secrets", creds->secret_count()},
         {"requests", tot[0]},
         {"auth_failures", tot[1]},
         {"allocations_created", tot[2]},
         {"allocations_expired", tot[3]},
         {"quota_rejections", tot[4]},
         {"forbidden_peers", tot[5]},
         {"client_to_peer_packets", tot[6]},
         {"client_to_peer_bytes", tot[7]},
         {"peer_to_client_packets", tot[8]},
         {"peer_to_client_bytes", tot[9]},
         {"dropped_packets", tot[10]},
         {"binding_requests", tot[11]},
         {"internal_packets", tot[12]},
         {"internal_bytes", tot[13]},
         {"allocations_revoked", revoked},
         {"connections", conns},
         {"connections_refused", refused},
         {"connections_timed_out", timed_out},
         {"connections_overflowed", overflowed},
         {"threads", srv.workers.size()}};
  return j;
}

std::string prometheus(const Json& j) {
  struct M {
    const char* key;
    const char* type;
    const char* help;
  };
  static const M kMetrics[] = {
      {"allocations", "gauge", "Current TURN allocations"},
      {"permissions", "gauge", "Current permissions"},
      {"channels", "gauge", "Current channel bindings"},
      {"requests", "counter", "STUN/TURN requests received"},
      {"auth_failures", "counter", "Requests that failed authentication"},
      {"allocations_created", "counter", "Allocations created"},
      {"allocations_expired", "counter", "Allocations that expired"},
      {"quota_rejections", "counter", "Allocate requests refused by a quota (486)"},
      {"forbidden_peers", "counter", "Permission or channel requests refused (403)"},
      {"client_to_peer_packets", "counter", "Datagrams relayed from clients to peers"},
      {"client_to_peer_bytes", "counter", "Payload bytes relayed from clients to peers"},
      {"peer_to_client_packets", "counter", "Datagrams relayed from peers to clients"},
      {"peer_to_client_bytes", "counter", "Payload bytes relayed from peers to clients"},
      {"dropped_packets", "counter", "Datagrams dropped (no permission/channel, rate, full buffers)"},
      {"binding_requests", "counter", "STUN Binding requests answered"},
      {"internal_packets", "counter",
       "Datagrams relayed between two allocations of one worker without the kernel"},
      {"internal_bytes", "counter", "Payload bytes of internal_packets"},
      {"allocations_revoked", "counter", "Allocations ended because their credential was revoked"},
      {"connections", "gauge", "Open TCP/TLS connections"},
      {"connections_refused", "counter", "TCP/TLS connections closed at accept (--max-connections)"},
      {"connections_timed_out", "counter", "TCP/TLS connections closed by the handshake or idle timeout"},
      {"connections_overflowed", "counter",
       "TCP/TLS connections closed for not reading their replies (output cap)"},
      {"uptime_s", "gauge", "Seconds since start"},
  };
  std::string out;
  for (const auto& m : kMetrics) {
    std::string name = std::string("mesh_relay_") + m.key;
    if (std::string(m.type) == "counter" && !name.ends_with("_total")) name += "_total";
    out += "# HELP " + name + " " + m.help + "\n# TYPE " + name + " " + m.type + "\n" + name +
           " " + j.value(m.key, Json(0)).dump() + "\n";
  }
  return out;
}

void serve_metrics(int lfd, const Server& srv) {
  for (int k = 0; k < 16; ++k) {
    UniqueFd c(accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) return;
    timeval tv{1, 0};
    setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char buf[2048];
    size_t got = 0;
    while (got < sizeof buf - 1) {
      ssize_t r = ::read(c.get(), buf + got, sizeof buf - 1 - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
      buf[got] = 0;
      if (std::strstr(buf, "\r\n\r\n") || std::strstr(buf, "\n\n")) break;
    }
    buf[got] = 0;
    std::string_view req(buf, got);
    std::string body, type = "text/plain; version=0.0.4", status = "200 OK";
    if (req.starts_with("GET /metrics")) {
      body = prometheus(stats_json(srv));
    } else if (req.starts_with("GET /stats")) {
      body = dump_json(stats_json(srv)) + "\n";
      type = "application/json";
    } else {
      status = "404 Not Found";
      body = "not found: try /metrics or /stats\n";
    }
    std::string resp = "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
                       "\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nConnection: close\r\n\r\n" + body;
    ssize_t w = ::send(c.get(), resp.data(), resp.size(), MSG_NOSIGNAL);
    (void)w;
  }
}

// The addresses of this host a TURN user must not reach beyond the relay
// ports (turn::Shared::peer_allowed): the listen addresses and every
// interface address at start (a wildcard listener answers on all of them).
std::vector<IpAddr> host_addresses(const ServeOptions& opt) {
  std::vector<IpAddr> out;
  auto add = [&](const IpAddr& ip) {
    if (std::find(out.begin(), out.end(), ip) == out.end()) out.push_back(ip);
  };
  for (const auto& a : opt.listen) add(a.ip);
  for (const auto& a : opt.tls_listen) add(a.ip);
  if (opt.alt_listen) add(opt.alt_listen->ip);
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i; i = i->ifa_next)
      if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6))
        add(SockAddr::from_sockaddr(i->ifa_addr).ip);
    freeifaddrs(ifs);
  }
  return out;
}

}  // namespace

Status serve(const ServeOptions& opt, Log& log) {
  Server srv{opt, log};
  srv.started_ms = mono_ms();
  turn::Config cfg = opt.turn;
  // Specs: UDP (+TCP) on each --listen, TLS on each --tls-listen, and the
  // RFC 5780 grid around listen[0] when --alt-listen is given.
  for (const auto& a : opt.listen) {
    srv.specs.push_back({a, "udp"});
    if (opt.tcp) srv.specs.push_back({a, "tcp"});
  }
  for (const auto& a : opt.tls_listen) srv.specs.push_back({a, "tls"});
  if (opt.alt_listen) {
    if (opt.listen.empty()) return usage_error("--alt-listen needs a --listen address");
    if (opt.listen[0].port == 0 || opt.alt_listen->port == 0)
      return usage_error("--alt-listen needs fixed ports on both addresses (no port 0)");
    if (opt.alt_listen->ip == opt.listen[0].ip || opt.alt_listen->port == opt.listen[0].port)
      return usage_error("--alt-listen needs a different IP and a different port");
    srv.specs[0].grid = true;
    SockAddr p = opt.listen[0], a = *opt.alt_listen;
    srv.specs.push_back({SockAddr{p.ip, a.port}, "udp", 0, 1, true});
    srv.specs.push_back({SockAddr{a.ip, p.port}, "udp", 1, 0, true});
    srv.specs.push_back({SockAddr{a.ip, a.port}, "udp", 1, 1, true});
  }
  if (srv.specs.empty()) return usage_error("no --listen address");
  if (cfg.relay_ips.empty()) {
    for (const auto& a : opt.listen) {
      bool any = a.ip == IpAddr{a.ip.family, {}};
      if (any) return usage_error("listening on a wildcard address: give --relay-ip");
      if (std::find(cfg.relay_ips.begin(), cfg.relay_ips.end(), a.ip) == cfg.relay_ips.end())
        cfg.relay_ips.push_back(a.ip);
    }
    if (cfg.relay_ips.empty()) return usage_error("give --relay-ip");
  }
  cfg.self_ips = host_addresses(opt);
  MESH_ASSIGN(auto creds, turn::Credentials::load(opt.users_file, opt.secret_file, opt.realm));
  if (creds->empty()) return Status(Exit::Config, "no credentials in the users or secret file");
  srv.shared = std::make_unique<turn::Shared>(cfg, std::move(creds));

  if (!opt.tls_listen.empty()) {
    if (opt.tls_cert.empty() || opt.tls_key.empty())
      return usage_error("TLS needs --tls-cert and --tls-key");
    srv.tls = SSL_CTX_new(TLS_server_method());
    if (!srv.tls) return internal_error("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(srv.tls, TLS1_2_VERSION);
    // RELEASE_BUFFERS: an idle connection keeps no 34 KiB of record buffers.
    SSL_CTX_set_mode(srv.tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(srv.tls, opt.tls_cert.c_str()) != 1)
      return Status(Exit::Config, "cannot load TLS certificate " + opt.tls_cert);
    if (SSL_CTX_use_PrivateKey_file(srv.tls, opt.tls_key.c_str(), SSL_FILETYPE_PEM) != 1)
      return Status(Exit::Config, "cannot load TLS key " + opt.tls_key);
  }

  // Signals: blocked here before any thread starts, so workers inherit the mask.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  UniqueFd sfd(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd) return errno_status("signalfd", errno);

  int threads = std::max(1, opt.threads);
  MESH_TRY(open_listeners(srv, threads));
  std::unique_ptr<RevocationFollower> follower;
  if (!opt.revocations_urls.empty()) {
    follower = std::make_unique<RevocationFollower>(opt.revocations_urls, opt.secret_file, *srv.shared, log);
    MESH_TRY(follower->start());
  }
  UniqueFd metrics;
  if (opt.metrics) {
    MESH_ASSIGN(metrics, open_listener(*opt.metrics, false, 0));
  }
  for (int w = 0; w < threads; ++w) {
    srv.workers.push_back(std::make_unique<Worker>(w, srv));
    MESH_TRY(srv.workers.back()->init());
  }
  std::vector<std::thread> ts;
  for (auto& w : srv.workers) ts.emplace_back([&w] { w->run(); });

  if (opt.on_listening) {
    for (const auto& s : srv.specs) opt.on_listening(s.proto + " " + s.addr.to_string());
    if (metrics) opt.on_listening("metrics " + bound_address(metrics.get()).to_string());
  }
  log.info("serving with " + std::to_string(threads) + " worker thread(s)");

  auto write_stats = [&] {
    if (opt.stats_file.empty()) return;
    Status s = write_file_atomic(opt.stats_file, dump_json(stats_json(srv), true) + "\n", 0644);
    if (!s) log.warn("stats: " + s.message());
  };
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  epoll_event e{EPOLLIN, {}};
  e.data.u32 = 1;
  epoll_ctl(ep.get(), EPOLL_CTL_ADD, sfd.get(), &e);
  if (metrics) {
    e.data.u32 = 2;
    epoll_ctl(ep.get(), EPOLL_CTL_ADD, metrics.get(), &e);
  }
  Status result;
  int64_t next_stats = mono_ms();
  while (true) {
    int timeout = opt.stats_file.empty() ? -1 : static_cast<int>(std::max<int64_t>(0, next_stats - mono_ms()));
    epoll_event evs[4];
    int n = epoll_wait(ep.get(), evs, 4, timeout);
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u32 == 2) {
        serve_metrics(metrics.get(), srv);
        continue;
      }
      signalfd_siginfo si;
      while (::read(sfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
          stop = true;
        } else if (si.ssi_signo == SIGHUP) {
          auto c = turn::Credentials::load(opt.users_file, opt.secret_file, opt.realm);
          if (!c) {
            log.error("reload failed, keeping the old credentials: " + c.status().message());
          } else {
            srv.shared->set_credentials(std::move(*c));
            log.info("credentials reloaded");
          }
        } else if (si.ssi_signo == SIGUSR1) {
          write_stats();
        }
      }
    }
    if (stop) break;
    if (!opt.stats_file.empty() && mono_ms() >= next_stats) {
      write_stats();
      next_stats = mono_ms() + opt.stats_interval_ms;
    }
  }
  log.info("shutting down");
  if (follower) follower->stop();
  srv.stop.store(true);
  for (auto& w : srv.workers) w->wake();
  for (auto& t : ts) t.join();
  write_stats();
  return result;
}

}  // namespace mesh::relay
