#include "coord/mapjson.h"

#include <nlohmann/json.hpp>

namespace mesh::coord {
namespace {

// Strings that nlohmann writes verbatim: printable ASCII without '"' or '\'.
bool plain(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') return false;
  return true;
}

struct Writer {
  std::string out;
  bool ok = true;
  void str(const std::string& s) {
    if (!plain(s)) ok = false;
    out += '"';
    out += s;
    out += '"';
  }
  void key(const char* k) {
    out += '"';
    out += k;
    out += "\":";
  }
  void num(int64_t v) { out += std::to_string(v); }
  void unum(uint64_t v) { out += std::to_string(v); }
  void strings(const std::vector<std::string>& v) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += ',';
      str(v[i]);
    }
    out += ']';
  }
  void prefixes(const std::vector<Prefix>& v) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += ',';
      str(v[i].to_string());
    }
    out += ']';
  }
};

void write_rule_head(Writer& w, const FirewallRule& r, bool forward = false) {
  w.out += '{';
  if (forward) {
    w.key("destinations");
    w.prefixes(r.destinations);
    w.out += ',';
  }
  w.key("ports");
  w.out += '[';
  for (size_t j = 0; j < r.ports.size(); ++j) {
    if (j) w.out += ',';
    w.str(r.ports[j].to_string());
  }
  w.out += "],";
  w.key("proto");
  w.str(r.proto);
  if (!r.rule.empty()) {
    w.out += ',';
    w.key("rule");
    w.str(r.rule);
  }
  w.out += ',';
  w.key("sources");
}

// `"routes":[...]`, the last member of a peers[] entry.
void write_peer_routes(Writer& w, const std::vector<PeerRoute>& routes) {
  w.key("routes");
  w.out += '[';
  for (size_t i = 0; i < routes.size(); ++i) {
    if (i) w.out += ',';
    w.out += "{\"masquerade\":";
    w.out += routes[i].masquerade ? "true" : "false";
    w.out += ",\"metric\":";
    w.num(routes[i].metric);
    w.out += ',';
    w.key("network");
    w.str(routes[i].network.to_string());
    w.out += '}';
  }
  w.out += ']';
}

void write_peer(Writer& w, const MapPeer& p) {
  w.out += '{';
  w.key("addresses");
  w.prefixes(p.addresses);
  w.out += ',';
  w.key("allowed_ips");
  w.prefixes(p.allowed_ips);
  w.out += ',';
  w.key("endpoints");
  w.out += '[';
  for (size_t j = 0; j < p.endpoints.size(); ++j) {
    if (j) w.out += ',';
    w.out += '{';
    w.key("endpoint");
    w.str(p.endpoints[j].endpoint.to_string());
    w.out += ',';
    w.key("kind");
    w.str(p.endpoints[j].kind);
    w.out += '}';
  }
  w.out += "],";
  w.key("groups");
  w.strings(p.groups);
  w.out += ',';
  w.key("keepalive");
  w.num(p.keepalive);
  w.out += ',';
  w.key("name");
  w.str(p.name);
  if (p.preshared_key) {
    w.out += ',';
    w.key("preshared_key");
    w.str(p.preshared_key->to_base64());
  }
  w.out += ',';
  w.key("public_key");
  w.str(p.public_key.to_base64());
  if (!p.routes.empty()) {
    w.out += ',';
    write_peer_routes(w, p.routes);
  }
  w.out += '}';
}

}  // namespace

bool peer_routes_json_text(const std::vector<PeerRoute>& routes, std::string& out) {
  Writer w;
  write_peer_routes(w, routes);
  out = std::move(w.out);
  return w.ok;
}

bool peer_json_text(const MapPeer& p, std::string& out) {
  Writer w;
  write_peer(w, p);
  out = std::move(w.out);
  return w.ok;
}

bool rule_head_json_text(const FirewallRule& r, std::string& out) {
  Writer w;
  write_rule_head(w, r);
  w.out += '[';
  out = std::move(w.out);
  return w.ok;
}

std::string netmap_json_text(const NetMap& m) {
  Writer w;
  w.out.reserve(256 + m.peers.size() * 320 + m.inbound.size() * 256);
  w.out += '{';
  if (!m.dns_domain.empty()) {
    w.key("dns");
    w.out += '{';
    w.key("domain");
    w.str(m.dns_domain);
    w.out += "},";
  }
  w.key("firewall");
  w.out += '{';
  if (!m.forward.empty()) {
    w.key("forward");
    w.out += '[';
    for (size_t i = 0; i < m.forward.size(); ++i) {
      const FirewallRule& r = m.forward[i];
      if (i) w.out += ',';
      write_rule_head(w, r, true);
      w.prefixes(r.sources);
      w.out += '}';
    }
    w.out += "],";
  }
  w.out += "\"inbound\":[";
  for (size_t i = 0; i < m.inbound.size(); ++i) {
    const FirewallRule& r = m.inbound[i];
    if (i) w.out += ',';
    write_rule_head(w, r);
    w.prefixes(r.sources);
    w.out += '}';
  }
  w.out += "]},";
  w.key("generated_at");
  w.num(m.generated_at);
  w.out += ',';
  w.key("peers");
  w.out += '[';
  for (size_t i = 0; i < m.peers.size(); ++i) {
    if (i) w.out += ',';
    write_peer(w, m.peers[i]);
  }
  w.out += "],";
  w.key("self");
  w.out += '{';
  w.key("addresses");
  w.prefixes(m.self.addresses);
  w.out += ',';
  w.key("groups");
  w.strings(m.self.groups);
  w.out += ',';
  w.key("listen_port");
  w.num(m.self.listen_port);
  w.out += ',';
  w.key("mtu");
  w.num(m.self.mtu);
  w.out += ',';
  w.key("name");
  w.str(m.self.name);
  w.out += ',';
  w.key("public_key");
  w.str(m.self.public_key.to_base64());
  if (!m.self.routes.empty()) {
    w.out += ',';
    w.key("routes");
    w.out += '[';
    for (size_t i = 0; i < m.self.routes.size(); ++i) {
      if (i) w.out += ',';
      w.out += "{\"masquerade\":";
      w.out += m.self.routes[i].masquerade ? "true" : "false";
      w.out += ',';
      w.key("network");
      w.str(m.self.routes[i].network.to_string());
      w.out += '}';
    }
    w.out += ']';
  }
  w.out += "},";
  w.key("serial");
  w.unum(m.serial);
  w.out += ',';
  w.key("stun");
  w.strings(m.stun);
  w.out += ',';
  w.key("turn");
  w.out += '[';
  for (size_t i = 0; i < m.turn.size(); ++i) {
    const TurnServer& t = m.turn[i];
    if (i) w.out += ',';
    w.out += '{';
    w.key("expires_at");
    w.num(t.expires_at);
    w.out += ',';
    w.key("password");
    w.str(t.password);
    w.out += ',';
    w.key("server");
    w.str(t.server);
    w.out += ',';
    w.key("transport");
    w.str(t.transport);
    w.out += ',';
    w.key("username");
    w.str(t.username);
    w.out += '}';
  }
  w.out += "],";
  w.key("version");
  w.num(m.version);
  w.out += '}';
  if (!w.ok) return dump_json(netmap_to_json(m));
  return w.out;
}

}  // namespace mesh::coord
