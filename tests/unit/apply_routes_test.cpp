// Unit tests of routes through peers (issue 19): the map's route fields
// (lib/netmap), the route choice and sysctls in the plan (lib/apply/plan.h),
// the forward firewall (nft.h) and the HA choice (routing.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apply/nft.h"
#include "apply/plan.h"
#include "apply/routing.h"
#include "netmap/fast.h"
#include "netmap/netmap.h"

namespace mesh::apply {
namespace {

PublicKey key(uint8_t b) {
  PublicKey k;
  k.bytes.fill(b);
  return k;
}
Prefix pfx(const char* s) { return Prefix::parse(s).value(); }

std::string k64(uint8_t b) { return key(b).to_base64(); }

Json base_map() {
  return Json{{"version", 1},
              {"serial", 7},
              {"self", {{"public_key", k64(1)}, {"addresses", {"100.64.0.1/10"}}}},
              {"peers",
               {{{"name", "r1"},
                 {"public_key", k64(2)},
                 {"addresses", {"100.64.0.2/32"}},
                 {"routes", {{{"network", "198.51.100.0/24"}, {"metric", 10}, {"masquerade", true}}}}},
                {{"name", "r2"},
                 {"public_key", k64(3)},
                 {"addresses", {"100.64.0.3/32"}},
                 {"routes", {{{"network", "198.51.100.0/24"}, {"metric", 20}}}}}}}};
}

TEST(NetmapRoutes, ParsesPeerRoutesSelfRoutesAndForwardRules) {
  Json j = base_map();
  j["self"]["routes"] = {{{"network", "203.0.113.7/24"}, {"masquerade", true}}};
  j["firewall"] = {{"forward",
                    {{{"sources", {"100.64.0.2/32"}},
                      {"destinations", {"203.0.113.0/25"}},
                      {"proto", "tcp"},
                      {"ports", {22}},
                      {"rule", "ssh"}}}}};
  auto m = parse_netmap(j, "t", {true});
  ASSERT_TRUE(m) << m.status().message();
  ASSERT_EQ(m->self.routes.size(), 1u);
  EXPECT_EQ(m->self.routes[0].network, pfx("203.0.113.0/24"));  // canonical
  EXPECT_TRUE(m->self.routes[0].masquerade);
  ASSERT_EQ(m->peers[0].routes.size(), 1u);
  EXPECT_EQ(m->peers[0].routes[0].metric, 10);
  EXPECT_TRUE(m->peers[0].routes[0].masquerade);
  EXPECT_FALSE(m->peers[1].routes[0].masquerade);
  // Route networks are not allowed IPs.
  EXPECT_EQ(m->peers[0].allowed_ips, std::vector<Prefix>{pfx("100.64.0.2/32")});
  ASSERT_EQ(m->forward.size(), 1u);
  EXPECT_EQ(m->forward[0].destinations, std::vector<Prefix>{pfx("203.0.113.0/25")});
  EXPECT_EQ(m->forward[0].rule, "ssh");
  // Round trip, and the fast parser hands such maps to the full one.
  auto again = parse_netmap(netmap_to_json(*m), "t2", {true});
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_EQ(again->peers[0].routes, m->peers[0].routes);
  EXPECT_EQ(again->self.routes, m->self.routes);
  EXPECT_EQ(again->forward, m->forward);
  EXPECT_FALSE(parse_netmap_fast(dump_json(j)));
  auto text = parse_netmap_text(dump_json(j), "t3", {true});
  ASSERT_TRUE(text);
  EXPECT_EQ(text->peers[1].routes, m->peers[1].routes);
}

TEST(NetmapRoutes, RejectsBadRoutes) {
  Json overlay = base_map();
  overlay["peers"][0]["routes"] = {{{"network", "100.64.5.0/24"}}};
  auto m = parse_netmap(overlay, "t");
  ASSERT_FALSE(m);
  EXPECT_NE(m.status().message().find("overlaps the overlay"), std::string::npos);
  Json twice = base_map();
  twice["peers"][0]["routes"].push_back({{"network", "198.51.100.9/24"}});
  m = parse_netmap(twice, "t");
  ASSERT_FALSE(m);
  EXPECT_NE(m.status().message().find("duplicate route"), std::string::npos);
  Json nodest = base_map();
  nodest["firewall"] = {{"forward", {{{"sources", {"100.64.0.2/32"}}}}}};
  EXPECT_FALSE(parse_netmap(nodest, "t"));
  Json badmetric = base_map();
  badmetric["peers"][0]["routes"][0]["metric"] = -1;
  EXPECT_FALSE(parse_netmap(badmetric, "t"));
  Json strict = base_map();
  strict["peers"][0]["routes"][0]["via"] = "x";
  EXPECT_FALSE(parse_netmap(strict, "t", {true}));
  EXPECT_TRUE(parse_netmap(strict, "t", {false}));
  // An exit node's default route contains the overlay, and is fine.
  Json exit = base_map();
  exit["peers"][0]["routes"] = {{{"network", "0.0.0.0/0"}, {"masquerade", true}}};
  EXPECT_TRUE(parse_netmap(exit, "t"));
}

Desired desired(const Json& j) {
  auto m = parse_netmap(j, "t");
  EXPECT_TRUE(m) << m.status().message();
  SecretKey sk = SecretKey::generate_private();
  m->self.public_key = sk.public_key();
  return desired_from_map(*m, sk, EndpointsDoc{}, std::nullopt).value();
}

const DesiredPeer& peer(const Desired& d, uint8_t k) {
  return *std::find_if(d.peers.begin(), d.peers.end(), [&](auto& p) { return p.public_key == key(k); });
}

TEST(ApplyRoutes, ChoosesLowestMetricAndRoutesTheNetwork) {
  Desired d = desired(base_map());
  choose_routes(&d, DeviceState{});
  ASSERT_EQ(d.route_choices.size(), 1u);
  EXPECT_EQ(d.route_choices[0].name, "r1");
  EXPECT_EQ(peer(d, 2).allowed_ips, (std::vector<Prefix>{pfx("100.64.0.2/32"), pfx("198.51.100.0/24")}));
  EXPECT_EQ(peer(d, 3).allowed_ips, std::vector<Prefix>{pfx("100.64.0.3/32")});
  EXPECT_EQ(d.routes, std::vector<Prefix>{pfx("198.51.100.0/24")});  // the overlay is on-link
  // Every router gets the short keepalive, so the watcher hears from it.
  EXPECT_EQ(peer(d, 2).keepalive, kRouteKeepalive);
  EXPECT_EQ(peer(d, 3).keepalive, kRouteKeepalive);
  EXPECT_TRUE(d.forwarding.empty());
}

TEST(ApplyRoutes, KeepsTheRouterTheWatcherChose) {
  Desired d = desired(base_map());
  DeviceState dev;
  PeerState r2;
  r2.public_key = key(3);
  r2.allowed_ips = {pfx("100.64.0.3/32"), pfx("198.51.100.0/24")};
  dev.peers.push_back(r2);
  choose_routes(&d, dev);
  EXPECT_EQ(d.route_choices.at(0).name, "r2");
  EXPECT_EQ(peer(d, 3).allowed_ips.size(), 2u);
  EXPECT_EQ(peer(d, 2).allowed_ips.size(), 1u);
}

TEST(ApplyRoutes, DefaultRoutesAreNotUsedAutomatically) {
  Json j = base_map();
  j["peers"][0]["routes"] = {{{"network", "0.0.0.0/0"}, {"masquerade", true}}};
  j["peers"][1].erase("routes");
  Desired d = desired(j);
  choose_routes(&d, DeviceState{});
  EXPECT_TRUE(d.route_choices.empty());
  EXPECT_EQ(peer(d, 2).allowed_ips.size(), 1u);
  EXPECT_TRUE(d.routes.empty());
}

TEST(ApplyRoutes, RouterSideForwardingSysctlsAndKeepalive) {
  Json j = base_map();
  j["peers"][0].erase("routes");
  j["peers"][1].erase("routes");
  j["self"]["routes"] = {{{"network", "198.51.100.0/24"}, {"masquerade", false}},
                         {{"network", "2001:db8::/64"}, {"masquerade", true}}};
  j["firewall"] = {{"forward", {{{"sources", {"100.64.0.2/32"}}, {"destinations", {"198.51.100.0/24"}}}}}};
  Desired d = desired(j);
  EXPECT_EQ(d.forwarding, (std::vector<std::string>{kForwardV4, kForwardV6}));
  EXPECT_EQ(peer(d, 2).keepalive, kRouteKeepalive);  // a forward source
  EXPECT_EQ(peer(d, 3).keepalive, 0);
  Current cur;
  cur.sysctls = {{kForwardV4, "0"}, {kForwardV6, "1"}};
  Plan p = diff(d, cur);
  EXPECT_EQ(p.sysctl_enable, std::vector<std::string>{kForwardV4});
  EXPECT_TRUE(p.sysctl_restore.empty());
  // No longer a router: what was saved goes back; nothing else is touched.
  Desired none = desired(base_map());
  cur.sysctls = {{kForwardV4, "1"}};
  cur.saved_sysctls = {{kForwardV4, "0"}};
  p = diff(none, cur);
  EXPECT_TRUE(p.sysctl_enable.empty());
  ASSERT_EQ(p.sysctl_restore.size(), 1u);
  EXPECT_EQ(p.sysctl_restore[0], (std::pair<std::string, std::string>{kForwardV4, "0"}));
  EXPECT_TRUE(p.changed());
  auto doc = plan_to_json(p, "wg0", "userspace", "inet mesh_wg0", false);
  EXPECT_EQ(doc["forwarding"]["restored"], Json::array({kForwardV4}));
  EXPECT_EQ(dump_json(doc), plan_json_text(p, "wg0", "userspace", "inet mesh_wg0", false));
}

TEST(ApplyRoutes, PlanJsonListsTheChosenRouter) {
  Desired d = desired(base_map());
  choose_routes(&d, DeviceState{});
  Plan p = diff(d, Current{});
  auto doc = plan_to_json(p, "wg0", "userspace", "inet mesh_wg0", true);
  EXPECT_EQ(doc["routes"]["via"][0]["peer"], "r1");
  EXPECT_EQ(doc["routes"]["via"][0]["network"], "198.51.100.0/24");
  EXPECT_EQ(dump_json(doc), plan_json_text(p, "wg0", "userspace", "inet mesh_wg0", true));
}

TEST(ApplyRoutes, SavedSysctlsRoundTripAndApply) {
  auto dir = std::filesystem::temp_directory_path() / ("mesh-routes-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "proc/net/ipv4");
  {
    std::ofstream(dir / "proc/net/ipv4/ip_forward") << "0\n";
  }
  EXPECT_EQ(parse_saved_sysctls("net.ipv4.ip_forward=0\nkernel.evil=1\n"),
            (std::map<std::string, std::string>{{kForwardV4, "0"}}));
  Plan p;
  p.sysctl_enable = {kForwardV4};
  Current cur;
  cur.sysctls = read_sysctls({kForwardV4, kForwardV6}, (dir / "proc").string());
  EXPECT_EQ(cur.sysctls, (std::map<std::string, std::string>{{kForwardV4, "0"}}));
  ASSERT_TRUE(apply_sysctls(dir.string(), "wg0", p, cur, (dir / "proc").string()));
  EXPECT_EQ(read_sysctls({kForwardV4}, (dir / "proc").string()).at(kForwardV4), "1");
  EXPECT_EQ(load_saved_sysctls(dir.string(), "wg0").at(kForwardV4), "0");
  std::vector<std::string> restored;
  ASSERT_TRUE(restore_all_sysctls(dir.string(), "wg0", &restored, (dir / "proc").string()));
  EXPECT_EQ(restored, std::vector<std::string>{kForwardV4});
  EXPECT_EQ(read_sysctls({kForwardV4}, (dir / "proc").string()).at(kForwardV4), "0");
  EXPECT_FALSE(std::filesystem::exists(saved_sysctls_path(dir.string(), "wg0")));
  std::filesystem::remove_all(dir);
}

TEST(ApplyRoutes, ForwardChainAndMasquerade) {
  FirewallRule f;
  f.sources = {pfx("100.64.0.2/32"), pfx("100.64.0.0/24")};
  f.destinations = {pfx("198.51.100.0/24")};
  f.proto = "tcp";
  f.ports = {{80, 80}, {79, 81}};
  f.rule = "web";
  auto s = firewall_script("wg0", {}, {f}, {pfx("198.51.100.0/24")});
  EXPECT_NE(s.body.find("iifname \"wg0\" jump mesh_fwd"), std::string::npos);
  EXPECT_NE(s.body.find("ip saddr { 100.64.0.0/24 } ip daddr { 198.51.100.0/24 } tcp dport { 79-81 } accept "
                        "comment \"web\""),
            std::string::npos)
      << s.body;
  EXPECT_NE(s.body.find("oifname != \"wg0\" ip daddr { 198.51.100.0/24 } masquerade"), std::string::npos);
  // Without forward rules the forward chain drops all from the mesh.
  auto none = firewall_script("wg0", {});
  EXPECT_EQ(none.body.find("masquerade"), std::string::npos);
  EXPECT_NE(none.body.find("chain mesh_fwd {\n    ct state established,related accept\n    ct state invalid "
                           "drop\n    counter drop"),
            std::string::npos);
}

TEST(ApplyRoutes, RouteTableRoundTrip) {
  Desired d = desired(base_map());
  auto t = route_table(d);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].routers.at(0).name, "r1");
  auto back = parse_route_table(route_table_json(t), "t");
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, t);
}

