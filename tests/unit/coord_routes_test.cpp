// Routes (issue 19): the route model, its policy selection, what maps carry
// for clients and routers, and the admin operations.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coord/mapjson.h"
#include "coord/model.h"
#include "coord_fixture.h"
#include "coord/routeops.h"
#include "coord/routes.h"
#include "netmap/fast.h"

using namespace mesh;
using namespace mesh::coord;

namespace {

using test::config;
using test::make_peer;
using test::policy;

Result<Route> route(const std::string& text) {
  auto j = parse_json(text, "r");
  if (!j) return j.status();
  return parse_route(JsonView(*j, "r"), true);
}

std::string route_error(const std::string& text) {
  auto r = route(text);
  EXPECT_FALSE(r) << text;
  return r ? "" : r.status().message();
}

const MapPeer* peer_in(const NetMap& m, const std::string& name) {
  for (const auto& p : m.peers)
    if (p.name == name) return &p;
  return nullptr;
}

// alice (dev) may use "lan" on tcp/22; bob (other) may not; r1 and r2
// route it with metrics 10 and 20.
const char* kLanPolicy = R"({
  "groups": {"dev": {}, "other": {}, "routers": {}},
  "rules": [{"name": "dev-lan", "src": ["dev"], "dst": ["route:lan"], "proto": "tcp", "ports": [22]}]})";

struct Lan {
  Model m{config()};
  Lan() {
    m.rebuild(0);
    m.add_peer(make_peer(m, "r1", {"routers"}), 1);
    m.add_peer(make_peer(m, "r2", {"routers"}), 1);
    m.add_peer(make_peer(m, "alice", {"dev"}), 1);
    m.add_peer(make_peer(m, "bob", {"other"}), 1);
    m.set_policy(policy(kLanPolicy), 2);
    auto r = route(R"({"name": "lan", "networks": ["198.51.100.0/24"],
                       "routers": [{"peer": "r1", "metric": 10}, {"peer": "r2", "metric": 20}]})");
    EXPECT_TRUE(r) << r.status().message();
    m.set_routes({{"lan", *r}}, 3);
  }
  NetMap map(const std::string& n) { return m.build_map(*m.by_name(n)); }
  uint64_t serial(const std::string& n) { return m.by_name(n)->serial; }
};

}  // namespace

TEST(CoordRoutes, ParseValidatesEveryField) {
  auto r = route(R"({"name": "lan", "networks": ["198.51.100.0/24", "2001:db8::/32"],
                     "routers": [{"peer": "r1"}, {"group": "gw", "metric": 5}],
                     "masquerade": false, "description": "office"})");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(r->networks.size(), 2u);
  EXPECT_EQ(r->routers[0].metric, kDefaultRouteMetric);
  EXPECT_EQ(r->routers[1].group, "gw");
  EXPECT_FALSE(r->masquerade);
  EXPECT_FALSE(r->exit_node());
  auto back = parse_route(JsonView(route_to_json(*r), "j"), true);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *r);

  auto exit = route(R"({"name": "exit", "networks": ["0.0.0.0/0", "::/0"], "routers": [{"peer": "x"}]})");
  ASSERT_TRUE(exit);
  EXPECT_TRUE(exit->exit_node());
  EXPECT_TRUE(exit->masquerade);  // the default

  EXPECT_NE(route_error(R"({"name": "a", "networks": ["198.51.100.0/33"], "routers": [{"peer": "x"}]})")
                .find("invalid network"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["198.51.100.1/24"], "routers": [{"peer": "x"}]})")
                .find("did you mean 198.51.100.0/24"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": [], "routers": [{"peer": "x"}]})")
                .find("at least one network"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["192.0.2.0/24"], "routers": []})")
                .find("at least one router"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["192.0.2.0/24"], "routers": [{"peer": "x", "group": "g"}]})")
                .find("not both"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["192.0.2.0/24"], "routers": [{"peer": "x"}, {"peer": "x"}]})")
                .find("duplicate router"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["192.0.2.0/24", "192.0.2.0/24"], "routers": [{"peer": "x"}]})")
                .find("duplicate network"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["192.0.2.0/24"], "routers": [{"peer": "x", "metric": 70000}]})")
                .find("metric"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["0.0.0.0/0"], "routers": [{"peer": "x"}], "masquerade": false})")
                .find("needs masquerade"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["0.0.0.0/0", "192.0.2.0/24"], "routers": [{"peer": "x"}]})")
                .find("cannot share"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "A b", "networks": ["192.0.2.0/24"], "routers": [{"peer": "x"}]})")
                .find("invalid route name"), std::string::npos);
  EXPECT_NE(route_error(R"({"name": "a", "networks": ["192.0.2.0/24"], "routers": [{"peer": "x"}], "via": 1})")
                .find("via"), std::string::npos);
}

