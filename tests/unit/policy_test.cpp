#include "coord/policy.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

using namespace mesh;
using namespace mesh::coord;

namespace {

Result<Policy> parse(const std::string& text) {
  auto j = parse_json(text, "p.json");
  if (!j) return j.status();
  return parse_policy(*j, "p.json");
}

const char* kPolicy = R"({
  "groups": {"admins": {"members": ["alice"]}, "servers": {"tags": ["srv"]}, "dns": {}},
  "rules": [
    {"name": "ssh", "src": ["admins"], "dst": ["servers"], "proto": "tcp", "ports": [22, "8000-8080"]},
    {"name": "dns", "src": ["all"], "dst": ["dns"], "proto": "udp", "ports": [53]},
    {"name": "ping", "src": ["100.64.0.0/16"], "dst": ["peer:db1"], "proto": "icmp"}
  ],
  "tests": [{"from": "alice", "to": "db1", "port": "22/tcp", "expect": "allow"}]
})";

PeerAttrs peer(std::string name, std::vector<std::string> groups = {},
               std::vector<std::string> tags = {}, std::string ip = "100.64.0.9") {
  return PeerAttrs{std::move(name), std::move(groups), std::move(tags), {*IpAddr::parse(ip)}};
}

}  // namespace

TEST(Policy, ParsesAndRoundTrips) {
  auto p = parse(kPolicy);
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_EQ(p->rules.size(), 3u);
  EXPECT_EQ(p->rules[0].ports.size(), 2u);
  EXPECT_EQ(p->rules[2].src[0].kind, Selector::Kind::Cidr);
  EXPECT_EQ(p->rules[2].dst[0].kind, Selector::Kind::Peer);
  auto again = parse_policy(policy_to_json(*p), "again");
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_EQ(policy_to_json(*again), policy_to_json(*p));
}

TEST(Policy, EvaluatesWithDefaultDeny) {
  auto p = *parse(kPolicy);
  auto alice = peer("alice"), db1 = peer("db1", {}, {"srv"}), bob = peer("bob", {"dns"});
  auto v = evaluate(p, alice, db1, *Service::parse("22/tcp"));
  EXPECT_TRUE(v.allow);
  EXPECT_EQ(v.rule, "ssh");
  EXPECT_TRUE(evaluate(p, alice, db1, *Service::parse("8080/tcp")).allow);
  EXPECT_FALSE(evaluate(p, alice, db1, *Service::parse("8081/tcp")).allow);
  EXPECT_FALSE(evaluate(p, alice, db1, *Service::parse("22/udp")).allow);
  EXPECT_EQ(evaluate(p, db1, alice, *Service::parse("22/tcp")).rule, "default-deny");
  EXPECT_TRUE(evaluate(p, db1, bob, *Service::parse("53/udp")).allow);
  EXPECT_TRUE(evaluate(p, bob, db1, *Service::parse("icmp")).allow);  // CIDR 100.64/16
  auto far = peer("far", {}, {}, "100.65.0.1");
  EXPECT_FALSE(evaluate(p, far, db1, *Service::parse("icmp")).allow);
  // "any" is only granted by a rule for any protocol.
  EXPECT_FALSE(evaluate(p, alice, db1, *Service::parse("any")).allow);
}

TEST(Policy, RejectsBadInputNamingTheField) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {R"({"rules":[{"src":["nope"],"dst":["all"]}]})", "rules[0].src[0]: unknown group 'nope'"},
      {R"({"rules":[{"src":["all"],"dst":["all"],"proto":"tcp","ports":[70000]}]})", "rules[0].ports[0]: must be at most 65535"},
      {R"({"rules":[{"src":["all"],"dst":["all"],"proto":"tcp","ports":["9-3"]}]})", "low end above high end"},
      {R"({"rules":[{"src":["all"],"dst":["all"],"proto":"icmp","ports":[1]}]})", "ports are only allowed with proto tcp or udp"},
      {R"({"rules":[{"src":["10.0.0.0/33"],"dst":["all"]}]})", "rules[0].src[0]: invalid CIDR"},
      {R"({"rules":[{"src":["all"],"dst":["all"],"proto":"sctp"}]})", "unknown proto 'sctp'"},
      {R"({"rules":[{"src":[],"dst":["all"]}]})", "rules[0].src: at least one selector"},
      {R"({"rules":[{"src":"all","dst":["all"]}]})", "rules[0].src: expected array, got string"},
      {R"({"groups":{"all":{}}})", "'all' is built in"},
      {R"({"groups":{"Bad Name":{}}})", "invalid group name"},
      {R"({"bogus":1})", "bogus: unknown field"},
      {R"({"tests":[{"from":"a","to":"b","port":"22/sctp","expect":"allow"}]})", "protocol must be tcp or udp"},
      {R"({"tests":[{"from":"a","to":"b","expect":"maybe"}]})", "tests[0].expect"},
      {R"({"tests":[{"from":"group:x","to":"b","expect":"deny"}]})", "unknown group 'x'"},
      {R"({"rules":[{"name":"a","src":["all"],"dst":["all"]},{"name":"a","src":["all"],"dst":["all"]}]})", "duplicate rule name"},
  };
  for (const auto& c : cases) {
    auto p = parse(c.text);
    ASSERT_FALSE(p) << c.text;
    EXPECT_EQ(p.status().code(), Exit::DataErr);
    EXPECT_NE(p.status().message().find(c.want), std::string::npos)
        << c.text << " -> " << p.status().message();
  }
}

TEST(Policy, ServiceParse) {
  EXPECT_EQ(Service::parse("22/tcp")->port, 22);
  EXPECT_EQ(Service::parse("icmp")->proto, "icmp");
  EXPECT_FALSE(Service::parse("0/tcp"));
  EXPECT_FALSE(Service::parse("22"));
  EXPECT_FALSE(Service::parse("65536/udp"));
  EXPECT_FALSE(Service::parse("22/tcp "));
}

namespace mesh::coord {
namespace {

// Names in rules' peer: selectors and groups' members grant access; names in
// tests do not (they only check), so they stay free for any setup key.
TEST(Policy, GrantedNamesAreMembersAndPeerSelectors) {
  auto p = parse(kPolicy);
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_EQ(granted_names(*p), (std::set<std::string>{"alice", "db1"}));
  EXPECT_TRUE(granted_names(empty_policy()).empty());
}

}  // namespace
}  // namespace mesh::coord
