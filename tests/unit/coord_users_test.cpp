// Users in policy and the model (coord/users.h): user:EMAIL and
// group:idp:NAME selectors, a user's peers following the latest login's
// groups, login expiry and disabled users cutting peers out of every map.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coord/model.h"
#include "coord_fixture.h"
#include "coord/users.h"

using namespace mesh;
using namespace mesh::coord;

namespace {

using test::policy;

Model make_model() { return Model(test::config()); }

uint32_t add(Model& m, const std::string& name, std::vector<std::string> groups,
             const std::string& owner = "", const std::string& email = "",
             std::vector<std::string> idp = {}, int64_t expires = 0) {
  auto p = test::make_peer(m, name, std::move(groups));
  p->owner = owner;
  p->owner_email = email;
  p->idp_groups = std::move(idp);
  p->login_expires_at = expires;
  uint32_t id = p->id;
  m.add_peer(std::move(p), 1);
  return id;
}

std::vector<std::string> seen_by(const Model& m, uint32_t id) {
  std::vector<std::string> out;
  for (const auto& p : m.build_map(*m.by_id(id)).peers) out.push_back(p.name);
  return out;
}

const char* kPolicy = R"({
  "groups": {"servers": {}},
  "rules": [{"name": "eng", "src": ["group:idp:eng"], "dst": ["servers"], "proto": "tcp", "ports": [22]},
            {"name": "carol", "src": ["user:Carol@Example.com"], "dst": ["servers"]}],
  "tests": [{"from": "group:idp:eng", "to": "group:servers", "port": "22/tcp", "expect": "allow"},
            {"from": "group:idp:sales", "to": "group:servers", "port": "22/tcp", "expect": "deny"},
            {"from": "user:carol@example.com", "to": "group:servers", "expect": "allow"}]})";

}  // namespace

TEST(CoordUsers, SelectorsParseAndPrint) {
  Policy p = policy(kPolicy);
  ASSERT_EQ(p.rules.size(), 2u);
  EXPECT_EQ(p.rules[0].src[0].kind, Selector::Kind::IdpGroup);
  EXPECT_EQ(p.rules[0].src[0].to_string(), "group:idp:eng");
  EXPECT_EQ(p.rules[1].src[0].kind, Selector::Kind::User);
  EXPECT_EQ(p.rules[1].src[0].to_string(), "user:carol@example.com");  // lower case
  // Round trip through JSON.
  auto again = parse_policy(policy_to_json(p), "again");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->rules[1].src[0].name, "carol@example.com");
  for (const char* bad : {R"({"rules":[{"src":["user:"],"dst":["all"]}]})",
                          R"({"rules":[{"src":["user:nobody"],"dst":["all"]}]})",
                          R"({"rules":[{"src":["group:idp:"],"dst":["all"]}]})",
                          R"({"rules":[],"tests":[{"from":"user:x","to":"all"}]})"}) {
    auto j = parse_json(bad, "p");
    EXPECT_FALSE(parse_policy(*j, "p")) << bad;
  }
}

TEST(CoordUsers, IdpGroupsAndUsersDecideMaps) {
  Model m = make_model();
  m.set_policy(policy(kPolicy), 1);
  uint32_t srv = add(m, "srv", {"servers"});
  uint32_t a = add(m, "a", {}, "alice", "alice@example.com", {"eng"});
  uint32_t b = add(m, "b", {}, "bob", "bob@example.com", {"sales"});
  uint32_t c = add(m, "c", {}, "carol", "carol@example.com", {});
  add(m, "machine", {"eng"});  // a setup-key peer in a policy group named like the IdP's
  EXPECT_EQ(seen_by(m, srv), (std::vector<std::string>{"a", "c"}));
  EXPECT_TRUE(m.run_tests(m.policy()));
  // bob moves to eng at the IdP: his peers follow at his next login.
  User bob{"bob", "bob@example.com", "Bob", {"eng"}};
  std::vector<uint32_t> touched;
  Changes ch = sync_user_peers(m, bob, 2, &touched);
  EXPECT_EQ(touched, std::vector<uint32_t>{b});
  EXPECT_NE(ch.serial, 0u);
  EXPECT_EQ(seen_by(m, srv), (std::vector<std::string>{"a", "b", "c"}));
  // Disabling alice cuts her peer out of every map, its own included.
  User alice{"alice", "alice@example.com", "Alice", {"eng"}, true};
  touched.clear();
  sync_user_peers(m, alice, 3, &touched);
  EXPECT_EQ(seen_by(m, srv), (std::vector<std::string>{"b", "c"}));
  EXPECT_TRUE(seen_by(m, a).empty());
  EXPECT_EQ(m.by_id(a)->refusal(), "peer is cut off: its user is disabled");
  (void)c;
}