RoutedNetwork net2() {
  return {pfx("198.51.100.0/24"), {{key(2), "r1", 10}, {key(3), "r2", 20}}};
}

TEST(HaState, FailsOverWhenThePrimaryGoesQuietAndBackAfterHoldDown) {
  HaState ha({2000, 3000});
  int64_t wall = 1'000'000;
  uint64_t rx1 = 100, rx2 = 100;
  auto tick = [&](int64_t t, bool primary_up) {
    if (primary_up) rx1 += 32;
    rx2 += 32;
    ha.observe(key(2), rx1, wall - 5, wall, t);
    ha.observe(key(3), rx2, wall - 5, wall, t);
  };
  RoutedNetwork n = net2();
  std::optional<PublicKey> holder = key(2);
  int failovers = 0;
  // A minute of a healthy primary: never a move.
  for (int64_t t = 0; t < 60000; t += 250) {
    tick(t, true);
    if (ha.choose(n, holder, t) != *holder) ++failovers;
  }
  EXPECT_EQ(failovers, 0);
  // The primary dies at 60 s: the move comes after dead_after, not before.
  int64_t moved = -1;
  for (int64_t t = 60000; t < 70000 && moved < 0; t += 250) {
    tick(t, false);
    if (ha.choose(n, holder, t) == key(3)) moved = t;
  }
  EXPECT_GT(moved, 61750);
  EXPECT_LE(moved, 62500);
  holder = key(3);
  // Back at 70 s: it must stay alive for hold_down before the move back.
  int64_t back = -1;
  for (int64_t t = 70000; t < 80000 && back < 0; t += 250) {
    tick(t, true);
    if (ha.choose(n, holder, t) == key(2)) back = t;
  }
  EXPECT_GE(back, 73000);
  EXPECT_LE(back, 73500);
}

