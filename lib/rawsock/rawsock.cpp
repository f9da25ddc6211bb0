#include "rawsock/rawsock.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace mesh::rawsock {
namespace {

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
void wr16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

uint32_t sum_bytes(uint32_t acc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += rd16(p + i);
  if (n & 1) acc += static_cast<uint32_t>(p[n - 1]) << 8;
  return acc;
}

sock_filter stmt(uint16_t code, uint32_t k) { return BPF_STMT(code, k); }
sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
  return BPF_JUMP(code, k, jt, jf);
}

}  // namespace

std::vector<sock_filter> stun_filter_v4(uint16_t port) {
  // The raw socket hands the filter the packet from the IPv4 header on.
  //   0: ldb [0] & 0xf0 == 0x40          IPv4
  //   3: ldh [6] & 0x1fff == 0           first fragment only (offset 0)
  //   5: ldxb 4*([0]&0xf)                X = header length, options included
  //   6: ldh [x+2] == port               UDP destination port
  //   8: ld [x+12] == magic cookie       8 bytes of UDP header + 4 into STUN
  return {
      stmt(BPF_LD | BPF_B | BPF_ABS, 0),
      stmt(BPF_ALU | BPF_AND | BPF_K, 0xf0),
      jump(BPF_JMP | BPF_JEQ | BPF_K, 0x40, 0, 8),
      stmt(BPF_LD | BPF_H | BPF_ABS, 6),
      jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 6, 0),
      stmt(BPF_LDX | BPF_B | BPF_MSH, 0),
      stmt(BPF_LD | BPF_H | BPF_IND, 2),
      jump(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 3),
      stmt(BPF_LD | BPF_W | BPF_IND, 12),
      jump(BPF_JMP | BPF_JEQ | BPF_K, kStunMagicCookie, 0, 1),
      stmt(BPF_RET | BPF_K, 0xffff),
      stmt(BPF_RET | BPF_K, 0),
  };
}

std::vector<sock_filter> stun_filter_v6(uint16_t port) {
  // IPv6 raw sockets never include the IPv6 header (RFC 3542 section 3);
  // extension headers are already consumed, so offsets are fixed.
  return {
      stmt(BPF_LD | BPF_H | BPF_ABS, 2),
      jump(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 3),
      stmt(BPF_LD | BPF_W | BPF_ABS, 12),
      jump(BPF_JMP | BPF_JEQ | BPF_K, kStunMagicCookie, 0, 1),
      stmt(BPF_RET | BPF_K, 0xffff),
      stmt(BPF_RET | BPF_K, 0),
  };
}

uint16_t udp_checksum(const IpAddr& src, const IpAddr& dst, Bytes udp) {
  uint32_t acc = 0;
  acc = sum_bytes(acc, src.bytes.data(), src.size());
  acc = sum_bytes(acc, dst.bytes.data(), dst.size());
  acc += IPPROTO_UDP;
  acc += static_cast<uint32_t>(udp.size() & 0xffff);
  acc += static_cast<uint32_t>(udp.size() >> 16);
  acc = sum_bytes(acc, udp.data(), udp.size());
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  uint16_t c = static_cast<uint16_t>(~acc);
  return c == 0 ? 0xffff : c;  // RFC 768: a computed 0 is sent as all ones
}

size_t build_udp(std::span<uint8_t> out, const SockAddr& src, const SockAddr& dst, Bytes payload) {
  size_t len = 8 + payload.size();
  if (len > 0xffff || out.size() < len || src.ip.family != dst.ip.family) return 0;
  wr16(out.data(), src.port);
  wr16(out.data() + 2, dst.port);
  wr16(out.data() + 4, static_cast<uint16_t>(len));
  wr16(out.data() + 6, 0);
  if (!payload.empty()) std::memcpy(out.data() + 8, payload.data(), payload.size());
  wr16(out.data() + 6, udp_checksum(src.ip, dst.ip, out.first(len)));
  return len;
}

Result<UdpView> parse_ipv4_udp(Bytes p) {
  if (p.size() < 20) return data_error("IPv4: packet shorter than 20 bytes");
  if ((p[0] >> 4) != 4) return data_error("IPv4: version is not 4");
  size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > p.size()) return data_error("IPv4: bad header length");
  size_t total = rd16(p.data() + 2);
  if (total < ihl || total > p.size()) return data_error("IPv4: bad total length");
  if ((rd16(p.data() + 6) & 0x3fff) != 0) return data_error("IPv4: fragment");
  if (p[9] != IPPROTO_UDP) return data_error("IPv4: not UDP");
  IpAddr src, dst;
  src.family = dst.family = AF_INET;
  std::memcpy(src.bytes.data(), p.data() + 12, 4);
  std::memcpy(dst.bytes.data(), p.data() + 16, 4);
  return parse_udp(p.subspan(ihl, total - ihl), src, dst);
}

Result<UdpView> parse_udp(Bytes d, const IpAddr& src, const IpAddr& dst) {
  if (d.size() < 8) return data_error("UDP: datagram shorter than its header");
  size_t len = rd16(d.data() + 4);
  if (len < 8 || len > d.size()) return data_error("UDP: bad length");
  UdpView v;
  v.src = SockAddr{src, rd16(d.data())};
  v.dst = SockAddr{dst, rd16(d.data() + 2)};
  v.payload = d.subspan(8, len - 8);
  return v;
}

