#include "coord/routes.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "coord/model.h"
#include "coord/policy.h"
#include "coord/routeops.h"
#include "coord/digest.h"
#include "netmap/netmap.h"

namespace mesh::coord {
namespace {

bool same_family(const Prefix& a, const Prefix& b) { return a.addr.is_v4() == b.addr.is_v4(); }

// The lowest metric `p` routes `r` with, or -1 when it is not a router.
int router_metric(const Policy& pol, const Route& r, const PeerAttrs& a) {
  int best = -1;
  for (const auto& rr : r.routers) {
    bool match = false;
    if (!rr.peer.empty()) {
      match = rr.peer == a.name;
    } else {
      Selector s;
      s.kind = Selector::Kind::Group;
      s.name = rr.group;
      match = selector_matches(pol, s, a);
    }
    if (match && (best < 0 || rr.metric < best)) best = rr.metric;
  }
  return best;
}

bool is_router(const CompiledRoute& c, uint32_t id) {
  auto it = std::lower_bound(c.routers.begin(), c.routers.end(), std::pair<uint32_t, int>{id, -1});
  return it != c.routers.end() && it->first == id;
}

}  // namespace

// ---------------------------------------------------------------- Route

bool Route::exit_node() const {
  if (networks.empty()) return false;
  for (const auto& n : networks)
    if (n.len != 0) return false;
  return true;
}

Result<Route> parse_route(const JsonView& v, bool name_in_body, const std::string& name) {
  if (!v.json().is_object()) return v.error("expected a route object");
  if (name_in_body) MESH_TRY(v.check_keys({"name", "networks", "routers", "masquerade", "description"}));
  else MESH_TRY(v.check_keys({"networks", "routers", "masquerade", "description"}));
  Route r;
  r.name = name;
  if (name_in_body) { MESH_ASSIGN(r.name, v.get_string("name")); }
  if (!valid_name(r.name))
    return v.error("invalid route name '" + r.name +
                   "' (1-63 of a-z, 0-9, '-', '_', '.'; not starting or ending with '-' or '.')");
  MESH_ASSIGN(auto nets, v.field("networks"));
  MESH_ASSIGN(auto nels, nets.elements());
  if (nels.empty()) return nets.error("at least one network is required");
  bool any_default = false;
  for (auto& e : nels) {
    MESH_ASSIGN(auto text, e.as_string());
    auto p = Prefix::parse(text);
    if (!p) return e.error("invalid network: " + p.status().message());
    if (p->canonical() != *p)
      return e.error("network " + text + " has host bits set (did you mean " +
                     p->canonical().to_string() + "?)");
    if (std::find(r.networks.begin(), r.networks.end(), *p) != r.networks.end())
      return e.error("duplicate network " + text);
    any_default = any_default || p->len == 0;
    r.networks.push_back(*p);
  }
  if (any_default && !r.exit_node())
    return nets.error("a default route (0.0.0.0/0, ::/0) cannot share a route with other networks");
  MESH_ASSIGN(auto routers, v.field("routers"));
  MESH_ASSIGN(auto rels, routers.elements());
  if (rels.empty()) return routers.error("at least one router (peer or group) is required");
  for (auto& e : rels) {
    if (!e.json().is_object()) return e.error("expected {\"peer\": NAME} or {\"group\": NAME}");
    MESH_TRY(e.check_keys({"peer", "group", "metric"}));
    RouteRouter rr;
    JsonView f = e;
    bool peer = e.optional_field("peer", &f);
    if (peer) { MESH_ASSIGN(rr.peer, f.as_string()); }
    if (e.optional_field("group", &f)) {
      if (peer) return e.error("a router is a peer or a group, not both");
      MESH_ASSIGN(rr.group, f.as_string());
    } else if (!peer) {
      return e.error("a router needs \"peer\" or \"group\"");
    }
    const std::string& who = peer ? rr.peer : rr.group;
    if (!valid_name(who)) return e.error(std::string("invalid ") + (peer ? "peer" : "group") +
                                         " name '" + who + "'");
    if (e.optional_field("metric", &f)) {
      MESH_ASSIGN(auto m, f.as_int(0, 65535));
      rr.metric = static_cast<int>(m);
    }
    for (const auto& x : r.routers)
      if (x.peer == rr.peer && x.group == rr.group)
        return e.error(std::string("duplicate router ") + (peer ? "peer '" : "group '") + who + "'");
    r.routers.push_back(rr);
  }
  JsonView f = v;
  if (v.optional_field("masquerade", &f)) { MESH_ASSIGN(r.masquerade, f.as_bool()); }
  if (r.exit_node() && !r.masquerade)
    return v.error("an exit node (a default route) needs masquerade");
  if (v.optional_field("description", &f)) {
    MESH_ASSIGN(r.description, f.as_string());
    if (r.description.size() > 256) return f.error("description is longer than 256 characters");
  }
  return r;
}

Json route_to_json(const Route& r) {
  Json nets = Json::array(), routers = Json::array();
  for (const auto& n : r.networks) nets.push_back(n.to_string());
  for (const auto& rr : r.routers) {
    Json j = Json::object();
    if (!rr.peer.empty()) j["peer"] = rr.peer;
    else j["group"] = rr.group;
    j["metric"] = rr.metric;
    routers.push_back(j);
  }
  return Json{{"name", r.name},
              {"networks", nets},
              {"routers", routers},
              {"masquerade", r.masquerade},
              {"description", r.description}};
}

Status check_route(const Route& r, const std::vector<Prefix>& overlay,
                   const std::vector<const Route*>& others) {
  for (const auto& n : r.networks) {
    for (const auto& o : overlay)
      if (route_overlaps_overlay(n, {o}))
        return data_error("network " + n.to_string() + " overlaps the overlay prefix " +
                          o.canonical().to_string());
    for (const Route* o : others)
      if (o->name != r.name && std::find(o->networks.begin(), o->networks.end(), n) != o->networks.end())
        return data_error("network " + n.to_string() + " is already routed by route '" + o->name + "'");
  }
  return Status::ok();
}

std::vector<std::pair<size_t, Prefix>> cidr_grants(const Prefix& sel, const Route& r) {
  std::vector<std::pair<size_t, Prefix>> out;
  Prefix s = sel.canonical();
  for (size_t i = 0; i < r.networks.size(); ++i) {
    const Prefix& n = r.networks[i];
    if (!same_family(s, n)) continue;
    if (n.len == 0) {
      if (s.len == 0) out.emplace_back(i, n);
    } else if (s.contains(n)) {
      out.emplace_back(i, n);
    } else if (n.contains(s)) {
      out.emplace_back(i, s);
    }
  }
  return out;
}

// ---------------------------------------------------------------- model

std::vector<const Route*> Model::all_routes() const {
  std::vector<const Route*> out;
  for (const auto& [name, r] : policy_.routes) out.push_back(&r);
  for (const auto& [name, r] : routes_)
    if (!policy_.routes.count(name)) out.push_back(&r);  // the policy file wins
  std::sort(out.begin(), out.end(), [](const Route* a, const Route* b) { return a->name < b->name; });
  return out;
}

const Route* Model::find_route(const std::string& name) const {
  if (auto it = policy_.routes.find(name); it != policy_.routes.end()) return &it->second;
  if (auto it = routes_.find(name); it != routes_.end()) return &it->second;
  return nullptr;
}

Changes Model::set_routes(std::map<std::string, Route> r, int64_t now) {
  settle();
  routes_ = std::move(r);
  compile_routes();
  return recompute_all(now);
}

void Model::route_hash(CompiledRoute& c) const {
  const Route& r = *c.route;
  uint64_t h = hash_str(r.name, 0x7007e5ull);
  h = mix(h ^ (r.masquerade ? 1 : 2));
  for (const auto& n : r.networks) h = hash_str(n.to_string(), h);
  for (const auto& [id, metric] : c.routers) h = mix(h ^ (uint64_t(id) << 20 | uint64_t(metric)));
  for (const auto& g : c.grants) {
    h = mix(h ^ rules_[g.rule].content_hash);
    for (uint8_t n : g.networks) h = mix(h ^ (0x100u | n));
    for (const auto& d : g.destinations) h = hash_str(d.to_string(), h);
  }
  c.content_hash = h;
}

void Model::compile_routes() {
  croutes_.clear();
  // Group routers need every peer's attributes: made once, and only then.
  std::vector<std::pair<uint32_t, PeerAttrs>> attrs;
  for (const Route* r : all_routes()) {
    CompiledRoute c;
    c.route = r;
    for (const auto& rr : r->routers) {
      if (!rr.peer.empty()) {
        auto it = by_name_.find(rr.peer);
        if (it != by_name_.end() && !by_id_[it->second]->cut_off())
          c.routers.emplace_back(it->second, rr.metric);
        continue;
      }
      if (attrs.empty())
        for (const auto& p : by_id_)
          if (p && !p->cut_off()) attrs.emplace_back(p->id, p->attrs());
      Selector s;
      s.kind = Selector::Kind::Group;
      s.name = rr.group;
      for (const auto& [id, a] : attrs)
        if (selector_matches(policy_, s, a)) c.routers.emplace_back(id, rr.metric);
    }
    // By id, each peer once with its lowest metric.
    std::sort(c.routers.begin(), c.routers.end());
    c.routers.erase(std::unique(c.routers.begin(), c.routers.end(),
                                [](const auto& a, const auto& b) { return a.first == b.first; }),
                    c.routers.end());
    for (size_t i = 0; i < policy_.rules.size(); ++i) {
      CompiledRoute::Grant g;
      g.rule = static_cast<uint32_t>(i);
      auto grant = [&](size_t n, const Prefix& dest) {
        if (std::find(g.networks.begin(), g.networks.end(), n) == g.networks.end())
          g.networks.push_back(static_cast<uint8_t>(n));
        if (std::find(g.destinations.begin(), g.destinations.end(), dest) == g.destinations.end())
          g.destinations.push_back(dest);
      };
      for (const auto& s : policy_.rules[i].dst) {
        if (s.kind == Selector::Kind::Route && s.name == r->name) {
          for (size_t n = 0; n < r->networks.size(); ++n) grant(n, r->networks[n]);
        } else if (s.kind == Selector::Kind::Cidr) {
          for (const auto& [n, dest] : cidr_grants(s.cidr, *r)) grant(n, dest);
        }
      }
      if (g.networks.empty()) continue;
      std::sort(g.networks.begin(), g.networks.end());
      c.grants.push_back(std::move(g));
    }
    route_hash(c);
    croutes_.push_back(std::move(c));
  }
}

void Model::index_routes(const Peer& p) {
  if (p.cut_off()) return;
  PeerAttrs a = p.attrs();
  for (auto& c : croutes_) {
    int m = router_metric(policy_, *c.route, a);
    if (m < 0) continue;
    auto it = std::lower_bound(c.routers.begin(), c.routers.end(), std::pair<uint32_t, int>{p.id, -1});
    if (it != c.routers.end() && it->first == p.id) it->second = m;
    else c.routers.insert(it, {p.id, m});
    route_hash(c);
  }
}

void Model::unindex_routes(const Peer& p) {
  for (auto& c : croutes_) {
    auto it = std::lower_bound(c.routers.begin(), c.routers.end(), std::pair<uint32_t, int>{p.id, -1});
    if (it == c.routers.end() || it->first != p.id) continue;
    c.routers.erase(it);
    route_hash(c);
  }
}

bool Model::uses_route(const Peer& p, const CompiledRoute& c, std::vector<uint8_t>* nets) const {
  nets->clear();
  if (p.cut_off() || is_router(c, p.id)) return false;
  for (const auto& g : c.grants) {
    const auto& src = rules_[g.rule].src;
    if (!std::binary_search(src.begin(), src.end(), p.id)) continue;
    for (uint8_t n : g.networks)
      if (std::find(nets->begin(), nets->end(), n) == nets->end()) nets->push_back(n);
  }
  std::sort(nets->begin(), nets->end());
  return !nets->empty();
}

void Model::route_neighbours(const Peer& p, std::vector<uint32_t>& out) const {
  std::vector<uint8_t> nets;
  for (const auto& c : croutes_) {
    if (is_router(c, p.id)) {
      for (const auto& g : c.grants)
        out.insert(out.end(), rules_[g.rule].src.begin(), rules_[g.rule].src.end());
    } else if (uses_route(p, c, &nets)) {
      for (const auto& [id, metric] : c.routers) out.push_back(id);
    }
  }
}

uint64_t Model::route_digest(const Peer& p, std::vector<uint32_t>& linked) const {
  uint64_t h = 0;
  std::vector<uint8_t> nets;
  nets.reserve(8);
  for (size_t i = 0; i < croutes_.size(); ++i) {
    const CompiledRoute& c = croutes_[i];
    if (is_router(c, p.id)) {
      h ^= mix(c.content_hash ^ 0x5e1full ^ (uint64_t(i) << 48));
      // Forward rules: sources are the rule's src minus this peer.
      for (const auto& g : c.grants) {
        const CompiledRule& r = rules_[g.rule];
        uint64_t s = r.src_hash;
        size_t n = r.src.size();
        if (std::binary_search(r.src.begin(), r.src.end(), p.id)) {
          s ^= mix(p.id);
          --n;
        }
        if (n > 0) h ^= mix(c.content_hash ^ s ^ (uint64_t(g.rule) << 40) ^ 0xf0ull);
        linked.insert(linked.end(), r.src.begin(), r.src.end());
      }
    } else if (uses_route(p, c, &nets)) {
      uint64_t x = mix(c.content_hash ^ 0xc11e7ull ^ (uint64_t(i) << 48));
      for (uint8_t n : nets) x = mix(x ^ n);
      h ^= x;
      for (const auto& [id, metric] : c.routers) linked.push_back(id);
    }
  }
  return h;
}

void Model::router_map(const Peer& p, NetMap& m) const {
  for (const auto& c : croutes_) {
    if (!is_router(c, p.id)) continue;
    for (const auto& n : c.route->networks)
      m.self.routes.push_back(SelfRoute{n, c.route->masquerade});
    for (const auto& g : c.grants) {
      auto fr = rule_firewall(g.rule, p.id);
      if (!fr) continue;
      fr->destinations = g.destinations;
      m.forward.push_back(std::move(*fr));
    }
  }
}

std::vector<std::pair<uint32_t, std::vector<PeerRoute>>> Model::client_routes(const Peer& p) const {
  std::map<uint32_t, std::vector<PeerRoute>> via;
  std::vector<uint8_t> nets;
  for (const auto& c : croutes_) {
    if (!uses_route(p, c, &nets)) continue;
    for (const auto& [id, metric] : c.routers)
      for (uint8_t n : nets)
        via[id].push_back(PeerRoute{c.route->networks[n], metric, c.route->masquerade});
  }
  return {via.begin(), via.end()};
}

std::vector<std::pair<std::string, int>> Model::route_routers(const std::string& name) const {
  std::vector<std::pair<std::string, int>> out;
  for (const auto& c : croutes_)
    if (c.route->name == name)
      for (const auto& [id, metric] : c.routers) out.emplace_back(by_id_[id]->name, metric);
  return out;
}

std::vector<std::string> Model::route_clients(const std::string& name) const {
  std::vector<std::string> out;
  std::vector<uint8_t> nets;
  for (const auto& c : croutes_) {
    if (c.route->name != name) continue;
    for (const auto& p : by_id_)
      if (p && uses_route(*p, c, &nets)) out.push_back(p->name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Verdict Model::evaluate_route(const Policy& pol, const PeerAttrs& from, const Route& r,
                              const Service& s) const {
  if (router_metric(pol, r, from) >= 0) return {false, "router"};  // its own network
  for (const auto& rule : pol.rules) {
    if (!rule_allows_service(rule, s)) continue;
    bool src = false, dst = false;
    for (const auto& sel : rule.src) src = src || selector_matches(pol, sel, from);
    if (!src) continue;
    for (const auto& sel : rule.dst)
      dst = dst || (sel.kind == Selector::Kind::Route && sel.name == r.name) ||
            (sel.kind == Selector::Kind::Cidr && !cidr_grants(sel.cidr, r).empty());
    if (dst) return {true, rule.name};
  }
  return {false, "default-deny"};
}

// ---------------------------------------------------------------- admin ops

Json route_view(const Model& m, const Route& r) {
  Json j = route_to_json(r);
  j["source"] = r.from_policy ? "policy" : "admin";
  j["exit_node"] = r.exit_node();
  Json live = Json::array();
  for (const auto& [name, metric] : m.route_routers(r.name))
    live.push_back({{"peer", name}, {"metric", metric}});
  j["active_routers"] = live;
  return j;
}

static std::vector<Prefix> overlay_of(const Model& m) {
  return {m.config().ipv4.canonical(), m.config().ipv6.canonical()};
}

Status check_policy_routes(const Model& m, const Policy& p) {
  std::vector<const Route*> all;
  for (const auto& [name, r] : p.routes) {
    if (m.admin_routes().count(name))
      return data_error("routes." + name + ": route '" + name +
                        "' is defined by `mesh-coord route`; delete it there first");
    all.push_back(&r);
  }
  for (const auto& [name, r] : m.admin_routes()) all.push_back(&r);
  for (const auto& [name, r] : p.routes)
    if (Status s = check_route(r, overlay_of(m), all); !s)
      return data_error("routes." + name + ": " + s.message());
  return Status::ok();
}

Result<std::map<std::string, Route>> routes_from_records(
    const std::vector<std::pair<std::string, Json>>& records) {
  std::map<std::string, Route> out;
  for (const auto& [key, j] : records) {
    auto r = parse_route(JsonView(j, "stored route " + key), true);
    if (!r) return Status(Exit::Config, "corrupt route record: " + r.status().message());
    out.emplace(r->name, std::move(*r));
  }
  return out;
}

// Every router names a known peer, or a group the policy declares or some
// peer carries.
static Status check_routers(Model& m, const Route& r) {
  for (const auto& rr : r.routers) {
    if (!rr.peer.empty()) {
      if (!m.by_name(rr.peer)) return data_error("request: routers: unknown peer '" + rr.peer + "'");
      continue;
    }
    bool known = m.policy().groups.count(rr.group) > 0;
    for (const Peer* p : m.peers())
      known = known || std::find(p->groups.begin(), p->groups.end(), rr.group) != p->groups.end();
    if (!known)
      return data_error("request: routers: unknown group '" + rr.group +
                        "' (declare it in the policy or give it to a peer)");
  }
  return Status::ok();
}

Result<RouteOpResult> route_op(Model& m, const std::string& op, const Json& body, int64_t now) {
  RouteOpResult out;
  if (op == "list") {
    Json a = Json::array();
    for (const Route* r : m.all_routes()) a.push_back(route_view(m, *r));
    out.response = Json{{"routes", a}};
    return out;
  }
  JsonView v(body, "request");
  if (!body.is_object()) return v.error("expected a JSON object");
  std::string name;
  if (op == "show" || op == "delete") {
    MESH_TRY(v.check_keys({"name"}));
    MESH_ASSIGN(name, v.get_string("name"));
  } else {
    MESH_ASSIGN(name, v.get_string("name"));
  }
  const Route* existing = m.find_route(name);
  if (op == "show") {
    if (!existing) return Status(Exit::NoInput, "request: name: no route '" + name + "'");
    out.response = route_view(m, *existing);
    out.response["clients"] = m.route_clients(name);
    return out;
  }
  if (existing && existing->from_policy)
    return data_error("request: name: route '" + name +
                      "' is defined in the policy file; change it there (mesh-coord policy set)");
  std::map<std::string, Route> next = m.admin_routes();
  out.name = name;
  if (op == "delete") {
    if (!existing) return Status(Exit::NoInput, "request: name: no route '" + name + "'");
    next.erase(name);
    out.erase = true;
  } else if (op == "create" || op == "update") {
    Json merged = body;
    if (op == "create") {
      if (existing) return data_error("request: name: route '" + name + "' already exists");
    } else {
      if (!existing) return Status(Exit::NoInput, "request: name: no route '" + name + "'");
      merged = route_to_json(*existing);
      for (auto it = body.begin(); it != body.end(); ++it) merged[it.key()] = it.value();
    }
    MESH_ASSIGN(auto r, parse_route(JsonView(merged, "request"), true));
    MESH_TRY(check_routers(m, r));
    MESH_TRY(check_route(r, overlay_of(m), m.all_routes()));
    out.record = dump_json(route_to_json(r));
    next[name] = std::move(r);
  } else {
    return data_error("unknown route operation '" + op + "'");
  }
  out.write = true;
  out.changes = m.set_routes(std::move(next), now);
  out.detail = Json{{"maps_changed", out.changes.changed.size()}};
  if (const Route* r = m.find_route(name)) {
    out.response = route_view(m, *r);
    out.detail["route"] = route_to_json(*r);
  } else {
    out.response = Json{{"deleted", name}};
  }
  out.response["maps_changed"] = out.changes.changed.size();
  return out;
}

}  // namespace mesh::coord
