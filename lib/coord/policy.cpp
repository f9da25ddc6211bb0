#include "coord/policy.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <set>

namespace mesh::coord {

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return false;
  return s.front() != '-' && s.front() != '.' && s.back() != '-' && s.back() != '.';
}

std::set<std::string> granted_names(const Policy& p) {
  std::set<std::string> out;
  for (const auto& [g, def] : p.groups) out.insert(def.members.begin(), def.members.end());
  for (const auto& r : p.rules)
    for (const auto* side : {&r.src, &r.dst})
      for (const auto& s : *side)
        if (s.kind == Selector::Kind::Peer) out.insert(s.name);
  // A router named by a route receives its clients' traffic: as good a
  // grant as any.
  for (const auto& [n, r] : p.routes)
    for (const auto& rr : r.routers)
      if (!rr.peer.empty()) out.insert(rr.peer);
  return out;
}

std::string Selector::to_string() const {
  switch (kind) {
    case Kind::All: return "all";
    case Kind::Group: return name;
    case Kind::Peer: return "peer:" + name;
    case Kind::Cidr: return cidr.to_string();
    case Kind::User: return "user:" + name;
    case Kind::IdpGroup: return "group:idp:" + name;
    case Kind::Route: return "route:" + name;
  }
  return "";
}

Result<Service> Service::parse(std::string_view text) {
  Service s;
  if (text == "any" || text == "icmp") {
    s.proto = std::string(text);
    return s;
  }
  auto slash = text.find('/');
  if (slash == std::string_view::npos)
    return data_error("invalid service '" + std::string(text) +
                      "': expected PORT/tcp, PORT/udp, icmp or any");
  std::string_view port = text.substr(0, slash), proto = text.substr(slash + 1);
  if (proto != "tcp" && proto != "udp")
    return data_error("invalid service '" + std::string(text) + "': protocol must be tcp or udp");
  unsigned v = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || v < 1 || v > 65535)
    return data_error("invalid service '" + std::string(text) + "': port must be 1-65535");
  s.proto = std::string(proto);
  s.port = static_cast<uint16_t>(v);
  return s;
}

std::string Service::to_string() const {
  if (proto == "tcp" || proto == "udp") return std::to_string(port) + "/" + proto;
  return proto;
}

static Result<Selector> parse_selector(const JsonView& v, const Policy& p, bool dst) {
  auto s = v.as_string();
  if (!s) return s.status();
  Selector sel;
  if (*s == "all") return sel;
  if (s->rfind("user:", 0) == 0) {
    sel.kind = Selector::Kind::User;
    if (!parse_user_selector(*s, &sel.name)) return v.error("invalid user selector '" + *s + "' (user:EMAIL)");
    return sel;
  }
  if (s->rfind("group:idp:", 0) == 0) {
    sel.kind = Selector::Kind::IdpGroup;
    if (!parse_idp_group_selector(*s, &sel.name))
      return v.error("invalid IdP group selector '" + *s + "' (group:idp:NAME)");
    return sel;
  }
  if (s->rfind("route:", 0) == 0) {
    if (!dst) return v.error("route selectors are only allowed in dst");
    sel.kind = Selector::Kind::Route;
    sel.name = s->substr(6);
    if (!valid_name(sel.name)) return v.error("invalid route name '" + sel.name + "'");
    return sel;
  }
  if (s->rfind("peer:", 0) == 0) {
    sel.kind = Selector::Kind::Peer;
    sel.name = s->substr(5);
    if (!valid_name(sel.name)) return v.error("invalid peer name '" + sel.name + "'");
    return sel;
  }
  if (s->find('/') != std::string::npos || s->find(':') != std::string::npos ||
      (!s->empty() && std::isdigit(static_cast<unsigned char>((*s)[0])) &&
       s->find('.') != std::string::npos && !p.groups.count(*s))) {
    auto pr = Prefix::parse(*s);
    if (!pr) return v.error("invalid CIDR: " + pr.status().message());
    sel.kind = Selector::Kind::Cidr;
    sel.cidr = pr->canonical();
    return sel;
  }
  if (!p.groups.count(*s))
    return v.error("unknown group '" + *s + "' (declare it under \"groups\")");
  sel.kind = Selector::Kind::Group;
  sel.name = *s;
  return sel;
}

