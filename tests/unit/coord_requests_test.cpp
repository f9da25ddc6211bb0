// The coordinator's request bodies (coord/requests.h) and the time header
// (coord/auth.h), as the handlers see them: what is accepted, and the error
// (with its JSON path, which becomes the HTTP error's field) for what is not.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coord/auth.h"
#include "coord/requests.h"

using namespace mesh;
using namespace mesh::coord;

namespace {
Json J(const char* text) { return *parse_json(text, "test"); }
}  // namespace

TEST(CoordRequests, JoinTakesAKeyAndAnOptionalValidName) {
  auto r = parse_join_request(J(R"({"setup_key":"abc","name":"alice"})"));
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(r->setup_key, "abc");
  EXPECT_EQ(r->name, "alice");
  auto anon = parse_join_request(J(R"({"setup_key":"abc","name":null})"));
  ASSERT_TRUE(anon);
  EXPECT_EQ(anon->name, "");
  auto bad = parse_join_request(J(R"({"setup_key":"abc","name":"Alice"})"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().code(), Exit::DataErr);
  EXPECT_EQ(bad.status().message().rfind("request: name: invalid peer name 'Alice'", 0), 0u)
      << bad.status().message();
  EXPECT_FALSE(parse_join_request(J(R"({"setup_key":"abc","admin":true})")));
  EXPECT_FALSE(parse_join_request(J(R"({"name":"alice"})")));
  EXPECT_FALSE(parse_join_request(J(R"(["abc"])")));
}

TEST(CoordRequests, PunchTakesOneToMaxDistinctKeys) {
  const char* k1 = "FKk5KhuJ4lHvDybQXPK2yDdsAkcTJHGqpsPLfUUydA4=";
  const char* k2 = "jl+UJl3xuj8bsk9gLAcD9fH94r2P3LdX347ctNKofS4=";
  Json j{{"peers", {k1, k2, k1}}};
  auto r = parse_punch_request(j, 3);
  ASSERT_TRUE(r) << r.status().message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].to_base64(), k1);
  EXPECT_FALSE(parse_punch_request(j, 2));
  EXPECT_FALSE(parse_punch_request(J(R"({"peers":[]})"), 64));
  auto bad = parse_punch_request(J(R"({"peers":["not a key"]})"), 64);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message().rfind("request: peers[0]: ", 0), 0u) << bad.status().message();
}

TEST(CoordRequests, SetupKeyDefaultsAndLimits) {
  auto k = parse_setup_key_request(J(R"({"name":"ci"})"), 1000);
  ASSERT_TRUE(k) << k.status().message();
  EXPECT_FALSE(k->reusable);
  EXPECT_EQ(k->usage_limit, 1);
  EXPECT_EQ(k->expires_at, 0);
  auto r = parse_setup_key_request(
      J(R"({"name":"laptops","reusable":true,"expires_in":"2h","ephemeral_timeout":"15m",)"
        R"("groups":["web","web","db"],"tags":["admin"]})"),
      1000);
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(r->usage_limit, 0);
  EXPECT_EQ(r->expires_at, 1000 + 7200);
  EXPECT_EQ(r->ephemeral_timeout, 900);
  EXPECT_EQ(r->groups, (std::vector<std::string>{"web", "db"}));
  EXPECT_FALSE(parse_setup_key_request(J(R"({"name":"ci","usage_limit":5})"), 1000));
  EXPECT_FALSE(parse_setup_key_request(J(R"({"name":"ci","expires_in":"0s"})"), 1000));
  EXPECT_FALSE(parse_setup_key_request(J(R"({"name":"ci","expires_in":"1w"})"), 1000));
  EXPECT_FALSE(parse_setup_key_request(J(R"({"name":"ci","expires_in":"1234567890d"})"), 1000));
  EXPECT_FALSE(parse_setup_key_request(J(R"({"name":"ci","groups":["Web"]})"), 1000));
}

TEST(CoordRequests, PeerOperationsTakeTheirOwnFields) {
  auto rn = parse_peer_op_request(J(R"({"peer":"alice","name":"bob"})"), "rename");
  ASSERT_TRUE(rn);
  EXPECT_EQ(rn->peer, "alice");
  EXPECT_EQ(rn->name, "bob");
  EXPECT_FALSE(parse_peer_op_request(J(R"({"peer":"alice","name":"bob"})"), "delete"));
  auto bad = parse_peer_op_request(J(R"({"peer":"alice","name":"-x"})"), "rename");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message(), "request: name: invalid peer name '-x'");
  auto sg = parse_peer_op_request(J(R"({"peer":"alice","groups":["a","b","a"]})"), "set-groups");
  ASSERT_TRUE(sg);
  EXPECT_EQ(sg->groups, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(parse_peer_op_request(J(R"({"peer":"alice"})"), "set-groups"));
  auto rv = parse_revoke_request(J(R"({"key":"7"})"));
  ASSERT_TRUE(rv);
  EXPECT_EQ(*rv, "7");
}

TEST(CoordRequests, PolicyCheckDefaultsToAnyService) {
  auto r = parse_policy_check_request(J(R"({"from":"a","to":"group:db"})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->service.to_string(), "any");
  auto p = parse_policy_check_request(J(R"({"from":"a","to":"b","port":"5432/tcp"})"));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->service.port, 5432);
  auto bad = parse_policy_check_request(J(R"({"from":"a","to":"b","port":"70000/tcp"})"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message().rfind("request: port: ", 0), 0u);
}

TEST(CoordAuth, TimeHeaderIsADecimalIntegerAndNothingElse) {
  EXPECT_EQ(*parse_time_header("1700000000"), 1700000000);
  EXPECT_EQ(*parse_time_header("-5"), -5);
  for (const char* bad : {"", "12x", "0x10", "99999999999999999999", "1.5", "abc"}) {
    auto t = parse_time_header(bad);
    ASSERT_FALSE(t) << bad;
    EXPECT_EQ(t.status().message(), "X-Mesh-Time: expected unix seconds");
  }
}

TEST(CoordRequests, LoginTakesOneOfTokenHandleOrCode) {
  auto t = parse_login_request(J(R"({"id_token":"a.b.c","nonce":"n","name":"lap"})"));
  ASSERT_TRUE(t) << t.status().message();
  EXPECT_EQ(t->enrol.setup_key, "a.b.c");
  EXPECT_EQ(t->nonce, "n");
  EXPECT_EQ(t->enrol.name, "lap");
  auto h = parse_login_request(J(R"({"device_handle":"h"})"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->device_handle, "h");
  auto c = parse_login_request(J(
      R"({"code":"c","code_verifier":"v","redirect_uri":"http://127.0.0.1:1/callback","nonce":"n"})"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->code_verifier, "v");
  for (const char* bad : {R"({})", R"({"id_token":"t","device_handle":"h"})",
                          R"({"code":"c","code_verifier":"v","redirect_uri":"r"})",
                          R"({"id_token":"t","code_verifier":"v"})",
                          R"({"device_handle":"h","nonce":"n"})", R"({"id_token":""})",
                          R"({"id_token":"t","setup_key":"k"})", R"({"id_token":"t","name":"Bad"})"})
    EXPECT_FALSE(parse_login_request(J(bad))) << bad;
}
