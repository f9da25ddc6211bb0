#include "punch/transport.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/fd.h"
#include "rawsock/rawsock.h"

namespace mesh::punch {

Result<SocketMode> parse_socket_mode(std::string_view s) {
  if (s == "auto") return SocketMode::Auto;
  if (s == "socket") return SocketMode::Plain;
  if (s == "raw") return SocketMode::Raw;
  return usage_error("unknown socket mode '" + std::string(s) + "' (auto, socket or raw)");
}

namespace {

// Waits for any of `fds` to be readable; returns its index or -1 on timeout.
Result<int> wait_readable(const std::vector<int>& fds, int timeout_ms) {
  pollfd p[2] = {};
  size_t n = std::min<size_t>(fds.size(), 2);
  for (size_t i = 0; i < n; ++i) p[i] = {fds[i], POLLIN, 0};
  int r = ::poll(p, n, timeout_ms);
  if (r < 0) {
    if (errno == EINTR) return -1;
    return errno_status("poll", errno);
  }
  for (size_t i = 0; i < n; ++i)
    if (p[i].revents & (POLLIN | POLLERR)) return static_cast<int>(i);
  return -1;
}

class PlainTransport final : public Transport {
 public:
  PlainTransport(uint16_t port, UniqueFd v4, UniqueFd v6)
      : port_(port), v4_(std::move(v4)), v6_(std::move(v6)) {}

  Status send(const SockAddr& to, std::span<const uint8_t> data, int ttl) override {
    bool is4 = to.ip.is_v4();
    int fd = is4 ? v4_.get() : v6_.get();
    if (fd < 0) return unavailable("no IPv6 socket: cannot send to " + to.to_string());
    int& cur = is4 ? ttl4_ : ttl6_;
    if (cur != ttl) {
      int v = ttl > 0 ? ttl : -1;
      if (::setsockopt(fd, is4 ? IPPROTO_IP : IPPROTO_IPV6, is4 ? IP_TTL : IPV6_UNICAST_HOPS, &v,
                       sizeof v) != 0)
        return errno_status("setting the TTL", errno);
      cur = ttl;
    }
    sockaddr_storage ss;
    socklen_t sl = to.to_sockaddr(&ss);
    if (::sendto(fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&ss), sl) < 0) {
      // Unreachable destinations are a normal outcome of probing candidates.
      if (errno == ENETUNREACH || errno == EHOSTUNREACH || errno == EINVAL ||
          errno == EAFNOSUPPORT || errno == EPERM || errno == ECONNREFUSED)
        return unavailable("sending to " + to.to_string() + ": " + std::strerror(errno));
      return errno_status("sending to " + to.to_string(), errno);
    }
    return Status::ok();
  }

  Result<std::optional<Received>> recv(int timeout_ms, std::span<uint8_t> buf) override {
    std::vector<int> fds{v4_.get()};
    if (v6_) fds.push_back(v6_.get());
    MESH_ASSIGN(int i, wait_readable(fds, timeout_ms));
    if (i < 0) return std::optional<Received>{};
    sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = ::recvfrom(fds[static_cast<size_t>(i)], buf.data(), buf.size(), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &fl);
    if (n < 0) {
      // ICMP errors surface as ECONNREFUSED etc. on some kernels: not fatal.
      return std::optional<Received>{};
    }
    return std::optional<Received>{
        Received{SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&from)), size_t(n)}};
  }

  std::vector<int> fds() const override {
    std::vector<int> v{v4_.get()};
    if (v6_) v.push_back(v6_.get());
    return v;
  }
  std::string mode() const override { return "socket"; }
  uint16_t port() const override { return port_; }

 private:
  uint16_t port_;
  UniqueFd v4_, v6_;
  int ttl4_ = 0, ttl6_ = 0;
};

class RawTransport final : public Transport {
 public:
  explicit RawTransport(rawsock::RawUdp raw) : raw_(std::move(raw)) {}

  Status send(const SockAddr& to, std::span<const uint8_t> data, int ttl) override {
    return raw_.send(to, data, ttl);
  }