TEST(CoordRoutes, NetworksMayNotCollideWithTheOverlayOrAnotherRoute) {
  std::vector<Prefix> overlay{*Prefix::parse("100.64.0.0/10"), *Prefix::parse("fd00:1:2::/48")};
  auto make = [](const std::string& name, const std::string& net) {
    Route r;
    r.name = name;
    r.networks = {*Prefix::parse(net)};
    return r;
  };
  EXPECT_TRUE(check_route(make("a", "198.51.100.0/24"), overlay, {}));
  EXPECT_TRUE(check_route(make("a", "0.0.0.0/0"), overlay, {}));  // exit node
  EXPECT_TRUE(check_route(make("a", "::/0"), overlay, {}));
  Status in = check_route(make("a", "100.64.1.0/24"), overlay, {});
  EXPECT_EQ(in.code(), Exit::DataErr);
  EXPECT_NE(in.message().find("overlaps the overlay prefix 100.64.0.0/10"), std::string::npos);
  EXPECT_FALSE(check_route(make("a", "100.0.0.0/8"), overlay, {}));  // contains the overlay
  EXPECT_FALSE(check_route(make("a", "fd00:1:2:3::/64"), overlay, {}));
  Route other = make("b", "198.51.100.0/24");
  Status dup = check_route(make("a", "198.51.100.0/24"), overlay, {&other});
  EXPECT_NE(dup.message().find("already routed by route 'b'"), std::string::npos);
  EXPECT_TRUE(check_route(make("b", "198.51.100.0/24"), overlay, {&other}));  // itself
  EXPECT_TRUE(check_route(make("a", "198.51.100.0/25"), overlay, {&other}));  // nested is fine
}

TEST(CoordRoutes, CidrSelectorsGrantWhatTheyCover) {
  Route r;
  r.name = "lan";
  r.networks = {*Prefix::parse("198.51.100.0/24"), *Prefix::parse("203.0.113.0/24")};
  auto g = cidr_grants(*Prefix::parse("198.51.100.0/23"), r);  // covers the first
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].first, 0u);
  EXPECT_EQ(g[0].second.to_string(), "198.51.100.0/24");
  g = cidr_grants(*Prefix::parse("203.0.113.7/32"), r);  // inside the second: only that host
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].first, 1u);
  EXPECT_EQ(g[0].second.to_string(), "203.0.113.7/32");
  EXPECT_TRUE(cidr_grants(*Prefix::parse("192.0.2.0/24"), r).empty());
  EXPECT_TRUE(cidr_grants(*Prefix::parse("2001:db8::/32"), r).empty());
  EXPECT_EQ(cidr_grants(*Prefix::parse("0.0.0.0/0"), r).size(), 2u);
  Route exit;
  exit.name = "exit";
  exit.networks = {*Prefix::parse("0.0.0.0/0"), *Prefix::parse("::/0")};
  // Only a default-route selector grants an exit node; a subnet does not.
  EXPECT_TRUE(cidr_grants(*Prefix::parse("198.51.100.0/24"), exit).empty());
  g = cidr_grants(*Prefix::parse("::/0"), exit);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].first, 1u);
}

