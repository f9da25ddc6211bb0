// Node key rotation (coord/rotate.h): the proof of possession of the new key
// and the model's key swap.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coord/model.h"
#include "coord/rotate.h"

using namespace mesh;
using namespace mesh::coord;

namespace {

struct Keys {
  SecretKey coord = SecretKey::generate_private();
  SecretKey old_key = SecretKey::generate_private();
  SecretKey fresh = SecretKey::generate_private();
  PublicKey cp = coord.public_key(), op = old_key.public_key(), np = fresh.public_key();
};

const std::string kNonce = "AAAAAAAAAAAAAAAAAAAAAA";

}  // namespace

TEST(CoordRotate, ProofProvesTheNewKeyForThisRequestOnly) {
  Keys k;
  auto proof = rotation_proof(k.fresh, k.cp, k.op, kNonce);
  ASSERT_TRUE(proof) << proof.status().message();
  EXPECT_TRUE(check_rotation_proof(k.coord, k.cp, k.op, k.np, kNonce, *proof));
  // Another request (nonce), another old key, another new key: refused.
  EXPECT_EQ(check_rotation_proof(k.coord, k.cp, k.op, k.np, "BBBBBBBBBBBBBBBBBBBBBB", *proof).code(),
            Exit::NoPerm);
  PublicKey other = SecretKey::generate_private().public_key();
  EXPECT_EQ(check_rotation_proof(k.coord, k.cp, other, k.np, kNonce, *proof).code(), Exit::NoPerm);
  EXPECT_EQ(check_rotation_proof(k.coord, k.cp, k.op, other, kNonce, *proof).code(), Exit::NoPerm);
  // A proof made by someone without the new private key (here: the old key
  // pretending) does not verify.
  auto forged = rotation_proof(k.old_key, k.cp, k.op, kNonce);
  ASSERT_TRUE(forged);
  EXPECT_EQ(check_rotation_proof(k.coord, k.cp, k.op, k.np, kNonce, *forged).code(), Exit::NoPerm);
  // A proof for another coordinator does not verify here.
  SecretKey c2 = SecretKey::generate_private();
  auto elsewhere = rotation_proof(k.fresh, c2.public_key(), k.op, kNonce);
  ASSERT_TRUE(elsewhere);
  EXPECT_EQ(check_rotation_proof(k.coord, k.cp, k.op, k.np, kNonce, *elsewhere).code(), Exit::NoPerm);
}

TEST(CoordRotate, LowOrderNewKeyIsADataError) {
  Keys k;
  PublicKey low{};  // all zero except the order-1 point encoding 1
  low.bytes[0] = 1;
  EXPECT_EQ(check_rotation_proof(k.coord, k.cp, k.op, low, kNonce, "AAAA").code(), Exit::DataErr);
}

TEST(CoordRotate, RequestParsing) {
  Keys k;
  auto ok = parse_rotate_request(Json{{"public_key", k.np.to_base64()}, {"proof", "bWFj"}});
  ASSERT_TRUE(ok) << ok.status().message();
  EXPECT_EQ(ok->public_key, k.np);
  EXPECT_EQ(ok->proof, "bWFj");
  EXPECT_EQ(rotate_request_json(*ok), (Json{{"public_key", k.np.to_base64()}, {"proof", "bWFj"}}));
  struct Bad {
    Json body;
    std::string field;
  };
  std::string zero = PublicKey{}.to_base64();
  for (const auto& b : std::vector<Bad>{
           {Json{{"proof", "bWFj"}}, "public_key"},
           {Json{{"public_key", "nope"}, {"proof", "bWFj"}}, "public_key"},
           {Json{{"public_key", zero}, {"proof", "bWFj"}}, "public_key"},
           {Json{{"public_key", k.np.to_base64()}}, "proof"},
           {Json{{"public_key", k.np.to_base64()}, {"proof", ""}}, "proof"},
           {Json{{"public_key", k.np.to_base64()}, {"proof", std::string(65, 'a')}}, "proof"},
           {Json{{"public_key", k.np.to_base64()}, {"proof", "bWFj"}, {"x", 1}}, "x"},
       }) {
    auto r = parse_rotate_request(b.body);
    ASSERT_FALSE(r) << b.body.dump();
    EXPECT_EQ(r.status().code(), Exit::DataErr);
    EXPECT_NE(r.status().message().find(b.field), std::string::npos) << r.status().message();
  }
}