  Result<std::optional<Received>> recv(int timeout_ms, std::span<uint8_t> buf) override {
    auto fds = raw_.fds();
    MESH_ASSIGN(int i, wait_readable(fds, timeout_ms));
    if (i < 0) return std::optional<Received>{};
    uint8_t pkt[65536];
    MESH_ASSIGN(auto v, raw_.read(fds[static_cast<size_t>(i)], pkt));
    if (!v || v->payload.size() > buf.size()) return std::optional<Received>{};
    std::memcpy(buf.data(), v->payload.data(), v->payload.size());
    return std::optional<Received>{Received{v->src, v->payload.size()}};
  }

  std::vector<int> fds() const override { return raw_.fds(); }
  std::string mode() const override { return "raw"; }
  uint16_t port() const override { return raw_.port(); }

 private:
  rawsock::RawUdp raw_;
};

// Binds a UDP socket of `family` to port P. Returns an invalid fd with
// *in_use set when the port is taken.
Result<UniqueFd> bind_udp(int family, uint16_t port, bool* in_use) {
  UniqueFd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    if (family == AF_INET6 && errno == EAFNOSUPPORT) return UniqueFd();
    return errno_status("socket", errno);
  }
  sockaddr_storage ss{};
  socklen_t sl;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    sl = sizeof *a;
  } else {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    sl = sizeof *a;
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    if (errno == EADDRINUSE) {
      *in_use = true;
      return UniqueFd();
    }
    if (family == AF_INET6 && (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT)) return UniqueFd();
    return errno_status("binding UDP port " + std::to_string(port), errno);
  }
  return fd;
}

}  // namespace

Result<int> wait_any(const std::vector<Transport*>& ts, int timeout_ms) {
  std::vector<pollfd> p;
  std::vector<int> owner;
  for (size_t i = 0; i < ts.size(); ++i)
    for (int fd : ts[i]->fds()) {
      p.push_back({fd, POLLIN, 0});
      owner.push_back(static_cast<int>(i));
    }
  int r = ::poll(p.data(), p.size(), timeout_ms);
  if (r < 0) {
    if (errno == EINTR) return -1;
    return errno_status("poll", errno);
  }
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i].revents & (POLLIN | POLLERR)) return owner[i];
  return -1;
}

Result<std::unique_ptr<Transport>> open_ephemeral() {
  bool in_use = false;
  MESH_ASSIGN(UniqueFd v4, bind_udp(AF_INET, 0, &in_use));
  sockaddr_in me{};
  socklen_t ml = sizeof me;
  if (::getsockname(v4.get(), reinterpret_cast<sockaddr*>(&me), &ml) != 0)
    return errno_status("getsockname", errno);
  uint16_t port = ntohs(me.sin_port);
  UniqueFd v6;
  auto r6 = bind_udp(AF_INET6, port, &in_use);  // same port if free, else IPv4 only
  if (r6) v6 = std::move(*r6);
  return std::unique_ptr<Transport>(
      std::make_unique<PlainTransport>(port, std::move(v4), std::move(v6)));
}

Result<std::unique_ptr<Transport>> open_transport(uint16_t port, SocketMode mode) {
  if (port == 0) return usage_error("--port must be 1-65535");
  if (mode != SocketMode::Raw) {
    bool in_use = false;
    MESH_ASSIGN(UniqueFd v4, bind_udp(AF_INET, port, &in_use));
    UniqueFd v6;
    if (!in_use) { MESH_ASSIGN(v6, bind_udp(AF_INET6, port, &in_use)); }
    if (!in_use) {
      return std::unique_ptr<Transport>(
          std::make_unique<PlainTransport>(port, std::move(v4), std::move(v6)));
    }
    if (mode == SocketMode::Plain)
      return temp_failure("UDP port " + std::to_string(port) +
                          " is in use (by WireGuard?); use --socket raw or auto");
  }
  MESH_ASSIGN(auto raw, rawsock::RawUdp::open(port));
  return std::unique_ptr<Transport>(std::make_unique<RawTransport>(std::move(raw)));
}

}  // namespace mesh::punch