TEST(CoordRoutes, PolicyFileRoutesAndRouteSelectors) {
  Policy p = policy(R"({
    "groups": {"dev": {}, "gw": {}},
    "routes": {"office": {"networks": ["192.0.2.0/24"], "routers": [{"group": "gw", "metric": 1}],
                          "description": "in git"}},
    "rules": [{"src": ["dev"], "dst": ["route:office", "route:elsewhere"]}],
    "tests": [{"from": "group:dev", "to": "route:office", "expect": "allow"}]})");
  ASSERT_EQ(p.routes.size(), 1u);
  EXPECT_TRUE(p.routes.at("office").from_policy);
  EXPECT_EQ(p.rules[0].dst[0].kind, Selector::Kind::Route);
  EXPECT_EQ(p.rules[0].dst[0].to_string(), "route:office");
  // policy_to_json round-trips the routes section.
  auto again = parse_policy(policy_to_json(p), "again");
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_EQ(again->routes.at("office"), p.routes.at("office"));

  // A router named in a route is a granted name (reserved at join).
  Policy named = policy(R"({"routes": {"o": {"networks": ["192.0.2.0/24"], "routers": [{"peer": "gw9"}]}}})");
  EXPECT_EQ(granted_names(named), (std::set<std::string>{"gw9"}));

  auto err = [](const std::string& text) {
    auto r = parse_policy(*parse_json(text, "p"), "p");
    EXPECT_FALSE(r) << text;
    return r ? "" : r.status().message();
  };
  EXPECT_NE(err(R"({"rules": [{"src": ["route:x"], "dst": ["all"]}]})").find("only allowed in dst"),
            std::string::npos);
  EXPECT_NE(err(R"({"routes": {"o": {"networks": ["192.0.2.0/24"], "routers": [{"group": "nope"}]}}})")
                .find("unknown group 'nope'"), std::string::npos);
  EXPECT_NE(err(R"({"routes": {"o": {"networks": ["192.0.2.0/24"], "routers": [{"peer": "a"}]},
                               "p": {"networks": ["192.0.2.0/24"], "routers": [{"peer": "a"}]}}})")
                .find("already routed by route 'o'"), std::string::npos);
  EXPECT_NE(err(R"({"routes": {"o": {"name": "o", "networks": ["192.0.2.0/24"], "routers": [{"peer": "a"}]}}})")
                .find("name"), std::string::npos);
}

TEST(CoordRoutes, AllowedClientsGetTheRouteViaEveryRouterWithItsMetric) {
  Lan lan;
  NetMap alice = lan.map("alice");
  const MapPeer* r1 = peer_in(alice, "r1");
  const MapPeer* r2 = peer_in(alice, "r2");
  ASSERT_TRUE(r1 && r2);  // routers are peers of the client with no peer rule
  ASSERT_EQ(r1->routes.size(), 1u);
  EXPECT_EQ(r1->routes[0], (PeerRoute{*Prefix::parse("198.51.100.0/24"), 10, true}));
  EXPECT_EQ(r2->routes[0].metric, 20);
  // Route networks are not in allowed IPs: mesh-apply picks the router.
  EXPECT_EQ(r1->allowed_ips.size(), 2u);
  EXPECT_TRUE(alice.self.routes.empty());
  EXPECT_TRUE(alice.forward.empty());

  NetMap bob = lan.map("bob");
  EXPECT_TRUE(bob.peers.empty());

  NetMap router = lan.map("r1");
  ASSERT_EQ(router.self.routes.size(), 1u);
  EXPECT_EQ(router.self.routes[0], (SelfRoute{*Prefix::parse("198.51.100.0/24"), true}));
  ASSERT_EQ(router.forward.size(), 1u);
  const FirewallRule& f = router.forward[0];
  EXPECT_EQ(f.rule, "dev-lan");
  EXPECT_EQ(f.proto, "tcp");
  EXPECT_EQ(f.ports, (std::vector<PortRange>{{22, 22}}));
  EXPECT_EQ(f.destinations, (std::vector<Prefix>{*Prefix::parse("198.51.100.0/24")}));
  const Peer* a = lan.m.by_name("alice");
  EXPECT_EQ(f.sources, (std::vector<Prefix>{{a->ipv4, 32}, {a->ipv6, 128}}));
  ASSERT_NE(peer_in(router, "alice"), nullptr);  // the router accepts the client's packets
  EXPECT_TRUE(peer_in(router, "alice")->routes.empty());
  EXPECT_EQ(peer_in(router, "r2"), nullptr);

  // Every map: the fast writer equals the tree, and the one parser accepts it strictly.
  for (const Peer* p : lan.m.peers()) {
    NetMap nm = lan.m.build_map(*p);
    EXPECT_EQ(lan.m.map_json(*p), dump_json(netmap_to_json(nm))) << p->name;
    auto parsed = parse_netmap_text(lan.m.map_json(*p), p->name, ParseOptions{true});
    ASSERT_TRUE(parsed) << p->name << ": " << parsed.status().message();
    EXPECT_EQ(netmap_to_json(*parsed), netmap_to_json(nm)) << p->name;
  }
}