static Result<UniqueFd> open_raw(int family, uint16_t port) {
  UniqueFd fd(::socket(family, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_UDP));
  if (!fd) {
    int e = errno;
    if (e == EPERM || e == EACCES)
      return no_permission("raw socket: need CAP_NET_RAW (run as root) to share port " +
                           std::to_string(port) + " with its owner");
    return errno_status("raw socket", e);
  }
  auto prog = family == AF_INET ? stun_filter_v4(port) : stun_filter_v6(port);
  sock_fprog fp{static_cast<unsigned short>(prog.size()), prog.data()};
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) != 0)
    return errno_status("SO_ATTACH_FILTER", errno);
  // Datagrams queued before the filter was attached may be anything: drain.
  uint8_t junk[2048];
  for (int i = 0; i < 4096 && ::recv(fd.get(), junk, sizeof junk, 0) >= 0; ++i) {
  }
  return fd;
}

Result<RawUdp> RawUdp::open(uint16_t port) {
  RawUdp r;
  r.port_ = port;
  MESH_ASSIGN(r.fd4_, open_raw(AF_INET, port));
  auto v6 = open_raw(AF_INET6, port);
  if (v6) {
    r.fd6_ = std::move(*v6);
  } else if (v6.status().code() == Exit::NoPerm) {
    return v6.status();
  }  // else: no IPv6 in this kernel/namespace; IPv4 only
  return r;
}

std::vector<int> RawUdp::fds() const {
  std::vector<int> v{fd4_.get()};
  if (fd6_) v.push_back(fd6_.get());
  return v;
}

Result<IpAddr> RawUdp::source_for(const SockAddr& to) {
  for (const auto& [d, s] : sources_)
    if (d == to.ip) return s;
  // Let the kernel's routing pick the source address, as it will for the
  // datagram itself: connect() a throwaway UDP socket and ask its name.
  UniqueFd u(::socket(to.ip.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!u) return errno_status("socket", errno);
  sockaddr_storage ss;
  socklen_t sl = to.to_sockaddr(&ss);
  if (::connect(u.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0)
    return unavailable("no route to " + to.ip.to_string() + ": " + std::strerror(errno));
  sockaddr_storage me;
  socklen_t ml = sizeof me;
  if (::getsockname(u.get(), reinterpret_cast<sockaddr*>(&me), &ml) != 0)
    return errno_status("getsockname", errno);
  IpAddr src = SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&me)).ip;
  if (sources_.size() > 256) sources_.clear();
  sources_.emplace_back(to.ip, src);
  return src;
}

Status RawUdp::send(const SockAddr& to, Bytes payload, int ttl) {
  bool v4 = to.ip.is_v4();
  int fd = v4 ? fd4_.get() : fd6_.get();
  if (fd < 0) return unavailable("no IPv6 raw socket: cannot send to " + to.to_string());
  MESH_ASSIGN(IpAddr src, source_for(to));
  int& cur = v4 ? ttl4_ : ttl6_;
  if (cur != ttl) {
    int v = ttl > 0 ? ttl : -1;  // -1 restores the system default
    if (::setsockopt(fd, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_TTL : IPV6_UNICAST_HOPS, &v,
                     sizeof v) != 0)
      return errno_status("setting the TTL", errno);
    cur = ttl;
  }
  uint8_t buf[2048];
  size_t n = build_udp(buf, SockAddr{src, port_}, to, payload);
  if (n == 0) return data_error("datagram too large for the raw socket");
  sockaddr_storage ss;
  socklen_t sl = SockAddr{to.ip, 0}.to_sockaddr(&ss);  // port must be 0 on raw sockets
  if (::sendto(fd, buf, n, 0, reinterpret_cast<sockaddr*>(&ss), sl) < 0) {
    int e = errno;
    // A destination we cannot reach (no route, refused by a local firewall:
    // EPERM from netfilter) is a normal outcome of probing, not a failure
    // of the socket.
    if (e == ENETUNREACH || e == EHOSTUNREACH || e == EPERM || e == EACCES || e == EINVAL ||
        e == EMSGSIZE || e == EADDRNOTAVAIL)
      return unavailable("sending to " + to.to_string() + ": " + std::strerror(e));
    return errno_status("sending to " + to.to_string(), e);
  }
  return Status::ok();
}

Result<std::optional<UdpView>> RawUdp::read(int fd, std::span<uint8_t> buf) {
  sockaddr_storage from;
  socklen_t fl = sizeof from;
  ssize_t n = ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return std::optional<UdpView>{};
    return errno_status("raw socket receive", errno);
  }
  Bytes pkt(buf.data(), static_cast<size_t>(n));
  Result<UdpView> v = data_error("unknown family");
  if (fd == fd4_.get()) {
    v = parse_ipv4_udp(pkt);
  } else {
    SockAddr s = SockAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&from));
    IpAddr any;
    any.family = AF_INET6;  // the destination address is not needed by callers
    v = parse_udp(pkt, s.ip, any);
  }
  if (!v || v->dst.port != port_) return std::optional<UdpView>{};
  return std::optional<UdpView>{*v};
}

}  // namespace mesh::rawsock
