#include "punch/discover.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>

#include "stun/stun.h"

namespace mesh::punch {

using std::chrono::duration;
using std::chrono::milliseconds;

Result<SockAddr> resolve_hostport(const std::string& text) {
  if (auto direct = SockAddr::parse(text)) {
    if (direct->port == 0) return data_error("invalid server '" + text + "': port 0");
    return *direct;
  }
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return data_error("invalid server '" + text + "': expected HOST:PORT");
  std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  if (host.front() == '[') return data_error("invalid server '" + text + "'");
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return data_error("invalid server '" + text + "': bad port");
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc == EAI_SERVICE) return data_error("invalid server '" + text + "': bad port");
  if (rc != 0 || !res)
    return unavailable("cannot resolve '" + host + "': " + ::gai_strerror(rc));
  SockAddr out = SockAddr::from_sockaddr(res->ai_addr);
  ::freeaddrinfo(res);
  if (out.port == 0) return data_error("invalid server '" + text + "': port 0");
  return out;
}

std::vector<IpAddr> local_addresses() {
  std::vector<IpAddr> out;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) return out;
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
    if (i->ifa_flags & (IFF_LOOPBACK | IFF_POINTOPOINT)) continue;
    int fam = i->ifa_addr->sa_family;
    if (fam != AF_INET && fam != AF_INET6) continue;
    IpAddr a = SockAddr::from_sockaddr(i->ifa_addr).ip;
    if (!a.is_v4() && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80) continue;  // fe80::/10
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  ::freeifaddrs(ifa);
  // IPv4 first: it is what most peers can use.
  std::stable_sort(out.begin(), out.end(),
                   [](const IpAddr& a, const IpAddr& b) { return a.is_v4() && !b.is_v4(); });
  return out;
}

std::vector<Prefix> local_subnets() {
  std::vector<Prefix> out;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) return out;
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || !i->ifa_netmask || !(i->ifa_flags & IFF_UP)) continue;
    if (i->ifa_flags & (IFF_LOOPBACK | IFF_POINTOPOINT)) continue;
    int fam = i->ifa_addr->sa_family;
    if (fam != AF_INET && fam != AF_INET6) continue;
    IpAddr a = SockAddr::from_sockaddr(i->ifa_addr).ip;
    IpAddr m = SockAddr::from_sockaddr(i->ifa_netmask).ip;
    int len = 0;
    for (size_t k = 0; k < a.size(); ++k) len += __builtin_popcount(m.bytes[k]);
    out.push_back(Prefix{a, len});
  }
  ::freeifaddrs(ifa);
  return out;
}

std::string classify_mapping(const std::vector<MappingObservation>& obs,
                             const std::vector<IpAddr>& local, uint16_t port) {
  for (const auto& o : obs)
    if (o.mapped.port == port && std::find(local.begin(), local.end(), o.mapped.ip) != local.end())
      return "none";
  std::vector<MappingObservation> u;  // one per distinct destination
  for (const auto& o : obs) {
    bool dup = false;
    for (const auto& x : u) dup = dup || x.destination == o.destination;
    if (!dup) u.push_back(o);
  }
  if (u.size() < 2) return "unknown";
  bool all_same = std::all_of(u.begin(), u.end(),
                              [&](const MappingObservation& o) { return o.mapped == u[0].mapped; });
  if (all_same) return "endpoint-independent";
  for (size_t i = 0; i < u.size(); ++i)
    for (size_t j = i + 1; j < u.size(); ++j)
      if (u[i].destination.ip == u[j].destination.ip && u[i].mapped != u[j].mapped)
        return "address-and-port-dependent";
  return "address-dependent";
}

namespace {

enum class Kind { Primary, Other, FilterIpPort, FilterPort };

struct Tx {
  Kind kind;
  size_t server;  // index into opt.servers
  SockAddr dest;
  Transport* via;
  stun::TxId id;
  Clock::time_point first_sent{}, next_send{}, deadline{};
  milliseconds rto{};
  int sends = 0;
  bool done = false, answered = false;
  SockAddr from;  // where the answer came from
  std::optional<SockAddr> mapped, other;
  double rtt_ms = -1;
};

}  // namespace