TEST(CoordRoutes, ChangesBumpOnlyTheMapsTheyChange) {
  Lan lan;
  lan.m.add_peer(make_peer(lan.m, "carol", {"other"}), 4);
  uint64_t bob = lan.serial("bob"), carol = lan.serial("carol"), alice = lan.serial("alice");

  // A router goes: the client's map changes; bystanders' do not.
  Changes ch = lan.m.update_peer(lan.m.by_name("r2")->id, true, 5, [](Peer& p) { p.disabled = true; });
  EXPECT_GT(lan.serial("alice"), alice);
  EXPECT_EQ(lan.serial("bob"), bob);
  EXPECT_EQ(peer_in(lan.map("alice"), "r2"), nullptr);
  EXPECT_NE(peer_in(lan.map("alice"), "r1"), nullptr);
  lan.m.update_peer(lan.m.by_name("r2")->id, true, 6, [](Peer& p) { p.disabled = false; });
  ASSERT_NE(peer_in(lan.map("alice"), "r2"), nullptr);

  // A new client: the routers' forward rules gain it; other clients' maps stay.
  alice = lan.serial("alice");
  uint64_t r1 = lan.serial("r1");
  lan.m.add_peer(make_peer(lan.m, "dave", {"dev"}), 7);
  EXPECT_GT(lan.serial("r1"), r1);
  EXPECT_EQ(lan.serial("alice"), alice);
  EXPECT_EQ(lan.map("r1").forward[0].sources.size(), 4u);

  // A group change makes bob a client.
  lan.m.update_peer(lan.m.by_name("bob")->id, true, 8, [](Peer& p) { p.groups = {"dev"}; });
  ASSERT_NE(peer_in(lan.map("bob"), "r1"), nullptr);
  EXPECT_EQ(peer_in(lan.map("bob"), "r1")->routes.size(), 1u);

  // A metric change reaches clients and routers, not carol.
  carol = lan.serial("carol");
  alice = lan.serial("alice");
  std::map<std::string, Route> routes = lan.m.admin_routes();
  routes["lan"].routers[1].metric = 5;
  ch = lan.m.set_routes(routes, 9);
  EXPECT_GT(lan.serial("alice"), alice);
  EXPECT_EQ(lan.serial("carol"), carol);
  EXPECT_EQ(peer_in(lan.map("alice"), "r2")->routes[0].metric, 5);
  // Setting the same routes again changes nothing.
  EXPECT_EQ(lan.m.set_routes(routes, 10).changed.size(), 0u);

  // Deleting a router peer, then the route.
  lan.m.remove_peer(lan.m.by_name("r1")->id, 11);
  EXPECT_EQ(peer_in(lan.map("alice"), "r1"), nullptr);
  ch = lan.m.set_routes({}, 12);
  EXPECT_TRUE(lan.map("alice").peers.empty());
  EXPECT_TRUE(lan.map("r2").self.routes.empty());
  EXPECT_TRUE(lan.map("r2").forward.empty());
}