static Result<PolicyRule> parse_rule(const JsonView& v, const Policy& p, size_t index) {
  MESH_TRY(v.check_keys({"name", "src", "dst", "proto", "ports", "description"}));
  PolicyRule r;
  r.name = "rule-" + std::to_string(index + 1);
  JsonView f = v;
  if (v.optional_field("name", &f)) {
    MESH_ASSIGN(r.name, f.as_string());
    if (!valid_name(r.name)) return f.error("invalid rule name '" + r.name + "'");
  }
  for (auto [key, out] : {std::pair{"src", &r.src}, std::pair{"dst", &r.dst}}) {
    MESH_ASSIGN(auto list, v.field(key));
    MESH_ASSIGN(auto els, list.elements());
    if (els.empty()) return list.error("at least one selector is required");
    for (auto& e : els) {
      MESH_ASSIGN(auto sel, parse_selector(e, p, out == &r.dst));
      out->push_back(sel);
    }
  }
  MESH_TRY(parse_proto_ports(v, &r.proto, &r.ports));
  return r;
}

Result<Policy> parse_policy(const Json& j, const std::string& source) {
  JsonView v(j, source);
  if (!j.is_object()) return v.error("expected a policy object");
  MESH_TRY(v.check_keys({"version", "groups", "rules", "tests", "routes"}));
  Policy p;
  JsonView f = v;
  if (v.optional_field("version", &f)) {
    MESH_ASSIGN(auto ver, f.as_int());
    if (ver != 1) return f.error("unsupported version " + std::to_string(ver) + " (expected 1)");
  }
  if (v.optional_field("groups", &f)) {
    if (!f.json().is_object()) return f.error("expected object of groups");
    for (auto it = f.json().begin(); it != f.json().end(); ++it) {
      JsonView g(it.value(), source, "groups." + it.key());
      if (!valid_name(it.key()) || it.key() == "all")
        return g.error(it.key() == "all" ? "'all' is built in and cannot be declared"
                                         : "invalid group name");
      if (!it.value().is_object()) return g.error("expected object");
      MESH_TRY(g.check_keys({"members", "tags", "description"}));
      PolicyGroup pg;
      JsonView m = g;
      for (auto [key, out] : {std::pair{"members", &pg.members}, std::pair{"tags", &pg.tags}}) {
        if (!g.optional_field(key, &m)) continue;
        MESH_ASSIGN(auto els, m.elements());
        for (auto& e : els) {
          MESH_ASSIGN(auto s, e.as_string());
          if (!valid_name(s)) return e.error("invalid name '" + s + "'");
          out->push_back(s);
        }
      }
      p.groups.emplace(it.key(), std::move(pg));
    }
  }
  if (v.optional_field("routes", &f)) {
    if (!f.json().is_object()) return f.error("expected object of routes");
    for (auto it = f.json().begin(); it != f.json().end(); ++it) {
      JsonView rv(it.value(), source, "routes." + it.key());
      if (!valid_name(it.key())) return rv.error("invalid route name");
      MESH_ASSIGN(auto r, parse_route(rv, false, it.key()));
      for (const auto& rr : r.routers)
        if (!rr.group.empty() && !p.groups.count(rr.group))
          return rv.error("unknown group '" + rr.group + "' (declare it under \"groups\")");
      r.from_policy = true;
      std::vector<const Route*> others;
      for (const auto& [n, o] : p.routes) others.push_back(&o);
      if (Status s = check_route(r, {}, others); !s) return rv.error(s.message());
      p.routes.emplace(it.key(), std::move(r));
    }
  }
  std::set<std::string> rule_names;
  if (v.optional_field("rules", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    for (size_t i = 0; i < els.size(); ++i) {
      MESH_ASSIGN(auto r, parse_rule(els[i], p, i));
      if (!rule_names.insert(r.name).second)
        return els[i].error("duplicate rule name '" + r.name + "'");
      p.rules.push_back(std::move(r));
    }
  }
  if (v.optional_field("tests", &f)) {
    MESH_ASSIGN(auto els, f.elements());
    for (auto& e : els) {
      MESH_TRY(e.check_keys({"from", "to", "service", "port", "expect"}));
      PolicyTest t;
      MESH_ASSIGN(t.from, e.get_string("from"));
      MESH_ASSIGN(t.to, e.get_string("to"));
      for (auto* who : {&t.from, &t.to}) {
        std::string ignored;
        if (who->rfind("user:", 0) == 0 || who->rfind("group:idp:", 0) == 0) {
          if (!parse_user_selector(*who, &ignored) && !parse_idp_group_selector(*who, &ignored))
            return e.error("invalid user or IdP group '" + *who + "'");
          continue;
        }
        if (who == &t.to && who->rfind("route:", 0) == 0) {
          if (!valid_name(who->substr(6))) return e.error("invalid route '" + *who + "'");
          continue;
        }
        std::string n = who->rfind("group:", 0) == 0 ? who->substr(6) : *who;
        if (!valid_name(n)) return e.error("invalid peer or group '" + *who + "'");
        if (who->rfind("group:", 0) == 0 && n != "all" && !p.groups.count(n))
          return e.error("unknown group '" + n + "'");
      }
      std::string svc = "any";
      JsonView s = e;
      if (e.optional_field("port", &s) || e.optional_field("service", &s)) {
        MESH_ASSIGN(svc, s.as_string());
      }
      auto sv = Service::parse(svc);
      if (!sv) return s.error(sv.status().message());
      t.service = *sv;
      MESH_ASSIGN(auto ex, e.field("expect"));
      MESH_ASSIGN(auto exs, ex.as_string());
      if (exs != "allow" && exs != "deny") return ex.error("expected \"allow\" or \"deny\"");
      t.expect_allow = exs == "allow";
      p.tests.push_back(std::move(t));
    }
  }
  return p;
}

Json policy_to_json(const Policy& p) {
  Json groups = Json::object();
  for (const auto& [name, g] : p.groups) groups[name] = {{"members", g.members}, {"tags", g.tags}};
  Json rules = Json::array();
  for (const auto& r : p.rules) {
    Json src = Json::array(), dst = Json::array(), ports = Json::array();
    for (const auto& s : r.src) src.push_back(s.to_string());
    for (const auto& s : r.dst) dst.push_back(s.to_string());
    for (const auto& pr : r.ports) ports.push_back(pr.to_string());
    rules.push_back(
        {{"name", r.name}, {"src", src}, {"dst", dst}, {"proto", r.proto}, {"ports", ports}});
  }
  Json tests = Json::array();
  for (const auto& t : p.tests)
    tests.push_back({{"from", t.from},
                     {"to", t.to},
                     {"port", t.service.to_string()},
                     {"expect", t.expect_allow ? "allow" : "deny"}});
  Json out{{"version", 1}, {"groups", groups}, {"rules", rules}, {"tests", tests}};
  if (!p.routes.empty()) {
    Json routes = Json::object();
    for (const auto& [name, r] : p.routes) {
      Json j = route_to_json(r);
      j.erase("name");
      routes[name] = j;
    }
    out["routes"] = routes;
  }
  return out;
}

Policy empty_policy() { return Policy{}; }

static bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool parse_user_selector(std::string_view s, std::string* email) {
  if (s.rfind("user:", 0) != 0) return false;
  std::string_view e = s.substr(5);
  auto at = e.find('@');
  if (e.empty() || e.size() > 254 || at == std::string_view::npos || at == 0 || at + 1 == e.size())
    return false;
  for (char c : e)
    if (static_cast<unsigned char>(c) <= ' ' || c == '"' || c == ',' || c == 0x7f) return false;
  email->clear();
  for (char c : e) email->push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return true;
}

bool parse_idp_group_selector(std::string_view s, std::string* group) {
  if (s.rfind("group:idp:", 0) != 0) return false;
  std::string_view g = s.substr(10);
  // IdP group names are the IdP's: anything printable, but bounded.
  if (g.empty() || g.size() > 255) return false;
  for (char c : g)
    if (static_cast<unsigned char>(c) < ' ' || c == 0x7f) return false;
  *group = std::string(g);
  return true;
}

bool selector_matches(const Policy& p, const Selector& s, const PeerAttrs& a) {
  switch (s.kind) {
    case Selector::Kind::All: return true;
    case Selector::Kind::User: return !a.user.empty() && a.user == s.name;
    case Selector::Kind::IdpGroup: return contains(a.idp_groups, s.name);
    case Selector::Kind::Route: return false;  // selects a route, never a peer
    case Selector::Kind::Peer: return a.name == s.name;
    case Selector::Kind::Cidr:
      for (const auto& ip : a.addresses)
        if (s.cidr.contains(ip)) return true;
      return false;
    case Selector::Kind::Group: {
      if (contains(a.groups, s.name)) return true;
      auto it = p.groups.find(s.name);
      if (it == p.groups.end()) return false;
      if (contains(it->second.members, a.name)) return true;
      for (const auto& t : a.tags)
        if (contains(it->second.tags, t)) return true;
      return false;
    }
  }
  return false;
}

bool rule_allows_service(const PolicyRule& r, const Service& s) {
  if (r.proto == "any") return true;
  if (s.proto == "any") return false;  // "any" asks for everything; only an any-rule grants it
  if (r.proto != s.proto) return false;
  if (r.ports.empty() || s.proto == "icmp") return true;
  for (const auto& pr : r.ports)
    if (s.port >= pr.lo && s.port <= pr.hi) return true;
  return false;
}

Verdict evaluate(const Policy& p, const PeerAttrs& from, const PeerAttrs& to, const Service& s) {
  for (const auto& r : p.rules) {
    if (!rule_allows_service(r, s)) continue;
    bool src = false, dst = false;
    for (const auto& sel : r.src) src = src || selector_matches(p, sel, from);
    if (!src) continue;
    for (const auto& sel : r.dst) dst = dst || selector_matches(p, sel, to);
    if (dst) return {true, r.name};
  }
  return {false, "default-deny"};
}

}  // namespace mesh::coord