TEST(HaState, StaysPutWhenNobodyIsAliveAndStartsOnTheBestLiveRouter) {
  HaState ha({2000, 3000});
  RoutedNetwork n = net2();
  // No handshake with anyone: nobody is alive, the holder stays.
  ha.observe(key(2), 0, 0, 1000, 0);
  ha.observe(key(3), 0, 0, 1000, 0);
  EXPECT_EQ(ha.choose(n, key(3), 5000), key(3));
  EXPECT_EQ(ha.choose(n, std::nullopt, 5000), key(2));  // lowest metric
  // Only r2 is alive: no holder yet goes to it.
  HaState h2({2000, 3000});
  h2.observe(key(2), 0, 0, 1000, 0);
  h2.observe(key(3), 10, 990, 1000, 0);
  EXPECT_EQ(h2.choose(n, std::nullopt, 0), key(3));
  // A flapping primary (heard from for less than the hold-down) never wins back.
  HaState h3({2000, 3000});
  uint64_t rx1 = 0, rx2 = 0;
  int moves = 0;
  std::optional<PublicKey> holder = key(3);
  for (int64_t t = 0; t < 30000; t += 250) {
    bool up = t % 5000 < 500;  // heard for 0.5 s every 5 s
    if (up) rx1 += 32;
    rx2 += 32;
    h3.observe(key(2), rx1, 990, 1000, t);
    h3.observe(key(3), rx2, 990, 1000, t);
    PublicKey c = h3.choose(n, holder, t);
    if (c != *holder) ++moves, holder = c;
  }
  EXPECT_EQ(*holder, key(3));
  EXPECT_LE(moves, 0);
}

}  // namespace
}  // namespace mesh::apply