TEST(CoordRoutes, RouterGroupsCidrRulesAndExitNodes) {
  Model m(config());
  m.rebuild(0);
  m.add_peer(make_peer(m, "gw1", {"gw"}), 1);
  m.add_peer(make_peer(m, "gw2", {"gw"}), 1);
  m.add_peer(make_peer(m, "exit1", {}), 1);
  m.add_peer(make_peer(m, "alice", {"dev"}), 1);
  m.set_policy(policy(R"({
    "groups": {"dev": {}, "gw": {}},
    "routes": {"office": {"networks": ["198.51.100.0/24"], "routers": [{"group": "gw", "metric": 7}]},
               "exit": {"networks": ["0.0.0.0/0", "::/0"], "routers": [{"peer": "exit1"}]}},
    "rules": [{"name": "one-host", "src": ["dev"], "dst": ["198.51.100.7/32"], "proto": "icmp"},
              {"name": "out", "src": ["dev"], "dst": ["route:exit"]}]})"), 2);
  NetMap alice = m.build_map(*m.by_name("alice"));
  ASSERT_NE(peer_in(alice, "gw1"), nullptr);
  EXPECT_EQ(peer_in(alice, "gw2")->routes.at(0).metric, 7);
  const MapPeer* exit = peer_in(alice, "exit1");
  ASSERT_NE(exit, nullptr);
  ASSERT_EQ(exit->routes.size(), 2u);
  EXPECT_EQ(exit->routes[0].network.to_string(), "0.0.0.0/0");
  EXPECT_EQ(exit->routes[1].network.to_string(), "::/0");
  EXPECT_EQ(exit->routes[0].metric, kDefaultRouteMetric);
  // The router forwards only to the one host the rule names.
  NetMap gw = m.build_map(*m.by_name("gw1"));
  ASSERT_EQ(gw.forward.size(), 1u);
  EXPECT_EQ(gw.forward[0].destinations.at(0).to_string(), "198.51.100.7/32");
  EXPECT_EQ(gw.forward[0].proto, "icmp");
  NetMap ex = m.build_map(*m.by_name("exit1"));
  ASSERT_EQ(ex.self.routes.size(), 2u);
  EXPECT_TRUE(ex.self.routes[0].masquerade);
  ASSERT_EQ(ex.forward.size(), 1u);
  EXPECT_EQ(ex.forward[0].destinations.size(), 2u);
  for (const Peer* p : m.peers())
    EXPECT_EQ(m.map_json(*p), dump_json(netmap_to_json(m.build_map(*p)))) << p->name;
}

TEST(CoordRoutes, PolicyTestsCheckAndPlanUnderstandRoutes) {
  Lan lan;
  Policy p = lan.m.policy();
  p.tests = {PolicyTest{"alice", "route:lan", *Service::parse("22/tcp"), true},
             PolicyTest{"bob", "route:lan", *Service::parse("22/tcp"), false},
             PolicyTest{"alice", "route:lan", *Service::parse("80/tcp"), false}};
  EXPECT_TRUE(lan.m.run_tests(p));
  p.tests = {PolicyTest{"bob", "route:lan", *Service::parse("22/tcp"), true}};
  Status s = lan.m.run_tests(p);
  EXPECT_NE(s.message().find("expected allow, policy says deny"), std::string::npos) << s.message();
  p.tests = {PolicyTest{"bob", "route:nowhere", *Service::parse("22/tcp"), true}};
  EXPECT_NE(lan.m.run_tests(p).message().find("unknown route 'nowhere'"), std::string::npos);
  // A router does not use its own route.
  Verdict v = lan.m.evaluate_route(lan.m.policy(), lan.m.by_name("r1")->attrs(),
                                   *lan.m.find_route("lan"), *Service::parse("22/tcp"));
  EXPECT_FALSE(v.allow);

  Policy next = policy(R"({"groups": {"dev": {}, "other": {}, "routers": {}},
    "rules": [{"name": "all-lan", "src": ["other", "dev"], "dst": ["198.51.100.0/24"], "proto": "tcp", "ports": [22, 80]}]})");
  Model::Plan plan = lan.m.plan(next);
  std::vector<AccessEntry> gained{{"alice", "route:lan", "tcp/80"}, {"bob", "route:lan", "tcp/22"},
                                  {"bob", "route:lan", "tcp/80"}};
  EXPECT_EQ(plan.gained, gained);
  EXPECT_TRUE(plan.lost.empty());
}

