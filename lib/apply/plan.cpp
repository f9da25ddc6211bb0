#include "apply/plan.h"

#include <algorithm>
#include <map>
#include <set>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "apply/format.h"

namespace mesh::apply {
namespace {

template <typename T>
void sort_unique(std::vector<T>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

// a \ b for sorted vectors.
template <typename T>
std::vector<T> minus(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<T> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// The endpoint rule (man/mesh-apply.8): an endpoints document wins; else the
// endpoint WireGuard already has (it may have roamed there); else the map's.
std::optional<SockAddr> endpoint_for(const DesiredPeer& d, const PeerState* cur) {
  if (d.forced_endpoint) return d.forced_endpoint;
  if (cur && cur->endpoint) return cur->endpoint;
  return d.map_endpoint;
}

Json prefixes(const std::vector<Prefix>& ps) {
  Json a = Json::array();
  for (const auto& p : ps) a.push_back(p.to_string());
  return a;
}

}  // namespace

bool Plan::changed() const {
  return create_interface || set_private_key || set_listen_port || !peers.empty() ||
         !addresses_add.empty() || !addresses_del.empty() || !routes_add.empty() ||
         !routes_del.empty() || set_mtu || set_up || firewall || hosts_changed ||
         !sysctl_enable.empty() || !sysctl_restore.empty() || set_fwmark || !exit.empty();
}

size_t Plan::count(PeerChange::Kind k) const {
  return static_cast<size_t>(
      std::count_if(peers.begin(), peers.end(), [k](const PeerChange& c) { return c.kind == k; }));
}

std::vector<Prefix> routes_for(const std::vector<Prefix>& addresses,
                               const std::vector<DesiredPeer>& peers) {
  std::vector<Prefix> out;
  for (const auto& p : peers)
    for (const auto& ip : p.allowed_ips) {
      if (ip.len == 0) continue;  // an exit node's: policy routing
      bool on_link = false;
      for (const auto& a : addresses)
        if (a.addr.family == ip.addr.family && a.canonical().contains(ip)) on_link = true;
      if (!on_link) out.push_back(ip.canonical());
    }
  sort_unique(&out);
  return out;
}

namespace {

void lower_keepalive(DesiredPeer* p) {
  if (p->keepalive == 0 || p->keepalive > kRouteKeepalive) p->keepalive = kRouteKeepalive;
}

// MapPeer is const MapPeer& (copied from) or MapPeer&& (moved from).
template <typename MapPeer>
DesiredPeer make_peer(MapPeer&& mp, const EndpointsDoc& endpoints) {
  constexpr bool kMove = !std::is_const_v<std::remove_reference_t<MapPeer>>;
  DesiredPeer p;
  if constexpr (kMove) p.name = std::move(mp.name);
  else p.name = mp.name;
  p.public_key = mp.public_key;
  if (mp.preshared_key) p.preshared_key = *mp.preshared_key;
  if constexpr (kMove) p.allowed_ips = std::move(mp.allowed_ips);
  else p.allowed_ips = mp.allowed_ips;
  for (auto& a : p.allowed_ips) a = a.canonical();
  sort_unique(&p.allowed_ips);
  p.keepalive = mp.keepalive;
  if constexpr (kMove) p.routes = std::move(mp.routes);
  else p.routes = mp.routes;
  if (!mp.endpoints.empty()) p.map_endpoint = mp.endpoints.front().endpoint;
  if (const PeerPath* path = endpoints.find(mp.public_key); path && path->endpoint)
    p.forced_endpoint = path->endpoint;  // relay-needed without endpoint: keep current/map
  return p;
}

// Map is const NetMap (copied from) or NetMap (moved from).
template <typename Map>
Result<Desired> build_desired(Map& map, const SecretKey& key, const EndpointsDoc& endpoints,
                              std::optional<uint16_t> listen_port_override) {
  constexpr bool kMove = !std::is_const_v<Map>;
  Desired d;
  if (key.public_key() != map.self.public_key)
    return data_error("the private key does not belong to this map (its public key is " +
                      key.public_key().to_base64() + ", the map's self.public_key is " +
                      map.self.public_key.to_base64() + ")");
  d.private_key = key;
  if (listen_port_override && *listen_port_override)
    d.listen_port = listen_port_override;
  else if (map.self.listen_port)
    d.listen_port = map.self.listen_port;
  d.mtu = map.self.mtu;
  d.addresses = map.self.addresses;
  sort_unique(&d.addresses);
  // Sorted by key through a permutation: moving whole DesiredPeers around
  // in a sort of thousands costs more than building them in order.
  std::vector<uint32_t> order(map.peers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  std::sort(order.begin(), order.end(), [&map](uint32_t a, uint32_t b) {
    return map.peers[a].public_key < map.peers[b].public_key;
  });
  d.peers.reserve(order.size());
  // Router side: a forward source (a route client) keeps a short keepalive
  // so its HA watcher hears from this router (kRouteKeepalive). Looked up
  // by prefix length: thousands of /32 sources must not mean a scan each.
  std::set<Prefix> sources;
  std::set<std::pair<int, int>> lengths;  // (family, length)
  for (const auto& r : map.forward)
    for (const auto& src : r.sources) {
      sources.insert(src.canonical());
      lengths.insert({src.addr.family, src.len});
    }
  for (uint32_t idx : order) {
    bool route_client = false;
    for (const auto& a : map.peers[idx].addresses)
      for (const auto& [fam, len] : lengths)
        route_client = route_client || (fam == a.addr.family && sources.count(Prefix{a.addr, len}.canonical()));
    if constexpr (kMove) d.peers.push_back(make_peer(std::move(map.peers[idx]), endpoints));
    else d.peers.push_back(make_peer(map.peers[idx], endpoints));
    if (route_client) lower_keepalive(&d.peers.back());
  }
  d.routes = routes_for(d.addresses, d.peers);
  bool v4 = false, v6 = false;
  for (const auto& r : map.self.routes) (r.network.addr.is_v4() ? v4 : v6) = true;
  if (v4) d.forwarding.push_back(kForwardV4);
  if (v6) d.forwarding.push_back(kForwardV6);
  return d;
}

}  // namespace

DesiredPeer desired_peer(const MapPeer& peer, const EndpointsDoc& endpoints) {
  return make_peer(peer, endpoints);
}

PeerUpdate peer_addition(const DesiredPeer& d) {
  PeerUpdate p;
  p.public_key = d.public_key;
  p.preshared_key = d.preshared_key;
  p.endpoint = endpoint_for(d, nullptr);
  if (d.keepalive) p.keepalive = d.keepalive;
  p.replace_allowed_ips = true;
  p.allowed_ips = d.allowed_ips;
  return p;
}

Result<Desired> desired_from_map(const NetMap& map, const SecretKey& key, const EndpointsDoc& endpoints,
                                 std::optional<uint16_t> listen_port_override) {
  return build_desired(map, key, endpoints, listen_port_override);
}

Result<Desired> desired_from_map(NetMap&& map, const SecretKey& key, const EndpointsDoc& endpoints,
                                 std::optional<uint16_t> listen_port_override) {
  return build_desired(map, key, endpoints, listen_port_override);
}

void choose_routes(Desired* want, const DeviceState& device) {
  // network -> candidates (index into want->peers, metric)
  std::map<Prefix, std::vector<std::pair<size_t, int>>> nets;
  for (size_t i = 0; i < want->peers.size(); ++i)
    for (const auto& r : want->peers[i].routes)
      if (!is_default_route(r.network)) nets[r.network].push_back({i, r.metric});
  if (nets.empty()) return;
  // Who holds each network on the device now.
  std::map<Prefix, PublicKey> holder;
  for (const auto& p : device.peers)
    for (const auto& ip : p.allowed_ips)
      if (nets.count(ip)) holder[ip] = p.public_key;
  want->route_choices.clear();
  for (auto& [net, cands] : nets) {
    // Peers are sorted by key, so the first of equal metrics has the lowest.
    size_t best = cands.front().first;
    int best_metric = cands.front().second;
    for (const auto& [i, m] : cands)
      if (m < best_metric) best = i, best_metric = m;
    if (auto h = holder.find(net); h != holder.end())
      for (const auto& [i, m] : cands)
        if (want->peers[i].public_key == h->second) best = i, best_metric = m;
    DesiredPeer& p = want->peers[best];
    auto at = std::lower_bound(p.allowed_ips.begin(), p.allowed_ips.end(), net);
    if (at == p.allowed_ips.end() || *at != net) p.allowed_ips.insert(at, net);
    want->route_choices.push_back({net, p.public_key, p.name, best_metric});
    for (const auto& [i, m] : cands) lower_keepalive(&want->peers[i]);
  }
  want->routes = routes_for(want->addresses, want->peers);
}

Status use_exit_node(Desired* want, const std::string& name, bool block_lan, std::vector<Prefix> bypass) {
  want->exit = ExitWant{};
  want->fwmark = 0;
  if (name.empty()) return Status::ok();
  DesiredPeer* exit = nullptr;
  for (auto& p : want->peers)
    if (p.name == name) exit = &p;
  if (!exit) return data_error("--exit-node " + name + ": no peer of that name in the map");
  ExitWant w;
  w.name = name;
  w.block_lan = block_lan;
  w.bypass = std::move(bypass);
  for (const auto& r : exit->routes) {
    if (!is_default_route(r.network)) continue;
    (r.network.addr.is_v4() ? w.v4 : w.v6) = true;
    auto at = std::lower_bound(exit->allowed_ips.begin(), exit->allowed_ips.end(), r.network);
    if (at == exit->allowed_ips.end() || *at != r.network) exit->allowed_ips.insert(at, r.network);
  }
  if (!w.v4 && !w.v6)
    return data_error("--exit-node " + name + ": that peer offers no default route (it is not an exit node)");
  want->exit = std::move(w);
  want->fwmark = kExitFwmark;
  want->forwarding.push_back(kSrcValidMark);
  return Status::ok();
}

Plan diff(const Desired& want, const Current& cur) {
  Plan plan;
  plan.create_interface = !cur.link.exists;
  const DeviceState& dev = cur.device;
  // Compare the private key in constant time.
  if (!dev.private_key ||
      !secure_equal(std::string_view(reinterpret_cast<const char*>(dev.private_key->bytes().data()), kKeyLen),
                    std::string_view(reinterpret_cast<const char*>(want.private_key.bytes().data()), kKeyLen)))
    plan.set_private_key = true;
  if (want.listen_port && *want.listen_port != dev.listen_port) plan.set_listen_port = want.listen_port;

  // Merge-walk the two key-sorted peer lists.
  size_t i = 0, j = 0;
  const auto& wp = want.peers;
  const auto& cp = dev.peers;
  std::vector<PeerChange> removals, others;
  others.reserve(wp.size());  // at most one change per wanted peer
  while (i < wp.size() || j < cp.size()) {
    if (j == cp.size() || (i < wp.size() && wp[i].public_key < cp[j].public_key)) {
      const DesiredPeer& d = wp[i++];
      PeerChange c;
      c.kind = PeerChange::Kind::Add;
      c.name = d.name;
      c.public_key = d.public_key;
      c.preshared_key = d.preshared_key;
      c.preshared_key_changed = d.preshared_key.has_value();
      c.endpoint = endpoint_for(d, nullptr);
      if (d.keepalive) c.keepalive = d.keepalive;
      c.allowed_ips = d.allowed_ips;  // all of them new: ips_added stays empty
      others.push_back(std::move(c));
    } else if (i == wp.size() || cp[j].public_key < wp[i].public_key) {
      PeerChange c;
      c.kind = PeerChange::Kind::Remove;
      c.public_key = cp[j].public_key;
      c.ips_removed = cp[j].allowed_ips;
      removals.push_back(std::move(c));
      ++j;
    } else {
      const DesiredPeer& d = wp[i++];
      const PeerState& p = cp[j++];
      PeerChange c;
      c.kind = PeerChange::Kind::Update;
      c.name = d.name;
      c.public_key = d.public_key;
      c.allowed_ips = d.allowed_ips;
      auto ep = endpoint_for(d, &p);
      if (ep && ep != p.endpoint) {
        c.fields.push_back("endpoint");
        c.endpoint = ep;
      }
      if (d.keepalive != p.keepalive) {
        c.fields.push_back("keepalive");
        c.keepalive = d.keepalive;
      }
      if (!psk_equal(d.preshared_key, p.preshared_key)) {
        c.fields.push_back("preshared_key");
        c.preshared_key_changed = true;
        c.preshared_key = d.preshared_key ? *d.preshared_key : SecretKey();
      }
      if (d.allowed_ips != p.allowed_ips) {
        c.fields.push_back("allowed_ips");
        c.ips_added = minus(d.allowed_ips, p.allowed_ips);
        c.ips_removed = minus(p.allowed_ips, d.allowed_ips);
      }
      if (c.fields.empty())
        ++plan.peers_unchanged;
      else
        others.push_back(std::move(c));
    }
  }
  // Removals first: an allowed IP that moves from a removed peer to another
  // one is then added to its new owner in the same transaction.
  if (removals.empty()) {
    plan.peers = std::move(others);
  } else {
    plan.peers = std::move(removals);
    plan.peers.reserve(plan.peers.size() + others.size());
    for (auto& c : others) plan.peers.push_back(std::move(c));
  }

  const LinkCurrent& link = cur.link;
  plan.addresses_add = minus(want.addresses, link.addresses);
  plan.addresses_del = minus(link.addresses, want.addresses);
  plan.routes_add = minus(want.routes, link.routes);
  plan.routes_del = minus(link.routes, want.routes);
  if (link.mtu != want.mtu) plan.set_mtu = want.mtu;
  plan.set_up = !link.up;
  plan.firewall = cur.firewall_digest != want.firewall_digest;
  for (const auto& k : want.forwarding) {
    auto it = cur.sysctls.find(k);
    if (it == cur.sysctls.end() || it->second != "1") plan.sysctl_enable.push_back(k);
  }
  for (const auto& [k, v] : cur.saved_sysctls)
    if (std::find(want.forwarding.begin(), want.forwarding.end(), k) == want.forwarding.end())
      plan.sysctl_restore.push_back({k, v});
  plan.route_choices = want.route_choices;
  if (want.fwmark != dev.fwmark) plan.set_fwmark = want.fwmark;
  plan.exit_node = want.exit.name;
  plan.exit = exit_diff(exit_state_for(want.exit, cur.ifindex), cur.exit);
  return plan;
}

PeerUpdate peer_update(const PeerChange& c) {
  PeerUpdate p;
  p.public_key = c.public_key;
  switch (c.kind) {
    case PeerChange::Kind::Remove:
      p.remove = true;
      break;
    case PeerChange::Kind::Add:
      if (c.preshared_key) p.preshared_key = c.preshared_key;
      p.endpoint = c.endpoint;
      p.keepalive = c.keepalive;
      // A fresh peer has no allowed IPs; replace guards against a peer
      // created concurrently by someone else.
      p.replace_allowed_ips = true;
      p.allowed_ips = c.allowed_ips;
      break;
    case PeerChange::Kind::Update:
      p.update_only = true;
      if (c.preshared_key_changed) p.preshared_key = c.preshared_key;
      p.endpoint = c.endpoint;
      p.keepalive = c.keepalive;
      if (!c.ips_removed.empty()) {
        // Removal needs a replace; the replacement list follows in the
        // same SET, applied under one device lock.
        p.replace_allowed_ips = true;
        p.allowed_ips = c.allowed_ips;
      } else {
        // Pure additions: existing entries are never withdrawn.
        p.allowed_ips = c.ips_added;
      }
      break;
  }
  return p;
}

DeviceUpdate device_update(const Plan& plan, const Desired& want) {
  DeviceUpdate u;
  if (plan.set_private_key) u.private_key = want.private_key;
  u.listen_port = plan.set_listen_port;
  u.fwmark = plan.set_fwmark;
  u.peers.reserve(plan.peers.size());
  for (const auto& c : plan.peers) u.peers.push_back(peer_update(c));
  return u;
}

namespace {

Json forwarding_json(const Plan& plan) {
  Json restored = Json::array();
  for (const auto& [k, v] : plan.sysctl_restore) restored.push_back(k);
  return Json{{"enabled", plan.sysctl_enable}, {"restored", restored}};
}

Json exit_json(const Plan& plan) {
  return Json{{"peer", plan.exit_node.empty() ? Json(nullptr) : Json(plan.exit_node)},
              {"changed", !plan.exit.empty() || plan.set_fwmark.has_value()},
              {"fwmark", plan.set_fwmark ? Json(*plan.set_fwmark) : Json(nullptr)},
              {"rules_added", plan.exit.rules_add.size()},
              {"rules_removed", plan.exit.rules_del.size()},
              {"routes_added", plan.exit.routes_add.size()},
              {"routes_removed", plan.exit.routes_del.size()}};
}

Json via_json(const Plan& plan) {
  Json a = Json::array();
  for (const auto& c : plan.route_choices)
    a.push_back({{"network", c.network.to_string()}, {"peer", c.name}, {"metric", c.metric},
                 {"public_key", c.public_key.to_base64()}});
  return a;
}

}  // namespace

Json plan_to_json(const Plan& plan, const std::string& interface, const std::string& backend,
                  const std::string& firewall_table, bool dry_run) {
  Json added = Json::array(), updated = Json::array(), removed = Json::array();
  for (const auto& c : plan.peers) {
    Json e{{"public_key", c.public_key.to_base64()}};
    if (!c.name.empty()) e["name"] = c.name;
    switch (c.kind) {
      case PeerChange::Kind::Add:
        e["allowed_ips"] = prefixes(c.allowed_ips);
        e["endpoint"] = c.endpoint ? Json(c.endpoint->to_string()) : Json(nullptr);
        added.push_back(std::move(e));
        break;
      case PeerChange::Kind::Update:
        e["changes"] = c.fields;
        if (c.endpoint) e["endpoint"] = c.endpoint->to_string();
        if (c.keepalive) e["keepalive"] = *c.keepalive;
        if (!c.ips_added.empty()) e["allowed_ips_added"] = prefixes(c.ips_added);
        if (!c.ips_removed.empty()) e["allowed_ips_removed"] = prefixes(c.ips_removed);
        updated.push_back(std::move(e));
        break;
      case PeerChange::Kind::Remove:
        e["allowed_ips"] = prefixes(c.ips_removed);
        removed.push_back(std::move(e));
        break;
    }
  }
  return Json{
      {"interface", interface},
      {"backend", backend},
      {"dry_run", dry_run},
      {"exit_node", exit_json(plan)},
      {"changed", plan.changed()},
      {"created", plan.create_interface},
      {"private_key_changed", plan.set_private_key},
      {"listen_port", plan.set_listen_port ? Json(*plan.set_listen_port) : Json(nullptr)},
      {"peers",
       {{"added", added}, {"updated", updated}, {"removed", removed},
        {"unchanged", plan.peers_unchanged}}},
      {"addresses", {{"added", prefixes(plan.addresses_add)}, {"removed", prefixes(plan.addresses_del)}}},
      {"routes", {{"added", prefixes(plan.routes_add)}, {"removed", prefixes(plan.routes_del)},
                  {"via", via_json(plan)}}},
      {"link", {{"mtu", plan.set_mtu ? Json(*plan.set_mtu) : Json(nullptr)}, {"up", plan.set_up}}},
      {"firewall", {{"table", firewall_table}, {"changed", plan.firewall}}},
      {"forwarding", forwarding_json(plan)},
      {"hosts",
       {{"file", plan.hosts_file.empty() ? Json(nullptr) : Json(plan.hosts_file)},
        {"changed", plan.hosts_changed},
        {"names", plan.hosts_names}}},
  };
}

namespace {

// A JSON string as dump_json() writes it: plain printable ASCII as is,
// anything else through nlohmann (escapes, invalid UTF-8 replaced).
void put_string(std::string* o, const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
      o->append(dump_json(Json(s)));
      return;
    }
  o->push_back('"');
  o->append(s);
  o->push_back('"');
}

void put_prefixes(std::string* o, const std::vector<Prefix>& ps) {
  o->push_back('[');
  for (size_t i = 0; i < ps.size(); ++i) {
    if (i) o->push_back(',');
    o->push_back('"');
    append_prefix(o, ps[i]);
    o->push_back('"');
  }
  o->push_back(']');
}

void put_endpoint(std::string* o, const SockAddr& ep) {
  o->push_back('"');
  append_sockaddr(o, ep);
  o->push_back('"');
}

const char* boolean(bool b) { return b ? "true" : "false"; }

// One peer entry; members in the order nlohmann's std::map keeps them.
void put_peer(std::string* o, const PeerChange& c) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  auto name_and_key = [&] {
    if (!c.name.empty()) {
      o->append("\"name\":");
      put_string(o, c.name);
      o->push_back(',');
    }
    // Standard base64 with padding, as PublicKey::to_base64().
    static_assert(kKeyLen % 3 == 2);
    o->append("\"public_key\":\"");
    const auto& b = c.public_key.bytes;
    size_t i = 0;
    for (; i + 3 <= b.size(); i += 3) {
      uint32_t v = (uint32_t{b[i]} << 16) | (uint32_t{b[i + 1]} << 8) | b[i + 2];
      for (int k = 18; k >= 0; k -= 6) o->push_back(kB64[(v >> k) & 63]);
    }
    uint32_t v = uint32_t{b[i]} << 16 | (i + 1 < b.size() ? uint32_t{b[i + 1]} << 8 : 0);
    o->push_back(kB64[(v >> 18) & 63]);
    o->push_back(kB64[(v >> 12) & 63]);
    o->push_back(i + 1 < b.size() ? kB64[(v >> 6) & 63] : '=');
    o->push_back('=');
    o->append("\"}");
  };
  o->push_back('{');
  switch (c.kind) {
    case PeerChange::Kind::Add:
      o->append("\"allowed_ips\":");
      put_prefixes(o, c.allowed_ips);
      o->append(",\"endpoint\":");
      if (c.endpoint)
        put_endpoint(o, *c.endpoint);
      else
        o->append("null");
      o->push_back(',');
      break;
    case PeerChange::Kind::Update:
      if (!c.ips_added.empty()) {
        o->append("\"allowed_ips_added\":");
        put_prefixes(o, c.ips_added);
        o->push_back(',');
      }
      if (!c.ips_removed.empty()) {
        o->append("\"allowed_ips_removed\":");
        put_prefixes(o, c.ips_removed);
        o->push_back(',');
      }
      o->append("\"changes\":[");
      for (size_t i = 0; i < c.fields.size(); ++i) {
        if (i) o->push_back(',');
        put_string(o, c.fields[i]);
      }
      o->append("],");
      if (c.endpoint) {
        o->append("\"endpoint\":");
        put_endpoint(o, *c.endpoint);
        o->push_back(',');
      }
      if (c.keepalive) {
        o->append("\"keepalive\":");
        o->append(std::to_string(*c.keepalive));
        o->push_back(',');
      }
      break;
    case PeerChange::Kind::Remove:
      o->append("\"allowed_ips\":");
      put_prefixes(o, c.ips_removed);
      o->push_back(',');
      break;
  }
  name_and_key();
}

void put_peers(std::string* o, const Plan& plan, PeerChange::Kind kind) {
  o->push_back('[');
  bool first = true;
  for (const auto& c : plan.peers) {
    if (c.kind != kind) continue;
    if (!first) o->push_back(',');
    first = false;
    put_peer(o, c);
  }
  o->push_back(']');
}

}  // namespace

std::string plan_json_text(const Plan& plan, const std::string& interface, const std::string& backend,
                           const std::string& firewall_table, bool dry_run) {
  std::string o;
  o.reserve(512 + plan.peers.size() * 160);
  o.append("{\"addresses\":{\"added\":");
  put_prefixes(&o, plan.addresses_add);
  o.append(",\"removed\":");
  put_prefixes(&o, plan.addresses_del);
  o.append("},\"backend\":");
  put_string(&o, backend);
  o.append(",\"changed\":").append(boolean(plan.changed()));
  o.append(",\"created\":").append(boolean(plan.create_interface));
  o.append(",\"dry_run\":").append(boolean(dry_run));
  o.append(",\"exit_node\":").append(dump_json(exit_json(plan)));
  o.append(",\"firewall\":{\"changed\":").append(boolean(plan.firewall));
  o.append(",\"table\":");
  put_string(&o, firewall_table);
  // Small: through the DOM, exactly as plan_to_json() writes them.
  o.append("},\"forwarding\":").append(dump_json(forwarding_json(plan)));
  o.append(",\"hosts\":{\"changed\":").append(boolean(plan.hosts_changed));
  o.append(",\"file\":");
  if (plan.hosts_file.empty())
    o.append("null");
  else
    put_string(&o, plan.hosts_file);
  o.append(",\"names\":").append(std::to_string(plan.hosts_names));
  o.append("},\"interface\":");
  put_string(&o, interface);
  o.append(",\"link\":{\"mtu\":");
  o.append(plan.set_mtu ? std::to_string(*plan.set_mtu) : "null");
  o.append(",\"up\":").append(boolean(plan.set_up));
  o.append("},\"listen_port\":");
  o.append(plan.set_listen_port ? std::to_string(*plan.set_listen_port) : "null");
  o.append(",\"peers\":{\"added\":");
  put_peers(&o, plan, PeerChange::Kind::Add);
  o.append(",\"removed\":");
  put_peers(&o, plan, PeerChange::Kind::Remove);
  o.append(",\"unchanged\":").append(std::to_string(plan.peers_unchanged));
  o.append(",\"updated\":");
  put_peers(&o, plan, PeerChange::Kind::Update);
  o.append("},\"private_key_changed\":").append(boolean(plan.set_private_key));
  o.append(",\"routes\":{\"added\":");
  put_prefixes(&o, plan.routes_add);
  o.append(",\"removed\":");
  put_prefixes(&o, plan.routes_del);
  o.append(",\"via\":").append(dump_json(via_json(plan)));
  o.append("}}");
  return o;
}

std::string wg_quick_conf(const Desired& d, const Current& c) {
  std::string o = "[Interface]\nPrivateKey = " + d.private_key.to_base64() + "\n";
  uint16_t port = d.listen_port ? *d.listen_port : c.device.listen_port;
  if (port) o += "ListenPort = " + std::to_string(port) + "\n";
  if (!d.addresses.empty()) {
    o += "Address = ";
    for (size_t i = 0; i < d.addresses.size(); ++i)
      o += (i ? ", " : "") + d.addresses[i].to_string();
    o += "\n";
  }
  o += "MTU = " + std::to_string(d.mtu) + "\n";
  std::map<PublicKey, const PeerState*> cur;
  for (const auto& p : c.device.peers) cur[p.public_key] = &p;
  for (const auto& p : d.peers) {
    o += "\n[Peer]\n";
    if (!p.name.empty()) {
      // A comment line only: control characters could start a new key.
      std::string name = p.name;
      for (char& ch : name)
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
      o += "# " + name + "\n";
    }
    o += "PublicKey = " + p.public_key.to_base64() + "\n";
    if (p.preshared_key) o += "PresharedKey = " + p.preshared_key->to_base64() + "\n";
    if (!p.allowed_ips.empty()) {
      o += "AllowedIPs = ";
      for (size_t i = 0; i < p.allowed_ips.size(); ++i)
        o += (i ? ", " : "") + p.allowed_ips[i].to_string();
      o += "\n";
    }
    auto it = cur.find(p.public_key);
    if (auto ep = endpoint_for(p, it == cur.end() ? nullptr : it->second))
      o += "Endpoint = " + ep->to_string() + "\n";
    if (p.keepalive) o += "PersistentKeepalive = " + std::to_string(p.keepalive) + "\n";
  }
  return o;
}

}  // namespace mesh::apply
