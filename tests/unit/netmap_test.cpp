// Unit tests for lib/netmap: the network map and the endpoints document.
#include "netmap/netmap.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "netmap/endpoints.h"

namespace mesh {
namespace {

struct Keys {
  std::string self = SecretKey::generate_private().public_key().to_base64();
  std::string a = SecretKey::generate_private().public_key().to_base64();
  std::string b = SecretKey::generate_private().public_key().to_base64();
};

Json sample(const Keys& k) {
  return Json::parse(R"({
    "version": 1, "serial": 7,
    "self": {"name": "me", "public_key": ")" + k.self + R"(",
             "addresses": ["100.64.0.1/10", "fd7a:115c:a1e0::1/48"], "listen_port": 41641},
    "peers": [
      {"name": "a", "public_key": ")" + k.a + R"(", "addresses": ["100.64.0.2/32"],
       "allowed_ips": ["198.18.5.9/24"],
       "endpoints": [{"endpoint": "203.0.113.5:40000", "kind": "srflx"}], "keepalive": 25},
      {"name": "b", "public_key": ")" + k.b + R"(", "addresses": ["100.64.0.3/32"]}
    ],
    "firewall": {"inbound": [
      {"sources": ["100.64.0.2/32"], "proto": "tcp", "ports": [22, "8000-8080"], "rule": "ssh"},
      {"sources": ["100.64.0.3/32"], "proto": "icmp"}]},
    "stun": ["203.0.113.1:3478"],
    "turn": [{"server": "203.0.113.1:3478", "username": "1999999999:me", "password": "x"}],
    "dns": {"domain": "corp.mesh"}
  })");
}

TEST(NetMap, ParsesAndNormalises) {
  Keys k;
  auto m = parse_netmap(sample(k), "m.json", {.strict = true});
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->serial, 7u);
  EXPECT_EQ(m->self.listen_port, 41641);
  EXPECT_EQ(m->self.mtu, 1420);
  ASSERT_EQ(m->peers.size(), 2u);
  // Allowed IPs are canonical and always include the peer's own address.
  ASSERT_EQ(m->peers[0].allowed_ips.size(), 2u);
  EXPECT_EQ(m->peers[0].allowed_ips[0].to_string(), "198.18.5.0/24");
  EXPECT_EQ(m->peers[0].allowed_ips[1].to_string(), "100.64.0.2/32");
  EXPECT_EQ(m->peers[0].endpoints[0].endpoint.to_string(), "203.0.113.5:40000");
  EXPECT_EQ(m->inbound[0].ports[1].to_string(), "8000-8080");
  EXPECT_EQ(m->turn[0].transport, "udp");
  EXPECT_EQ(m->dns_domain, "corp.mesh");
}

TEST(NetMap, DnsIsOptionalAndWrittenOnlyWhenSet) {
  Keys k;
  Json j = sample(k);
  j.erase("dns");
  auto m = parse_netmap(j, "m.json", {.strict = true});
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->dns_domain, "");
  EXPECT_FALSE(netmap_to_json(*m).contains("dns"));
  m->dns_domain = "mesh";
  EXPECT_EQ(netmap_to_json(*m)["dns"], Json::parse(R"({"domain":"mesh"})"));
}

TEST(NetMap, DnsNamesFollowRfc1123) {
  for (std::string ok : {"mesh", "a", "db-1", "1db", "Mesh"}) EXPECT_TRUE(valid_dns_label(ok)) << ok;
  EXPECT_TRUE(valid_dns_label(std::string(63, 'x')));
  for (std::string bad : {"", "-a", "a-", "a_b", "a.b", "a b", "\xc3\xa9"}) EXPECT_FALSE(valid_dns_label(bad)) << bad;
  EXPECT_FALSE(valid_dns_label(std::string(64, 'x')));
  for (const char* ok : {"mesh", "corp.example", "a.b.c", "x-1.y2"}) EXPECT_TRUE(valid_dns_domain(ok)) << ok;
  std::string long_ok, too_long;
  for (int i = 0; i < 4; ++i) long_ok += (i ? "." : "") + std::string(i < 3 ? 63 : 61, 'a');  // 253
  too_long = long_ok + "a";
  EXPECT_EQ(long_ok.size(), 253u);
  EXPECT_TRUE(valid_dns_domain(long_ok));
  EXPECT_FALSE(valid_dns_domain(too_long));
  for (const char* bad : {"", ".", "mesh.", ".mesh", "a..b", "a_b.c", "-a.b", "a b"})
    EXPECT_FALSE(valid_dns_domain(bad)) << bad;
}

TEST(NetMap, RoundTripsThroughJson) {
  Keys k;
  auto m = parse_netmap(sample(k), "m.json");
  ASSERT_TRUE(m.is_ok());
  Json out = netmap_to_json(*m);
  auto again = parse_netmap(out, "out", {.strict = true});
  ASSERT_TRUE(again.is_ok()) << again.status().message();
  EXPECT_EQ(netmap_to_json(*again), out);
}

struct BadCase {
  const char* what;
  std::function<void(Json&, const Keys&)> mutate;
  const char* expect;  // substring of the error
};