TEST(CoordRoutes, IncrementalEqualsFullRebuildWithRoutes) {
  Model m(config());
  m.rebuild(0);
  m.set_policy(policy(R"({
    "groups": {"g0": {}, "g1": {}, "g2": {"members": ["p3"]}},
    "routes": {"r-file": {"networks": ["203.0.113.0/24"], "routers": [{"group": "g2", "metric": 3}]}},
    "rules": [
      {"src": ["g0"], "dst": ["route:lan"], "proto": "tcp", "ports": [22]},
      {"src": ["g1"], "dst": ["198.51.100.0/25", "g0"], "proto": "udp"},
      {"src": ["g0", "g1"], "dst": ["route:r-file"]}
    ]})"), 0);
  Route lan;
  lan.name = "lan";
  lan.networks = {*Prefix::parse("198.51.100.0/24")};
  lan.routers = {RouteRouter{"p2", "", 10}, RouteRouter{"", "g1", 20}};
  m.set_routes({{"lan", lan}}, 0);
  uint32_t seed = 11;
  auto rnd = [&](uint32_t n) {
    seed = seed * 1103515245 + 12345;
    return (seed >> 16) % n;
  };
  int t = 1;
  for (int i = 0; i < 300; ++i, ++t) {
    auto ps = m.peers();
    uint32_t op = ps.empty() ? 0 : rnd(6);
    if (op == 0 || ps.size() < 4) {
      m.add_peer(make_peer(m, "p" + std::to_string(m.new_peer_id()), {"g" + std::to_string(rnd(3))}), t);
    } else {
      const Peer* p = ps[rnd(static_cast<uint32_t>(ps.size()))];
      if (op == 1) m.remove_peer(p->id, t);
      else if (op == 2) m.update_peer(p->id, true, t, [&](Peer& q) { q.groups = {"g" + std::to_string(rnd(3))}; });
      else if (op == 3) m.update_peer(p->id, true, t, [&](Peer& q) { q.disabled = !q.disabled; });
      else if (op == 4) m.update_peer(p->id, false, t, [&](Peer& q) {
        q.endpoints = {Candidate{*SockAddr::parse("192.0.2." + std::to_string(rnd(200) + 1) + ":4000"), "host"}};
      });
      else {
        lan.routers[0].metric = static_cast<int>(rnd(50));
        m.set_routes({{"lan", lan}}, t);
      }
    }
  }
  Model fresh(config());
  for (const Peer* p : m.peers()) {
    auto copy = Peer::from_record(p->to_record());
    ASSERT_TRUE(copy);
    fresh.load_peer(std::move(*copy));
  }
  fresh.load_policy(m.policy());
  fresh.load_routes(m.admin_routes());
  fresh.rebuild(0);
  size_t with_routes = 0;
  for (const Peer* p : m.peers()) {
    EXPECT_EQ(m.map_json(*p), netmap_json_text(m.build_map(*p))) << p->name;
    NetMap a = m.build_map(*p), b = fresh.build_map(*fresh.by_id(p->id));
    for (const auto& q : a.peers) with_routes += q.routes.size();
    a.serial = b.serial = 0;
    a.generated_at = b.generated_at = 0;
    EXPECT_EQ(netmap_to_json(a), netmap_to_json(b)) << p->name;
  }
  EXPECT_GT(with_routes, 0u);  // the run exercised routes at all
}

