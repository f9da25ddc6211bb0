#include "netmap/netmap.h"

#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

namespace mesh {
namespace {

struct KeyHash {
  size_t operator()(const PublicKey& k) const {
    size_t h;  // keys are uniformly random: any 8 bytes are a good hash
    std::memcpy(&h, k.bytes.data(), sizeof h);
    return h;
  }
};

struct PrefixHash {
  size_t operator()(const Prefix& p) const {
    // FNV-1a over family, length and address bytes.
    size_t h = 1469598103934665603ull;
    auto mix = [&](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
    mix(static_cast<uint8_t>(p.addr.family));
    mix(static_cast<uint8_t>(p.len));
    for (uint8_t b : p.addr.bytes) mix(b);
    return h;
  }
};

template <typename T>
Status assign(Result<T> r, T* out) {
  if (!r) return r.status();
  *out = std::move(*r);
  return Status::ok();
}

Status parse_prefixes(const JsonView& v, std::vector<Prefix>* out) {
  auto els = v.elements();
  if (!els) return els.status();
  out->reserve(out->size() + els->size());
  for (auto& e : *els) {
    auto s = e.as_string_view();
    if (!s) return s.status();
    auto p = Prefix::parse(*s);
    if (!p) return e.error(p.status().message());
    out->push_back(*p);
  }
  return Status::ok();
}

Status parse_key(const JsonView& v, PublicKey* out) {
  auto s = v.as_string_view();
  if (!s) return s.status();
  auto k = PublicKey::from_base64(*s);
  if (!k) return v.error(k.status().message());
  *out = *k;
  return Status::ok();
}

Json prefixes_json(const std::vector<Prefix>& ps) {
  Json a = Json::array();
  for (auto& p : ps) a.push_back(p.to_string());
  return a;
}

Status check_overlay_addresses(const JsonView& v, const std::vector<Prefix>& addrs) {
  if (addrs.empty()) return v.error("at least one address is required");
  return Status::ok();
}

}  // namespace

Result<PortRange> PortRange::parse(std::string_view text) {
  auto bad = [&] {
    return data_error("invalid port '" + std::string(text) + "': expected PORT or LOW-HIGH in 1-65535");
  };
  auto num = [](std::string_view s, uint16_t* out) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < 1 || v > 65535)
      return false;
    *out = static_cast<uint16_t>(v);
    return true;
  };
  PortRange r;
  auto dash = text.find('-');
  if (dash == std::string_view::npos) {
    if (!num(text, &r.lo)) return bad();
    r.hi = r.lo;
    return r;
  }
  if (!num(text.substr(0, dash), &r.lo) || !num(text.substr(dash + 1), &r.hi)) return bad();
  if (r.lo > r.hi)
    return data_error("invalid port range '" + std::string(text) + "': low end above high end");
  return r;
}

std::string PortRange::to_string() const {
  if (lo == hi) return std::to_string(lo);
  return std::to_string(lo) + "-" + std::to_string(hi);
}

bool valid_dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      return false;
  return true;
}

bool valid_dns_domain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (;;) {
    size_t dot = s.find('.');
    if (!valid_dns_label(s.substr(0, dot))) return false;
    if (dot == std::string_view::npos) return true;
    s.remove_prefix(dot + 1);
  }
}

Result<Candidate> parse_candidate(const JsonView& v, bool strict) {
  if (strict) MESH_TRY(v.check_keys({"endpoint", "kind"}));
  Candidate c;
  auto ep_view = v.field("endpoint");
  if (!ep_view) return ep_view.status();
  auto ep = ep_view->as_string_view();
  if (!ep) return ep.status();
  auto sa = SockAddr::parse(*ep);
  if (!sa) return v.error(sa.status().message());
  if (sa->port == 0) return v.error("endpoint port must not be 0");
  c.endpoint = *sa;
  JsonView k = v;
  if (v.optional_field("kind", &k)) {
    auto s = k.as_string_view();
    if (!s) return s.status();
    if (*s != "host" && *s != "srflx" && *s != "prflx" && *s != "relay")
      return k.error("unknown candidate kind '" + std::string(*s) +
                     "' (expected host, srflx, prflx or relay)");
    c.kind = *s;
  }
  return c;
}