TEST(CoordUsers, LoginExpiryCutsOffAndRenewalRestores) {
  Model m = make_model();
  m.set_policy(policy(R"({"rules":[{"src":["all"],"dst":["all"]}]})"), 1);
  uint32_t srv = add(m, "srv", {});
  uint32_t lap = add(m, "lap", {}, "alice", "alice@example.com", {}, 100);
  EXPECT_EQ(seen_by(m, srv), std::vector<std::string>{"lap"});
  std::vector<uint32_t> expired;
  EXPECT_EQ(expire_logins(m, 99, &expired).serial, 0u);
  EXPECT_TRUE(expired.empty());
  Changes ch = expire_logins(m, 100, &expired);
  EXPECT_EQ(expired, std::vector<uint32_t>{lap});
  EXPECT_NE(ch.serial, 0u);
  EXPECT_TRUE(seen_by(m, srv).empty());
  EXPECT_NE(m.by_id(lap)->refusal().find("login expired"), std::string::npos);
  // Setup-key peers never expire; expiring again changes nothing.
  expired.clear();
  EXPECT_EQ(expire_logins(m, 10000, &expired).serial, 0u);
  EXPECT_TRUE(expired.empty());
  // A new login: same peer, same addresses.
  IpAddr before = m.by_id(lap)->ipv4;
  m.update_peer(lap, true, 200, [](Peer& q) {
    q.login_expired = false;
    q.login_expires_at = 300;
  });
  EXPECT_EQ(seen_by(m, srv), std::vector<std::string>{"lap"});
  EXPECT_EQ(m.by_id(lap)->ipv4, before);
  // The owner fields survive the store's record.
  auto back = Peer::from_record(m.by_id(lap)->to_record());
  ASSERT_TRUE(back);
  EXPECT_EQ((*back)->owner, "alice");
  EXPECT_EQ((*back)->login_expires_at, 300);
}

TEST(CoordUsers, LoginsMakeUsers) {
  oidc::Identity id;
  id.subject = "s-1";
  id.email = "Alice@Example.COM";
  id.name = "Alice";
  id.groups = {"eng", "ops", "eng"};
  Users users;
  User u = user_after_login(users, id, 50);
  EXPECT_EQ(u.email, "alice@example.com");
  EXPECT_EQ(u.groups, (std::vector<std::string>{"eng", "ops"}));
  EXPECT_EQ(u.created_at, 50);
  u.disabled = true;
  users[u.subject] = u;
  User again = user_after_login(users, id, 60);
  EXPECT_TRUE(again.disabled);  // a login does not re-enable a user
  EXPECT_EQ(again.created_at, 50);
  EXPECT_EQ(again.last_login, 60);
  EXPECT_EQ(find_user(users, "ALICE@example.com"), &users["s-1"]);
  EXPECT_EQ(find_user(users, "nobody"), nullptr);
  auto rt = User::from_json(u.to_json());
  ASSERT_TRUE(rt);
  EXPECT_EQ(rt->groups, u.groups);
  EXPECT_EQ(*parse_duration_text("24h"), 86400);
  EXPECT_EQ(*parse_duration_text("90m"), 5400);
  EXPECT_EQ(*parse_duration_text("0"), 0);
  EXPECT_FALSE(parse_duration_text("5x"));
  EXPECT_FALSE(parse_duration_text("h"));
}
