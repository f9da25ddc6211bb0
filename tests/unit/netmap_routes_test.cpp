// The route fields of the network map (issue 19, man/mesh-netmap.5):
// self.routes, peers[].routes and firewall.forward, read by the one parser.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "netmap/fast.h"
#include "netmap/netmap.h"

namespace mesh {
namespace {

struct Keys {
  std::string self = SecretKey::generate_private().public_key().to_base64();
  std::string a = SecretKey::generate_private().public_key().to_base64();
  std::string b = SecretKey::generate_private().public_key().to_base64();
};

// A client of two HA routers (a, b) which is itself an exit node.
Json routed(const Keys& k) {
  return Json::parse(R"({
    "version": 1, "serial": 3,
    "self": {"name": "me", "public_key": ")" + k.self + R"(",
             "addresses": ["100.64.0.1/10", "fd00:1:2::1/48"],
             "routes": [{"network": "0.0.0.0/0", "masquerade": true},
                        {"network": "::/0", "masquerade": true}]},
    "peers": [
      {"name": "a", "public_key": ")" + k.a + R"(", "addresses": ["100.64.0.2/32"],
       "routes": [{"network": "198.51.100.0/24", "metric": 10, "masquerade": true}]},
      {"name": "b", "public_key": ")" + k.b + R"(", "addresses": ["100.64.0.3/32"],
       "routes": [{"network": "198.51.100.0/24", "metric": 20, "masquerade": true},
                  {"network": "2001:db8::/32", "metric": 20, "masquerade": false}]}
    ],
    "firewall": {
      "inbound": [{"sources": ["100.64.0.2/32"], "proto": "icmp"}],
      "forward": [{"sources": ["100.64.0.2/32", "100.64.0.3/32"], "proto": "tcp", "ports": [22],
                   "rule": "dev-out", "destinations": ["0.0.0.0/0", "::/0"]}]}
  })");
}

std::string error_of(const Json& j, bool strict = true) {
  auto m = parse_netmap(j, "m", ParseOptions{strict});
  EXPECT_FALSE(m) << j.dump();
  return m ? "" : m.status().message();
}

}  // namespace

TEST(NetMapRoutes, ParsesRouteFieldsStrictly) {
  Keys k;
  auto m = parse_netmap(routed(k), "m", ParseOptions{true});
  ASSERT_TRUE(m) << m.status().message();
  ASSERT_EQ(m->self.routes.size(), 2u);
  EXPECT_EQ(m->self.routes[0], (SelfRoute{*Prefix::parse("0.0.0.0/0"), true}));
  ASSERT_EQ(m->peers[1].routes.size(), 2u);
  EXPECT_EQ(m->peers[0].routes[0], (PeerRoute{*Prefix::parse("198.51.100.0/24"), 10, true}));
  EXPECT_EQ(m->peers[1].routes[1].masquerade, false);
  // Route networks stay out of allowed IPs (two routers share one network).
  EXPECT_EQ(m->peers[1].allowed_ips.size(), 1u);
  ASSERT_EQ(m->forward.size(), 1u);
  EXPECT_EQ(m->forward[0].destinations.size(), 2u);
  EXPECT_EQ(m->forward[0].rule, "dev-out");
  EXPECT_TRUE(m->inbound[0].destinations.empty());
  // Round trip, and the text path (which leaves route maps to this parser)
  // gives the same map.
  Json out = netmap_to_json(*m);
  auto again = parse_netmap(out, "again", ParseOptions{true});
  ASSERT_TRUE(again);
  EXPECT_EQ(netmap_to_json(*again), out);
  EXPECT_FALSE(parse_netmap_fast(out.dump(), ParseOptions{false}).has_value());
  auto text = parse_netmap_text(out.dump(), "t", ParseOptions{false});
  ASSERT_TRUE(text);
  EXPECT_EQ(netmap_to_json(*text), out);
  // Metric and masquerade are optional.
  Json j = routed(k);
  j["peers"][0]["routes"][0].erase("metric");
  j["peers"][0]["routes"][0].erase("masquerade");
  m = parse_netmap(j, "m", ParseOptions{true});
  ASSERT_TRUE(m);
  EXPECT_EQ(m->peers[0].routes[0].metric, 0);
  EXPECT_FALSE(m->peers[0].routes[0].masquerade);
}