TEST(CoordRoutes, AdminOperationsValidateBeforeChangingAnything) {
  Lan lan;
  Model& m = lan.m;
  auto op = [&](const std::string& o, const std::string& body) {
    return route_op(m, o, *parse_json(body, "b"), 20);
  };
  auto r = op("create", R"({"name": "dmz", "networks": ["203.0.113.0/24"], "routers": [{"peer": "r2", "metric": 1}]})");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_TRUE(r->write);
  EXPECT_FALSE(r->erase);
  EXPECT_EQ(r->response["source"], "admin");
  EXPECT_EQ(r->response["active_routers"][0]["peer"], "r2");
  auto stored = parse_json(r->record, "record");
  ASSERT_TRUE(stored);
  auto back = routes_from_records({{"dmz", *stored}});
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back->at("dmz").networks.at(0).to_string(), "203.0.113.0/24");
  EXPECT_EQ(m.admin_routes().size(), 2u);

  auto before = m.admin_routes();
  uint64_t counter = m.serial_counter();
  auto bad = [&](const std::string& o, const std::string& body, const std::string& want, Exit code) {
    auto res = op(o, body);
    ASSERT_FALSE(res) << body;
    EXPECT_EQ(res.status().code(), code) << res.status().message();
    EXPECT_NE(res.status().message().find(want), std::string::npos) << res.status().message();
    EXPECT_EQ(m.admin_routes(), before);
    EXPECT_EQ(m.serial_counter(), counter);
  };
  bad("create", R"({"name": "dmz", "networks": ["192.0.2.0/24"], "routers": [{"peer": "r2"}]})",
      "already exists", Exit::DataErr);
  bad("create", R"({"name": "x", "networks": ["100.64.3.0/24"], "routers": [{"peer": "r2"}]})",
      "overlaps the overlay", Exit::DataErr);
  bad("create", R"({"name": "x", "networks": ["192.0.2.0/24"], "routers": [{"peer": "ghost"}]})",
      "unknown peer 'ghost'", Exit::DataErr);
  bad("create", R"({"name": "x", "networks": ["192.0.2.0/24"], "routers": [{"group": "ghosts"}]})",
      "unknown group 'ghosts'", Exit::DataErr);
  bad("create", R"({"name": "x", "networks": ["198.51.100.0/24"], "routers": [{"peer": "r2"}]})",
      "already routed by route 'lan'", Exit::DataErr);
  bad("create", R"({"name": "x", "networks": ["not-a-cidr"], "routers": [{"peer": "r2"}]})",
      "invalid network", Exit::DataErr);
  bad("update", R"({"name": "nope", "masquerade": false})", "no route 'nope'", Exit::NoInput);
  bad("update", R"({"name": "dmz", "routers": [{"peer": "ghost"}]})", "unknown peer", Exit::DataErr);
  bad("delete", R"({"name": "nope"})", "no route 'nope'", Exit::NoInput);
  bad("show", R"({"name": "nope"})", "no route 'nope'", Exit::NoInput);

  r = op("update", R"({"name": "dmz", "masquerade": false, "description": "web"})");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_FALSE(m.find_route("dmz")->masquerade);
  EXPECT_EQ(m.find_route("dmz")->networks.at(0).to_string(), "203.0.113.0/24");  // kept
  r = op("show", R"({"name": "lan"})");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->write);
  EXPECT_EQ(r->response["clients"], Json::array({"alice"}));
  r = op("list", "{}");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->response["routes"].size(), 2u);
  r = op("delete", R"({"name": "dmz"})");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->erase);
  EXPECT_EQ(m.find_route("dmz"), nullptr);

  // Routes the policy file defines are changed there only, and a policy may
  // not define a name `route create` did.
  Policy p = policy(R"({"groups": {"routers": {}},
    "routes": {"office": {"networks": ["192.0.2.0/24"], "routers": [{"group": "routers"}]}}})");
  m.set_policy(p, 30);
  before = m.admin_routes();
  counter = m.serial_counter();
  bad("delete", R"({"name": "office"})", "defined in the policy file", Exit::DataErr);
  bad("create", R"({"name": "office", "networks": ["203.0.113.0/24"], "routers": [{"peer": "r1"}]})",
      "defined in the policy file", Exit::DataErr);
  Policy clash = policy(R"({"groups": {"routers": {}},
    "routes": {"lan": {"networks": ["203.0.113.0/24"], "routers": [{"group": "routers"}]}}})");
  EXPECT_NE(check_policy_routes(m, clash).message().find("defined by `mesh-coord route`"), std::string::npos);
  Policy overlap = policy(R"({"groups": {"routers": {}},
    "routes": {"o": {"networks": ["100.64.0.0/16"], "routers": [{"group": "routers"}]}}})");
  EXPECT_NE(check_policy_routes(m, overlap).message().find("overlaps the overlay"), std::string::npos);
  EXPECT_TRUE(check_policy_routes(m, p));
}