Json candidate_to_json(const Candidate& c) {
  return Json{{"endpoint", c.endpoint.to_string()}, {"kind", c.kind}};
}

Status parse_proto_ports(const JsonView& v, std::string* proto, std::vector<PortRange>* ports) {
  JsonView f = v;
  if (v.optional_field("proto", &f)) {
    MESH_ASSIGN(*proto, f.as_string());
    if (*proto != "tcp" && *proto != "udp" && *proto != "icmp" && *proto != "any")
      return f.error("unknown proto '" + *proto + "' (expected tcp, udp, icmp or any)");
  }
  if (v.optional_field("ports", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    for (auto& e : els) {
      std::string text;
      if (e.json().is_number_integer()) {
        MESH_ASSIGN(auto n, e.as_int(1, 65535));
        text = std::to_string(n);
      } else {
        MESH_ASSIGN(text, e.as_string());
      }
      auto pr = PortRange::parse(text);
      if (!pr) return e.error(pr.status().message());
      ports->push_back(*pr);
    }
    if (!ports->empty() && *proto != "tcp" && *proto != "udp")
      return f.error("ports are only allowed with proto tcp or udp");
  }
  return Status::ok();
}

bool route_overlaps_overlay(const Prefix& network, const std::vector<Prefix>& overlay) {
  Prefix n = network.canonical();
  for (const auto& o : overlay) {
    if (o.addr.is_v4() != n.addr.is_v4()) continue;
    Prefix c = o.canonical();
    if (c.contains(n)) return true;
    if (n.len > 0 && n.contains(c)) return true;
  }
  return false;
}

// `forward`: a firewall.forward rule, which also has "destinations".
static Result<FirewallRule> parse_rule(const JsonView& v, bool strict, bool forward = false) {
  if (strict) {
    if (forward) MESH_TRY(v.check_keys({"sources", "proto", "ports", "rule", "destinations"}));
    else MESH_TRY(v.check_keys({"sources", "proto", "ports", "rule"}));
  }
  FirewallRule r;
  MESH_ASSIGN(auto sources, v.field("sources"));
  MESH_TRY(parse_prefixes(sources, &r.sources));
  if (r.sources.empty()) return sources.error("at least one source prefix is required");
  if (forward) {
    MESH_ASSIGN(auto dests, v.field("destinations"));
    MESH_TRY(parse_prefixes(dests, &r.destinations));
    if (r.destinations.empty()) return dests.error("at least one destination prefix is required");
    for (auto& d : r.destinations) d = d.canonical();
  }
  MESH_TRY(parse_proto_ports(v, &r.proto, &r.ports));
  JsonView f = v;
  if (v.optional_field("rule", &f)) { MESH_ASSIGN(r.rule, f.as_string()); }
  return r;
}

// self.routes (`with_metric` false) or peers[].routes: objects with a
// network, and a metric for the latter; one entry per network, none
// colliding with the overlay (self.addresses' prefixes).
template <typename T>
static Status parse_routes(const JsonView& v, bool strict, bool with_metric,
                           const std::vector<Prefix>& overlay, std::vector<T>* out) {
  MESH_ASSIGN(auto els, v.elements());
  for (auto& e : els) {
    if (strict) {
      if (with_metric) MESH_TRY(e.check_keys({"network", "metric", "masquerade"}));
      else MESH_TRY(e.check_keys({"network", "masquerade"}));
    }
    T r;
    MESH_ASSIGN(auto nv, e.field("network"));
    MESH_ASSIGN(auto text, nv.as_string_view());
    auto net = Prefix::parse(text);
    if (!net) return nv.error(net.status().message());
    r.network = net->canonical();
    if (route_overlaps_overlay(r.network, overlay))
      return nv.error("route " + r.network.to_string() + " overlaps the overlay");
    for (const auto& x : *out)
      if (x.network == r.network) return nv.error("duplicate route " + r.network.to_string());
    JsonView f = e;
    if constexpr (requires { r.metric; }) {
      if (e.optional_field("metric", &f)) {
        MESH_ASSIGN(auto m, f.as_int(0, 65535));
        r.metric = static_cast<int>(m);
      }
    }
    if (e.optional_field("masquerade", &f)) { MESH_ASSIGN(r.masquerade, f.as_bool()); }
    out->push_back(r);
  }
  return Status::ok();
}

static Result<MapPeer> parse_peer(const JsonView& v, bool strict,
                                  const std::vector<Prefix>& overlay) {
  if (strict)
    MESH_TRY(v.check_keys({"name", "public_key", "addresses", "allowed_ips", "endpoints",
                           "keepalive", "preshared_key", "groups", "routes"}));
  MapPeer p;
  JsonView f = v;
  if (v.optional_field("name", &f)) { MESH_ASSIGN(p.name, f.as_string()); }
  MESH_ASSIGN(auto k, v.field("public_key"));
  MESH_TRY(parse_key(k, &p.public_key));
  MESH_ASSIGN(auto addrs, v.field("addresses"));
  MESH_TRY(parse_prefixes(addrs, &p.addresses));
  MESH_TRY(check_overlay_addresses(addrs, p.addresses));
  if (v.optional_field("allowed_ips", &f)) {
    MESH_TRY(parse_prefixes(f, &p.allowed_ips));
  }
  // The peer's own addresses are always routed to it.
  for (const auto& a : p.addresses) {
    Prefix host{a.addr, a.addr.is_v4() ? 32 : 128};
    bool have = false;
    for (const auto& x : p.allowed_ips) have = have || x.canonical() == host;
    if (!have) p.allowed_ips.push_back(host);
  }
  for (auto& a : p.allowed_ips) a = a.canonical();
  if (v.optional_field("endpoints", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    p.endpoints.reserve(els.size());
    for (auto& e : els) {
      MESH_ASSIGN(auto c, parse_candidate(e, strict));
      p.endpoints.push_back(std::move(c));
    }
  }
  if (v.optional_field("keepalive", &f)) { MESH_ASSIGN(p.keepalive, f.as_int(0, 65535)); }
  if (v.optional_field("preshared_key", &f)) {
    MESH_ASSIGN(auto s, f.as_string());
    auto psk = SecretKey::from_base64(s);
    wipe(s);
    if (!psk) return f.error(psk.status().message());
    p.preshared_key = *psk;
  }
  if (v.optional_field("groups", &f)) { MESH_ASSIGN(p.groups, f.as_string_list()); }
  if (v.optional_field("routes", &f)) MESH_TRY(parse_routes(f, strict, true, overlay, &p.routes));
  return p;
}

Result<NetMap> parse_netmap(const Json& j, const std::string& source, ParseOptions opt) {
  JsonView v(j, source);
  if (!j.is_object()) return v.error("expected a network map object");
  if (opt.strict)
    MESH_TRY(v.check_keys({"version", "serial", "generated_at", "self", "peers", "firewall",
                           "stun", "turn", "dns"}));
  NetMap m;
  MESH_ASSIGN(auto ver, v.get_int("version"));
  if (ver != 1) return v.error("unsupported version " + std::to_string(ver) + " (expected 1)");
  MESH_ASSIGN(auto serial_v, v.field("serial"));
  MESH_ASSIGN(m.serial, serial_v.as_uint());
  JsonView f = v;
  if (v.optional_field("generated_at", &f)) { MESH_ASSIGN(m.generated_at, f.as_int()); }

  MESH_ASSIGN(auto self, v.field("self"));
  if (opt.strict)
    MESH_TRY(self.check_keys(
        {"name", "public_key", "addresses", "groups", "listen_port", "mtu", "routes"}));
  if (self.optional_field("name", &f)) { MESH_ASSIGN(m.self.name, f.as_string()); }
  MESH_ASSIGN(auto sk, self.field("public_key"));
  MESH_TRY(parse_key(sk, &m.self.public_key));
  MESH_ASSIGN(auto saddrs, self.field("addresses"));
  MESH_TRY(parse_prefixes(saddrs, &m.self.addresses));
  MESH_TRY(check_overlay_addresses(saddrs, m.self.addresses));
  if (self.optional_field("groups", &f)) { MESH_ASSIGN(m.self.groups, f.as_string_list()); }
  if (self.optional_field("listen_port", &f)) {
    MESH_ASSIGN(auto lp, f.as_int(0, 65535));
    m.self.listen_port = static_cast<uint16_t>(lp);
  }
  if (self.optional_field("mtu", &f)) { MESH_ASSIGN(m.self.mtu, f.as_int(1280, 65535)); }
  if (self.optional_field("routes", &f))
    MESH_TRY(parse_routes(f, opt.strict, false, m.self.addresses, &m.self.routes));

  if (v.optional_field("peers", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    // Hashed: a 5,000-peer map must not spend its time in tree nodes.
    std::unordered_set<PublicKey, KeyHash> seen;
    std::unordered_map<Prefix, size_t, PrefixHash> owner;  // allowed IP -> peer index
    seen.reserve(els.size());
    owner.reserve(els.size() * 2);
    m.peers.reserve(els.size());
    for (size_t i = 0; i < els.size(); ++i) {
      MESH_ASSIGN(auto p, parse_peer(els[i], opt.strict, m.self.addresses));
      if (p.public_key == m.self.public_key)
        return els[i].error("peer has this node's own public key");
      if (!seen.insert(p.public_key).second)
        return els[i].error("duplicate peer " + p.public_key.to_base64());
      for (const auto& a : p.allowed_ips) {
        auto [it, inserted] = owner.emplace(a, i);
        if (!inserted)
          return els[i].error("allowed IP " + a.to_string() + " is also given to peers[" +
                              std::to_string(it->second) + "]");
      }
      m.peers.push_back(std::move(p));
    }
  }
  if (v.optional_field("firewall", &f)) {
    if (opt.strict) MESH_TRY(f.check_keys({"inbound", "forward"}));
    JsonView in = f;
    if (f.optional_field("inbound", &in)) {
      MESH_ASSIGN(auto els, in.elements());
      for (auto& e : els) {
        MESH_ASSIGN(auto r, parse_rule(e, opt.strict));
        m.inbound.push_back(std::move(r));
      }
    }
    if (f.optional_field("forward", &in)) {
      MESH_ASSIGN(auto els, in.elements());
      for (auto& e : els) {
        MESH_ASSIGN(auto r, parse_rule(e, opt.strict, true));
        m.forward.push_back(std::move(r));
      }
    }
  }
  if (v.optional_field("stun", &f)) { MESH_ASSIGN(m.stun, f.as_string_list()); }
  if (v.optional_field("dns", &f)) {
    if (opt.strict) MESH_TRY(f.check_keys({"domain"}));
    MESH_ASSIGN(auto d, f.field("domain"));
    MESH_ASSIGN(m.dns_domain, d.as_string());
    if (!valid_dns_domain(m.dns_domain))
      return d.error("invalid DNS domain '" + m.dns_domain +
                     "' (expected labels of letters, digits and '-' joined by '.')");
  }
  if (v.optional_field("turn", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    for (auto& e : els) {
      if (opt.strict)
        MESH_TRY(e.check_keys({"server", "transport", "username", "password", "expires_at"}));
      TurnServer t;
      MESH_ASSIGN(t.server, e.get_string("server"));
      t.transport = "udp";
      JsonView tf = e;
      if (e.optional_field("transport", &tf)) {
        MESH_ASSIGN(t.transport, tf.as_string());
        if (t.transport != "udp" && t.transport != "tcp" && t.transport != "tls")
          return tf.error("unknown transport '" + t.transport + "' (expected udp, tcp or tls)");
      }
      MESH_ASSIGN(t.username, e.get_string("username"));
      MESH_ASSIGN(t.password, e.get_string("password"));
      if (e.optional_field("expires_at", &tf)) { MESH_ASSIGN(t.expires_at, tf.as_int()); }
      m.turn.push_back(std::move(t));
    }
  }
  return m;
}

Result<NetMap> read_netmap_file(const std::string& path, ParseOptions opt) {
  auto j = read_json_file(path);
  if (!j) return j.status();
  return parse_netmap(*j, path == "-" ? "<stdin>" : path, opt);
}

Json netmap_to_json(const NetMap& m) {
  Json peers = Json::array();
  peers.get_ref<Json::array_t&>().reserve(m.peers.size());
  for (const auto& p : m.peers) {
    Json eps = Json::array();
    for (const auto& c : p.endpoints) eps.push_back(candidate_to_json(c));
    Json jp = Json::object();
    jp["name"] = p.name;
    jp["public_key"] = p.public_key.to_base64();
    jp["addresses"] = prefixes_json(p.addresses);
    jp["allowed_ips"] = prefixes_json(p.allowed_ips);
    jp["endpoints"] = std::move(eps);
    jp["keepalive"] = p.keepalive;
    jp["groups"] = p.groups;
    if (p.preshared_key) jp["preshared_key"] = p.preshared_key->to_base64();
    if (!p.routes.empty()) {
      Json rs = Json::array();
      for (const auto& r : p.routes)
        rs.push_back({{"network", r.network.to_string()}, {"metric", r.metric},
                      {"masquerade", r.masquerade}});
      jp["routes"] = std::move(rs);
    }
    peers.push_back(std::move(jp));
  }
  auto rules_json = [](const std::vector<FirewallRule>& rules, bool forward) {
    Json out = Json::array();
    for (const auto& r : rules) {
      Json ports = Json::array();
      for (const auto& pr : r.ports) ports.push_back(pr.to_string());
      Json jr = Json::object();
      jr["sources"] = prefixes_json(r.sources);
      jr["proto"] = r.proto;
      jr["ports"] = std::move(ports);
      if (!r.rule.empty()) jr["rule"] = r.rule;
      if (forward) jr["destinations"] = prefixes_json(r.destinations);
      out.push_back(std::move(jr));
    }
    return out;
  };
  Json inbound = rules_json(m.inbound, false);
  Json turn = Json::array();
  for (const auto& t : m.turn)
    turn.push_back({{"server", t.server},
                    {"transport", t.transport},
                    {"username", t.username},
                    {"password", t.password},
                    {"expires_at", t.expires_at}});
  Json self{{"name", m.self.name},
            {"public_key", m.self.public_key.to_base64()},
            {"addresses", prefixes_json(m.self.addresses)},
            {"groups", m.self.groups},
            {"listen_port", m.self.listen_port},
            {"mtu", m.self.mtu}};
  if (!m.self.routes.empty()) {
    Json rs = Json::array();
    for (const auto& r : m.self.routes)
      rs.push_back({{"network", r.network.to_string()}, {"masquerade", r.masquerade}});
    self["routes"] = std::move(rs);
  }
  // Members are moved in, not copied: a map can hold thousands of entries.
  Json out = Json::object();
  out["version"] = m.version;
  out["serial"] = m.serial;
  out["generated_at"] = m.generated_at;
  out["self"] = std::move(self);
  out["peers"] = std::move(peers);
  out["firewall"] = Json::object();
  out["firewall"]["inbound"] = std::move(inbound);
  if (!m.forward.empty()) out["firewall"]["forward"] = rules_json(m.forward, true);
  out["stun"] = m.stun;
  out["turn"] = std::move(turn);
  if (!m.dns_domain.empty()) out["dns"] = Json{{"domain", m.dns_domain}};
  return out;
}

}  // namespace mesh