TEST(NetMapRoutes, MapsWithoutRoutesAreWrittenAsBefore) {
  Keys k;
  Json j = routed(k);
  j["self"].erase("routes");
  j["peers"][0].erase("routes");
  j["peers"][1].erase("routes");
  j["firewall"].erase("forward");
  auto m = parse_netmap(j, "m", ParseOptions{true});
  ASSERT_TRUE(m);
  Json out = netmap_to_json(*m);
  EXPECT_FALSE(out["self"].contains("routes"));
  EXPECT_FALSE(out["peers"][0].contains("routes"));
  EXPECT_FALSE(out["firewall"].contains("forward"));
  EXPECT_TRUE(parse_netmap_fast(out.dump(), ParseOptions{true}).has_value());
}

TEST(NetMapRoutes, RejectsBadRoutes) {
  Keys k;
  Json j = routed(k);
  j["peers"][0]["routes"][0]["network"] = "100.64.9.0/24";
  EXPECT_NE(error_of(j).find("overlaps the overlay"), std::string::npos);
  j = routed(k);
  j["peers"][0]["routes"][0]["network"] = "100.0.0.0/8";  // contains the overlay
  EXPECT_NE(error_of(j).find("overlaps the overlay"), std::string::npos);
  j = routed(k);
  j["self"]["routes"][0]["network"] = "fd00:1:2:5::/64";
  EXPECT_NE(error_of(j).find("overlaps the overlay"), std::string::npos);
  j = routed(k);
  j["peers"][1]["routes"][1]["network"] = "198.51.100.0/24";
  EXPECT_NE(error_of(j).find("duplicate route 198.51.100.0/24"), std::string::npos);
  j = routed(k);
  j["peers"][0]["routes"][0]["metric"] = 70000;
  EXPECT_NE(error_of(j).find("peers[0].routes[0].metric"), std::string::npos);
  j = routed(k);
  j["peers"][0]["routes"][0]["network"] = "198.51.100.0/40";
  EXPECT_NE(error_of(j).find("peers[0].routes[0].network"), std::string::npos);
  j = routed(k);
  j["peers"][0]["routes"][0]["masquerade"] = "yes";
  EXPECT_FALSE(parse_netmap(j, "m"));
  j = routed(k);
  j["firewall"]["forward"][0].erase("destinations");
  EXPECT_NE(error_of(j, false).find("destinations"), std::string::npos);
  j = routed(k);
  j["firewall"]["forward"][0]["destinations"] = Json::array();
  EXPECT_NE(error_of(j, false).find("at least one destination"), std::string::npos);
  // Strict mode: unknown members are errors, and inbound rules have no destinations.
  j = routed(k);
  j["peers"][0]["routes"][0]["via"] = "x";
  EXPECT_NE(error_of(j).find("via"), std::string::npos);
  EXPECT_TRUE(parse_netmap(j, "m", ParseOptions{false}));
  j = routed(k);
  j["self"]["routes"][0]["metric"] = 1;  // self.routes carry no metric
  EXPECT_NE(error_of(j).find("metric"), std::string::npos);
  j = routed(k);
  j["firewall"]["inbound"][0]["destinations"] = {"192.0.2.0/24"};
  EXPECT_NE(error_of(j).find("destinations"), std::string::npos);
}

TEST(NetMapRoutes, OverlayCollisionRule) {
  std::vector<Prefix> overlay{*Prefix::parse("100.64.0.0/10"), *Prefix::parse("fd00:1:2::/48")};
  EXPECT_FALSE(route_overlaps_overlay(*Prefix::parse("0.0.0.0/0"), overlay));
  EXPECT_FALSE(route_overlaps_overlay(*Prefix::parse("::/0"), overlay));
  EXPECT_FALSE(route_overlaps_overlay(*Prefix::parse("100.128.0.0/10"), overlay));
  EXPECT_TRUE(route_overlaps_overlay(*Prefix::parse("100.64.0.5/32"), overlay));
  EXPECT_TRUE(route_overlaps_overlay(*Prefix::parse("64.0.0.0/2"), overlay));
  EXPECT_TRUE(route_overlaps_overlay(*Prefix::parse("fd00::/8"), overlay));
}

}  // namespace mesh