TEST(NetMap, RejectsInvalidMapsWithThePath) {
  std::vector<BadCase> cases = {
      {"bad key", [](Json& j, const Keys&) { j["peers"][0]["public_key"] = "nope"; },
       "peers[0].public_key: invalid key"},
      {"bad cidr", [](Json& j, const Keys&) { j["peers"][1]["addresses"][0] = "100.64.0.300/32"; },
       "peers[1].addresses[0]"},
      {"duplicate peer",
       [](Json& j, const Keys& k) {
         j["peers"][1]["public_key"] = k.a;
       },
       "duplicate peer"},
      {"own key", [](Json& j, const Keys& k) { j["peers"][0]["public_key"] = k.self; },
       "own public key"},
      {"overlap", [](Json& j, const Keys&) { j["peers"][1]["allowed_ips"] = {"198.18.5.0/24"}; },
       "also given to peers[0]"},
      {"ports with icmp",
       [](Json& j, const Keys&) { j["firewall"]["inbound"][1]["ports"] = {22}; },
       "ports are only allowed"},
      {"bad port", [](Json& j, const Keys&) { j["firewall"]["inbound"][0]["ports"] = {"90-80"}; },
       "low end above high end"},
      {"bad proto", [](Json& j, const Keys&) { j["firewall"]["inbound"][0]["proto"] = "sctp"; },
       "unknown proto"},
      {"bad endpoint",
       [](Json& j, const Keys&) { j["peers"][0]["endpoints"][0]["endpoint"] = "203.0.113.5"; },
       "peers[0].endpoints[0]"},
      {"version", [](Json& j, const Keys&) { j["version"] = 2; }, "unsupported version"},
      {"missing self", [](Json& j, const Keys&) { j.erase("self"); }, "self: required"},
      {"wrong type", [](Json& j, const Keys&) { j["serial"] = "7"; }, "serial: expected integer"},
      {"bad domain", [](Json& j, const Keys&) { j["dns"]["domain"] = "my_mesh"; },
       "dns.domain: invalid DNS domain 'my_mesh'"},
      {"empty domain", [](Json& j, const Keys&) { j["dns"]["domain"] = ""; }, "dns.domain: invalid DNS domain"},
      {"dns without domain", [](Json& j, const Keys&) { j["dns"] = Json::object(); }, "dns.domain: required"},
      {"domain not a string", [](Json& j, const Keys&) { j["dns"]["domain"] = 7; }, "dns.domain: expected string"},
  };
  for (auto& c : cases) {
    Keys k;
    Json j = sample(k);
    c.mutate(j, k);
    auto m = parse_netmap(j, "m.json");
    ASSERT_FALSE(m.is_ok()) << c.what;
    EXPECT_EQ(m.status().code(), Exit::DataErr) << c.what;
    EXPECT_NE(m.status().message().find(c.expect), std::string::npos)
        << c.what << ": " << m.status().message();
  }
}

TEST(NetMap, StrictModeRejectsUnknownFields) {
  Keys k;
  Json j = sample(k);
  j["peers"][0]["colour"] = "blue";
  EXPECT_TRUE(parse_netmap(j, "m").is_ok());
  auto m = parse_netmap(j, "m", {.strict = true});
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().message(), "m: peers[0].colour: unknown field");
  j = sample(k);
  j["dns"]["search"] = true;
  EXPECT_TRUE(parse_netmap(j, "m").is_ok());
  m = parse_netmap(j, "m", {.strict = true});
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().message(), "m: dns.search: unknown field");
}

TEST(Endpoints, ParseValidateAndMerge) {
  Keys k;
  Json punch = Json::parse(R"({"version":1,"candidates":[{"endpoint":"192.0.2.5:41641","kind":"host"}],
    "peers":[{"public_key":")" + k.a + R"(","status":"direct","endpoint":"198.51.100.9:5000","kind":"srflx","rtt_ms":1.5},
             {"public_key":")" + k.b + R"(","status":"relay-needed"}]})");
  Json relay = Json::parse(R"({"version":1,"candidates":[{"endpoint":"203.0.113.1:50000","kind":"relay"}],
    "peers":[{"public_key":")" + k.b + R"(","status":"relayed","endpoint":"127.0.0.1:40001","kind":"relay"},
             {"public_key":")" + k.a + R"(","status":"relay-needed"}]})");
  auto p = parse_endpoints(punch, "p", {.strict = true});
  auto r = parse_endpoints(relay, "r", {.strict = true});
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  auto m = merge_endpoints({*p, *r});
  ASSERT_EQ(m.candidates.size(), 2u);
  auto* a = m.find(*PublicKey::from_base64(k.a));
  auto* b = m.find(*PublicKey::from_base64(k.b));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->status, "direct");  // a later relay-needed does not undo a direct path
  EXPECT_EQ(b->status, "relayed");
  EXPECT_EQ(b->endpoint->to_string(), "127.0.0.1:40001");
  auto again = parse_endpoints(endpoints_to_json(m), "m", {.strict = true});
  ASSERT_TRUE(again.is_ok()) << again.status().message();

  Json bad = punch;
  bad["peers"][0].erase("endpoint");
  EXPECT_NE(parse_endpoints(bad, "p").status().message().find("endpoint is required"),
            std::string::npos);
}

}  // namespace
}  // namespace mesh