TEST(CoordRotate, ModelSwapKeepsIdentityAndChangesTheMapsThatShowTheKey) {
  ModelConfig cfg;
  cfg.ipv4 = *Prefix::parse("100.64.0.0/10");
  cfg.ipv6 = *Prefix::parse("fd00:1:2::/48");
  Model m(cfg);
  m.rebuild(0);
  auto pol = parse_policy(*parse_json(R"({"groups": {"a": {}, "b": {}},
      "rules": [{"name": "a-a", "src": ["a"], "dst": ["a"], "proto": "any"}]})", "p"), "p");
  ASSERT_TRUE(pol) << pol.status().message();
  m.set_policy(*pol, 0);
  for (auto [n, g] : std::vector<std::pair<std::string, std::string>>{
           {"a1", "a"}, {"a2", "a"}, {"b1", "b"}}) {
    auto p = std::make_unique<Peer>();
    p->id = m.new_peer_id();
    p->name = n;
    p->public_key = SecretKey::generate_private().public_key();
    p->host_index = *m.allocate_host();
    p->ipv4 = m.host_v4(p->host_index);
    p->ipv6 = m.host_v6(p->host_index);
    p->groups = {g};
    m.add_peer(std::move(p), 1);
  }
  Peer* a1 = m.by_name("a1");
  uint32_t id = a1->id;
  PublicKey old = a1->public_key;
  std::string v4 = a1->ipv4.to_string(), v6 = a1->ipv6.to_string();
  uint64_t b1_serial = m.by_name("b1")->serial;
  PublicKey fresh = SecretKey::generate_private().public_key();
  Changes ch = m.rekey_peer(id, fresh, 2);
  // Its own map and a2's (which shows a1) change; b1 sees nothing of a1.
  std::vector<uint32_t> want{id, m.by_name("a2")->id};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ch.changed, want);
  EXPECT_GT(ch.serial, 0u);
  EXPECT_EQ(m.by_name("b1")->serial, b1_serial);
  // Same id, name, addresses and groups; found by the new key only.
  EXPECT_EQ(m.by_key(fresh), m.by_id(id));
  EXPECT_EQ(m.by_key(old), nullptr);
  EXPECT_EQ(m.by_name("a1")->id, id);
  EXPECT_EQ(m.by_id(id)->ipv4.to_string(), v4);
  EXPECT_EQ(m.by_id(id)->ipv6.to_string(), v6);
  EXPECT_EQ(m.by_id(id)->groups, std::vector<std::string>{"a"});
  NetMap a2 = m.build_map(*m.by_name("a2"));
  ASSERT_EQ(a2.peers.size(), 1u);
  EXPECT_EQ(a2.peers[0].public_key, fresh);
  EXPECT_EQ(a2.peers[0].name, "a1");
  EXPECT_EQ(m.build_map(*m.by_id(id)).self.public_key, fresh);
  // The pre-rendered map text follows too.
  EXPECT_NE(m.map_json(*m.by_name("a2")).find(fresh.to_base64()), std::string::npos);
  EXPECT_EQ(m.map_json(*m.by_name("a2")).find(old.to_base64()), std::string::npos);
}

TEST(CoordRotate, PreviousKeyUntilTakesUnixSecondsOrUtc) {
  EXPECT_EQ(*parse_until("1798761600"), 1798761600);
  EXPECT_EQ(*parse_until("2027-01-01T00:00:00Z"), 1798761600);
  EXPECT_EQ(*parse_until("1970-01-01T00:00:10Z"), 10);
  for (const char* bad : {"", "tomorrow", "2027-01-01", "2027-01-01T00:00:00", "2027-01-01T00:00:00+01:00",
                          "-5", "12345678901234", "2027-13-01T00:00:00Z"}) {
    auto r = parse_until(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.status().code(), Exit::Usage) << bad;
    }
  }
}