Result<Discovery> discover(Transport& t, const DiscoverOptions& opt) {
  const auto start = opt.now();
  const auto end = start + opt.timeout;
  std::vector<Tx> txs;
  txs.reserve(opt.addresses.size() * 4 + 2);
  auto add = [&](Kind k, size_t server, const SockAddr& dest, Transport* via,
                 Clock::time_point now) {
    for (const auto& x : txs)
      if (x.kind == k && x.dest == dest) return;  // one transaction per test and destination
    Tx x{k, server, dest, via, stun::random_txid()};
    x.next_send = now;
    x.rto = opt.rto;
    x.deadline = (k == Kind::FilterIpPort || k == Kind::FilterPort)
                     ? std::min(end, now + opt.filter_wait)
                     : end;
    txs.push_back(x);
  };
  for (size_t i = 0; i < opt.addresses.size(); ++i)
    add(Kind::Primary, i, opt.addresses[i], &t, start);
  // Filtering tests go from another (ephemeral) port: their answers are
  // unsolicited by design, and a router without an input firewall keeps a
  // conntrack entry for each; on port P that entry would later collide with
  // the mappings P needs (and Linux masquerade then reuses the collided port
  // for new flows from P). Filtering is a property of the NAT, not the port.
  Transport* ft = opt.nat_tests ? opt.filter_transport : nullptr;
  if (ft && !opt.addresses.empty()) {
    add(Kind::FilterIpPort, 0, opt.addresses[0], ft, start);
    add(Kind::FilterPort, 0, opt.addresses[0], ft, start);
  }
  std::vector<Transport*> transports{&t};
  if (ft) transports.push_back(ft);

  uint8_t buf[1500];
  std::string last_send_error;
  for (int guard = 0; guard < 100000; ++guard) {
    auto now = opt.now();
    // Send what is due; retire what has expired.
    bool pending = false;
    auto next_wake = end;
    for (auto& x : txs) {
      if (x.done) continue;
      if (now >= x.deadline) {
        x.done = true;
        continue;
      }
      pending = true;
      if (now >= x.next_send) {
        stun::Builder b(buf, stun::kBinding, stun::kRequest, x.id);
        if (x.kind == Kind::FilterIpPort) b.add_u32(stun::kChangeRequest, stun::kChangeIp | stun::kChangePort);
        if (x.kind == Kind::FilterPort) b.add_u32(stun::kChangeRequest, stun::kChangePort);
        b.add_string(stun::kSoftware, "mesh-punch").add_fingerprint();
        Status s = x.via->send(x.dest, b.finish());
        if (!s) {
          if (s.code() != Exit::Unavailable) return s;
          last_send_error = s.message();
        }
        if (x.sends++ == 0) x.first_sent = now;
        x.next_send = now + x.rto;
        x.rto *= 2;  // RFC 8489 section 6.2.1: double the RTO per retransmission
      }
      next_wake = std::min({next_wake, x.next_send, x.deadline});
    }
    if (!pending) break;
    int wait = static_cast<int>(
        std::chrono::ceil<milliseconds>(std::max(next_wake - opt.now(), Clock::duration(0))).count());
    MESH_ASSIGN(int ready, wait_any(transports, wait));
    if (ready < 0) continue;
    Transport* via = transports[static_cast<size_t>(ready)];
    MESH_ASSIGN(auto got, via->recv(0, buf));
    if (!got) continue;
    auto m = stun::parse({buf, got->len});
    if (!m || m->method != stun::kBinding || (m->cls != stun::kSuccess && m->cls != stun::kError))
      continue;
    auto it = std::find_if(txs.begin(), txs.end(),
                           [&](const Tx& x) { return x.id == m->tx && x.via == via; });
    if (it == txs.end() || it->answered) continue;
    now = opt.now();
    it->answered = it->done = true;
    it->from = got->from;
    it->rtt_ms = duration<double, std::milli>(now - it->first_sent).count();
    if (m->cls == stun::kError) continue;  // e.g. 420 for CHANGE-REQUEST: test not possible
    if (auto* a = m->find(stun::kXorMappedAddress)) {
      if (auto sa = stun::decode_xor_address(*a, m->tx)) it->mapped = *sa;
    } else if (auto* a2 = m->find(stun::kMappedAddress)) {  // RFC 3489 servers
      if (auto sa = stun::decode_address(*a2)) it->mapped = *sa;
    }
    if (auto* o = m->find(stun::kOtherAddress)) {
      if (auto sa = stun::decode_address(*o)) it->other = *sa;
    }
    if (it->kind == Kind::Primary && it->mapped && it->other && opt.nat_tests) {
      // RFC 5780 section 4.3: the other address, the other IP on the primary
      // port and the primary IP on the other port give the mapping test
      // distinct destinations (coturn's OTHER-ADDRESS may keep the IP).
      const Tx x = *it;  // copy: add() may reallocate txs
      add(Kind::Other, x.server, *x.other, &t, now);
      if (x.other->ip != x.dest.ip) add(Kind::Other, x.server, SockAddr{x.other->ip, x.dest.port}, &t, now);
      if (x.other->port != x.dest.port) add(Kind::Other, x.server, SockAddr{x.dest.ip, x.other->port}, &t, now);
    }
  }

  Discovery d;
  std::vector<MappingObservation> obs;
  for (size_t i = 0; i < opt.servers.size(); ++i) {
    StunResult r;
    r.server = opt.servers[i];
    for (const auto& x : txs) {
      if (x.kind != Kind::Primary || x.server != i) continue;
      r.mapped = x.mapped;
      r.other_address = x.other;
      r.rtt_ms = x.rtt_ms;
      if (!x.answered) r.error = last_send_error.empty() ? "timeout" : last_send_error;
      else if (!x.mapped) r.error = "no mapped address in the response";
    }
    d.servers.push_back(r);
  }
  for (const auto& x : txs) {
    if ((x.kind == Kind::Primary || x.kind == Kind::Other) && x.mapped)
      obs.push_back({x.dest, *x.mapped});
    if (x.kind == Kind::Primary && x.mapped) {
      Candidate c{*x.mapped, "srflx"};
      if (std::find(d.srflx.begin(), d.srflx.end(), c) == d.srflx.end()) d.srflx.push_back(c);
    }
  }
  if (obs.empty())
    return unavailable("no STUN server answered within " +
                       std::to_string(opt.timeout.count()) + " ms" +
                       (last_send_error.empty() ? "" : " (" + last_send_error + ")"));
  d.nat.mapping = classify_mapping(obs, opt.local_addresses, t.port());
  if (d.nat.mapping == "none") d.srflx.clear();  // the same as the host candidates

  // Filtering, from where the CHANGE-REQUEST answers actually came from.
  const Tx* ipport = nullptr;
  const Tx* portonly = nullptr;
  for (const auto& x : txs) {
    if (x.kind == Kind::FilterIpPort) ipport = &x;
    if (x.kind == Kind::FilterPort) portonly = &x;
  }
  if (ipport && portonly) {
    bool ip_changed = ipport->answered && ipport->mapped && ipport->from.ip != ipport->dest.ip;
    bool port_changed = portonly->answered && portonly->mapped &&
                        portonly->from.ip == portonly->dest.ip &&
                        portonly->from.port != portonly->dest.port;
    bool ignored = (ipport->answered && ipport->from == ipport->dest) ||
                   (portonly->answered && portonly->from == portonly->dest);
    if (ip_changed) d.nat.filtering = "endpoint-independent";
    else if (port_changed) d.nat.filtering = "address-dependent";
    else if (!ipport->answered && !portonly->answered) d.nat.filtering = "address-and-port-dependent";
    else if (ignored) d.nat.filtering = "unknown";
  }
  return d;
}

}  // namespace mesh::punch