namespace mesh::apply {
namespace {

TEST(ApplyExit, UseExitNodeAddsDefaultRoutesAndTheMark) {
  Json j = base_map();
  j["peers"][1]["routes"] = {{{"network", "0.0.0.0/0"}, {"masquerade", true}}};
  Desired d = desired(j);
  choose_routes(&d, DeviceState{});
  ASSERT_TRUE(use_exit_node(&d, "r2", false, {pfx("198.18.1.1/32")}));
  EXPECT_EQ(peer(d, 3).allowed_ips, (std::vector<Prefix>{pfx("0.0.0.0/0"), pfx("100.64.0.3/32")}));
  EXPECT_EQ(d.fwmark, kExitFwmark);
  EXPECT_TRUE(d.exit.v4);
  EXPECT_FALSE(d.exit.v6);
  // The default route is policy routing's, never a main-table route.
  d.routes = routes_for(d.addresses, d.peers);
  EXPECT_EQ(d.routes, std::vector<Prefix>{pfx("198.51.100.0/24")});
  EXPECT_NE(std::find(d.forwarding.begin(), d.forwarding.end(), kSrcValidMark), d.forwarding.end());
  Plan p = diff(d, Current{});
  ASSERT_TRUE(p.set_fwmark);
  EXPECT_EQ(*p.set_fwmark, kExitFwmark);
  EXPECT_EQ(device_update(p, d).fwmark, kExitFwmark);
  auto doc = plan_to_json(p, "wg0", "userspace", "inet mesh_wg0", true);
  EXPECT_EQ(doc["exit_node"]["peer"], "r2");
  EXPECT_EQ(doc["exit_node"]["rules_added"], 5);  // bypass (v4), suppress and exit per family
  EXPECT_EQ(dump_json(doc), plan_json_text(p, "wg0", "userspace", "inet mesh_wg0", true));
  // Errors: no such peer; a peer that is no exit node.
  Desired e = desired(j);
  EXPECT_EQ(use_exit_node(&e, "nobody", false, {}).code(), Exit::DataErr);
  EXPECT_EQ(use_exit_node(&e, "r1", false, {}).code(), Exit::DataErr);
  // Off: no mark wanted, so a marked device is unmarked.
  Desired off = desired(j);
  ASSERT_TRUE(use_exit_node(&off, "", false, {}));
  Current marked;
  marked.device.fwmark = kExitFwmark;
  EXPECT_EQ(diff(off, marked).set_fwmark, std::optional<uint32_t>(0));
}

TEST(ApplyExit, PolicyRulesAndTableRoutes) {
  ExitWant w{"gw", true, false, false, {pfx("198.18.1.1/32")}};
  ExitState s = exit_state_for(w, 7);
  ASSERT_EQ(s.rules.size(), 5u);
  ASSERT_EQ(s.routes.size(), 2u);
  int blackholes = 0;
  for (const auto& r : s.routes) {
    if (r.dst.addr.is_v4()) {
      EXPECT_FALSE(r.blackhole);
      EXPECT_EQ(r.ifindex, 7);
    } else {
      ++blackholes;  // no IPv6 offered: no leak
      EXPECT_TRUE(r.blackhole);
    }
  }
  EXPECT_EQ(blackholes, 1);
  w.block_lan = true;
  ExitState b = exit_state_for(w, 7);
  EXPECT_EQ(b.rules.size(), 3u);
  for (const auto& r : b.rules) EXPECT_EQ(r.suppress_prefixlen, -1);
  // Off removes exactly what is there; no change when it matches.
  ExitChange c = exit_diff(ExitState{}, s);
  EXPECT_EQ(c.rules_del.size(), 5u);
  EXPECT_EQ(c.routes_del.size(), 2u);
  EXPECT_TRUE(exit_diff(s, s).empty());
  EXPECT_TRUE(exit_state_for(ExitWant{}, 7).rules.empty());
  // Messages parse back to what was built (protocol 77 marks them ours).
  for (const auto& r : s.rules) {
    NlMsg m = rtnl_rule(true, r, 1);
    auto back = rtnl_parse_rule(reinterpret_cast<const nlmsghdr*>(m.data()));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, r);
  }
  for (const auto& r : s.routes) {
    NlMsg m = rtnl_table_route(true, r, 1);
    auto back = rtnl_parse_table_route(reinterpret_cast<const nlmsghdr*>(m.data()));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, r);
  }
}

}  // namespace
}  // namespace mesh::apply
