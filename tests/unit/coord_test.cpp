// Coordinator logic: request authentication, allocation, map computation
// and incremental updates (checked against a from-scratch rebuild).
#include <gtest/gtest.h>
#include <sodium.h>

#include <nlohmann/json.hpp>

#include "coord/auth.h"
#include "coord/client.h"
#include "coord/candidates.h"
#include "coord/httpguard.h"
#include "coord/limits.h"
#include "coord/mapjson.h"
#include "coord/model.h"
#include "coord_fixture.h"
#include "coord/punch.h"
#include "coord/store.h"
#include "coord/watch.h"

using namespace mesh;
using namespace mesh::coord;

TEST(CoordAuth, BothSidesDeriveTheSameKeys) {
  SecretKey node = SecretKey::generate_private(), coord = SecretKey::generate_private();
  PublicKey np = node.public_key(), cp = coord.public_key();
  auto a = derive_session_keys(node, cp, np, cp);
  auto b = derive_session_keys(coord, np, np, cp);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->request.bytes(), b->request.bytes());
  EXPECT_EQ(a->response.bytes(), b->response.bytes());
  EXPECT_NE(a->request.bytes(), a->response.bytes());
  // Another node cannot produce the same MAC.
  SecretKey other = SecretKey::generate_private();
  auto c = derive_session_keys(other, cp, np, cp);
  ASSERT_TRUE(c);
  EXPECT_NE(c->request.bytes(), a->request.bytes());
}

TEST(CoordAuth, MacCoversEveryField) {
  SecretKey k = SecretKey::generate_preshared();
  std::string base = request_mac(k, "GET", "/v1/map?since=1", 1000, "nonce-nonce-nonce-1", "");
  EXPECT_TRUE(mac_equal(base, request_mac(k, "GET", "/v1/map?since=1", 1000, "nonce-nonce-nonce-1", "")));
  EXPECT_NE(base, request_mac(k, "POST", "/v1/map?since=1", 1000, "nonce-nonce-nonce-1", ""));
  EXPECT_NE(base, request_mac(k, "GET", "/v1/map?since=2", 1000, "nonce-nonce-nonce-1", ""));
  EXPECT_NE(base, request_mac(k, "GET", "/v1/map?since=1", 1001, "nonce-nonce-nonce-1", ""));
  EXPECT_NE(base, request_mac(k, "GET", "/v1/map?since=1", 1000, "nonce-nonce-nonce-2", ""));
  EXPECT_NE(base, request_mac(k, "GET", "/v1/map?since=1", 1000, "nonce-nonce-nonce-1", "x"));
  EXPECT_NE(response_mac(k, 200, "n", "body"), response_mac(k, 204, "n", "body"));
  EXPECT_NE(response_mac(k, 200, "n", "body"), response_mac(k, 200, "m", "body"));
}

TEST(CoordAuth, StaleAndReplayedRefused) {
  EXPECT_TRUE(check_time(1000, 1000));
  EXPECT_TRUE(check_time(1060, 1000));
  EXPECT_EQ(check_time(1061, 1000).code(), Exit::NoPerm);
  EXPECT_EQ(check_time(939, 1000).code(), Exit::NoPerm);
  NonceCache nc(3);
  EXPECT_TRUE(nc.check_and_insert("aaaaaaaaaaaaaaaaaaaaaa", 1000));
  auto again = nc.check_and_insert("aaaaaaaaaaaaaaaaaaaaaa", 1100);
  EXPECT_EQ(again.code(), Exit::NoPerm);
  EXPECT_NE(again.message().find("replayed"), std::string::npos);
  EXPECT_EQ(nc.check_and_insert("short", 1000).code(), Exit::NoPerm);
  EXPECT_TRUE(nc.check_and_insert("bbbbbbbbbbbbbbbbbbbbbb", 1000));
  EXPECT_TRUE(nc.check_and_insert("cccccccccccccccccccccc", 1000));
  // Full: refuse rather than forget a nonce that could still be replayed.
  EXPECT_EQ(nc.check_and_insert("dddddddddddddddddddddd", 1000).code(), Exit::TempFail);
  // Once no request carrying them can be fresh, old nonces are forgotten.
  EXPECT_TRUE(nc.check_and_insert("dddddddddddddddddddddd", 1000 + 2 * kMaxSkewSeconds + 2));
}

TEST(CoordAuth, SealedBodiesOpenOnlyWithTheirKeyAndNonce) {
  SecretKey node = SecretKey::generate_private(), coord = SecretKey::generate_private();
  PublicKey np = node.public_key(), cp = coord.public_key();
  auto a = derive_session_keys(node, cp, np, cp);
  auto b = derive_session_keys(coord, np, np, cp);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->seal_request.bytes(), b->seal_request.bytes());
  EXPECT_NE(a->seal_request.bytes(), a->request.bytes());
  EXPECT_NE(a->seal_request.bytes(), a->seal_response.bytes());
  std::string plain = R"({"setup_key":"s3cret"})";
  std::string sealed = seal_body(a->seal_request, "nonce-1", plain);
  EXPECT_EQ(sealed.find("s3cret"), std::string::npos);
  EXPECT_NE(sealed, seal_body(a->seal_request, "nonce-1", plain));  // random nonce each time
  auto opened = open_body(b->seal_request, "nonce-1", sealed);
  ASSERT_TRUE(opened) << opened.status().message();
  EXPECT_EQ(*opened, plain);
  // Another request's nonce, the other direction's key, or one flipped bit: refused.
  EXPECT_EQ(open_body(b->seal_request, "nonce-2", sealed).status().code(), Exit::NoPerm);
  EXPECT_FALSE(open_body(b->seal_response, "nonce-1", sealed));
  sealed[30] ^= 1;
  EXPECT_FALSE(open_body(b->seal_request, "nonce-1", sealed));
  EXPECT_FALSE(open_body(b->seal_request, "nonce-1", "short"));
  EXPECT_EQ(*open_body(b->seal_response, "n", seal_body(a->seal_response, "n", "")), "");
}

// The wire format is libsodium's crypto_aead_xchacha20poly1305_ietf
// (nonce || ciphertext || tag), whichever library does the bulk: sealed
// bodies cross both ways between it and seal_body/open_body, at sizes
// around ChaCha20's 64-byte blocks and a map's.
TEST(CoordAuth, SealedBodiesAreLibsodiumXChaCha20Poly1305) {
  SecretKey k = SecretKey::generate_preshared();
  for (size_t n : {size_t(0), size_t(1), size_t(63), size_t(64), size_t(65), size_t(1000),
                   size_t(92001)}) {
    std::string plain(n, '\0');
    random_bytes(reinterpret_cast<uint8_t*>(plain.data()), n);
    std::string ad = "ad-" + std::to_string(n);
    std::string sealed = seal_body(k, ad, plain);
    ASSERT_EQ(sealed.size(), 24 + n + 16);
    std::string back(n, '\0');
    unsigned long long len = 0;
    const auto* s = reinterpret_cast<const uint8_t*>(sealed.data());
    ASSERT_EQ(crypto_aead_xchacha20poly1305_ietf_decrypt(
                  reinterpret_cast<uint8_t*>(back.data()), &len, nullptr, s + 24, sealed.size() - 24,
                  reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), s, k.bytes().data()),
              0)
        << n;
    EXPECT_EQ(back, plain);
    std::string theirs(24 + n + 16, '\0');
    auto* o = reinterpret_cast<uint8_t*>(theirs.data());
    random_bytes(o, 24);
    crypto_aead_xchacha20poly1305_ietf_encrypt(o + 24, &len,
                                               reinterpret_cast<const uint8_t*>(plain.data()), n,
                                               reinterpret_cast<const uint8_t*>(ad.data()),
                                               ad.size(), nullptr, o, k.bytes().data());
    auto opened = open_body(k, ad, theirs);
    ASSERT_TRUE(opened) << n << ": " << opened.status().message();
    EXPECT_EQ(*opened, plain);
    theirs[theirs.size() - 1] ^= 0x80;  // the tag's last bit
    EXPECT_FALSE(open_body(k, ad, theirs));
  }
}

TEST(CoordClient, SetupKeysCarryTheCoordinatorKey) {
  PublicKey cp = SecretKey::generate_private().public_key();
  std::string text = format_setup_key("AbC-_123", cp);
  auto k = parse_setup_key(text);
  ASSERT_TRUE(k) << k.status().message();
  EXPECT_EQ(k->secret, "AbC-_123");
  ASSERT_TRUE(k->coordinator);
  EXPECT_EQ(*k->coordinator, cp);
  auto bare = parse_setup_key("AbC-_123");
  ASSERT_TRUE(bare);
  EXPECT_FALSE(bare->coordinator);
  EXPECT_EQ(parse_setup_key("AbC.notakey").status().code(), Exit::DataErr);
  EXPECT_FALSE(parse_setup_key(".x"));
  EXPECT_FALSE(parse_setup_key(""));
}

TEST(CoordClient, MapsMayGiveAllowedIpsOnlyInsideTheOverlay) {
  auto map = [](std::vector<std::string> allowed) {
    return Json{{"self", {{"addresses", {"100.64.0.1/10", "fd00:1::1/48"}}}},
                {"peers", {{{"name", "b"}, {"allowed_ips", allowed}}}}};
  };
  EXPECT_TRUE(check_map_overlay(map({"100.64.0.2/32", "fd00:1::2/128", "100.100.0.0/16"})));
  EXPECT_TRUE(check_map_overlay(map({})));
  for (const char* bad : {"0.0.0.0/0", "100.0.0.0/8", "198.51.100.0/24", "fd00:2::1/128", "::/0"}) {
    Status s = check_map_overlay(map({"100.64.0.2/32", bad}));
    EXPECT_EQ(s.code(), Exit::NoPerm) << bad;
    EXPECT_NE(s.message().find(bad), std::string::npos) << s.message();
  }
}

TEST(CoordRelay, TurnPasswordIsCoturnRestHmacSha1) {
  // RFC 2202-style check: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
  EXPECT_EQ(turn_password("key", "The quick brown fox jumps over the lazy dog"),
            "3nybhbi3iqa8ino29wqQcBydtNk=");
}

namespace {

using test::config;
using test::make_peer;
using test::policy;

const char* kWebPolicy = R"({
  "groups": {"web": {}, "db": {}, "ops": {}},
  "rules": [
    {"name": "web-db", "src": ["web"], "dst": ["db"], "proto": "tcp", "ports": [5432]},
    {"name": "ops-all", "src": ["ops"], "dst": ["all"], "proto": "any"}
  ]})";

std::vector<std::string> names(const NetMap& m) {
  std::vector<std::string> out;
  for (const auto& p : m.peers) out.push_back(p.name);
  return out;
}

}  // namespace

TEST(CoordModel, AllocatesDistinctAddressesAndPorts) {
  Model m(config());
  m.rebuild(0);
  std::set<std::string> addrs;
  for (int i = 0; i < 50; ++i) {
    auto p = make_peer(m, "p" + std::to_string(i), {});
    addrs.insert(p->ipv4.to_string());
    addrs.insert(p->ipv6.to_string());
    m.add_peer(std::move(p), 1);
  }
  EXPECT_EQ(addrs.size(), 100u);
  const Peer* first = m.by_name("p0");
  EXPECT_EQ(first->ipv4.to_string(), "100.64.0.1");
  EXPECT_EQ(first->ipv6.to_string(), "fd00:1:2::1");
  EXPECT_GE(first->listen_port, 20000);
  EXPECT_LT(first->listen_port, 60000);
  // A deleted peer's address is not handed out again at once.
  m.remove_peer(first->id, 2);
  auto next = make_peer(m, "new", {});
  EXPECT_EQ(next->ipv4.to_string(), "100.64.0.51");
}

TEST(CoordModel, MapsShowExactlyWhatThePolicyAllows) {
  Model m(config());
  m.rebuild(0);
  m.add_peer(make_peer(m, "web1", {"web"}), 1);
  m.add_peer(make_peer(m, "web2", {"web"}), 1);
  m.add_peer(make_peer(m, "db1", {"db"}), 1);
  m.add_peer(make_peer(m, "ops1", {"ops"}), 1);
  m.add_peer(make_peer(m, "lonely", {}), 1);
  m.set_policy(policy(kWebPolicy), 2);

  NetMap web1 = m.build_map(*m.by_name("web1"));
  EXPECT_EQ(names(web1), (std::vector<std::string>{"db1", "ops1"}));
  EXPECT_TRUE(web1.inbound.size() == 1 && web1.inbound[0].rule == "ops-all");
  NetMap db1 = m.build_map(*m.by_name("db1"));
  EXPECT_EQ(names(db1), (std::vector<std::string>{"web1", "web2", "ops1"}));
  ASSERT_EQ(db1.inbound.size(), 2u);
  EXPECT_EQ(db1.inbound[0].rule, "web-db");
  EXPECT_EQ(db1.inbound[0].proto, "tcp");
  EXPECT_EQ(db1.inbound[0].ports[0].lo, 5432);
  EXPECT_EQ(db1.inbound[0].sources.size(), 4u);  // web1, web2: v4 + v6
  NetMap lonely = m.build_map(*m.by_name("lonely"));
  EXPECT_EQ(names(lonely), (std::vector<std::string>{"ops1"}));
  NetMap ops = m.build_map(*m.by_name("ops1"));
  EXPECT_EQ(ops.peers.size(), 4u);
  EXPECT_TRUE(ops.inbound.empty());
  // Self addresses carry the overlay prefix length; peers are host routes.
  EXPECT_EQ(db1.self.addresses[0].len, 10);
  EXPECT_EQ(db1.self.addresses[1].len, 48);
  EXPECT_EQ(db1.peers[0].addresses[0].len, 32);
  EXPECT_EQ(db1.peers[0].keepalive, 25);
  // The JSON validates with the shared parser.
  auto again = parse_netmap(netmap_to_json(db1), "db1", ParseOptions{true});
  EXPECT_TRUE(again) << again.status().message();
}

TEST(CoordModel, IncrementalChangesTouchOnlyAffectedMaps) {
  Model m(config());
  m.rebuild(0);
  m.set_policy(policy(kWebPolicy), 0);
  for (auto [n, g] : std::vector<std::pair<std::string, std::string>>{
           {"web1", "web"}, {"web2", "web"}, {"db1", "db"}, {"x1", "x"}, {"x2", "x"}})
    m.add_peer(make_peer(m, n, {g}), 1);
  uint64_t x1 = m.by_name("x1")->serial, web2 = m.by_name("web2")->serial;
  uint64_t db1 = m.by_name("db1")->serial;

  // A new web server: db1 and itself change; web2 and x1 do not.
  Changes ch = m.add_peer(make_peer(m, "web3", {"web"}), 2);
  EXPECT_EQ(ch.changed.size(), 2u);
  EXPECT_GT(m.by_name("db1")->serial, db1);
  EXPECT_EQ(m.by_name("web2")->serial, web2);
  EXPECT_EQ(m.by_name("x1")->serial, x1);

  // Announcing endpoints changes the maps of those who see the peer.
  uint32_t web3 = m.by_name("web3")->id;
  ch = m.update_peer(web3, false, 3, [](Peer& p) {
    p.endpoints = {Candidate{*SockAddr::parse("192.0.2.7:51820"), "srflx"}};
  });
  EXPECT_NE(std::find(ch.changed.begin(), ch.changed.end(), m.by_name("db1")->id), ch.changed.end());
  NetMap db = m.build_map(*m.by_name("db1"));
  ASSERT_EQ(db.peers.back().name, "web3");
  EXPECT_EQ(db.peers.back().endpoints.at(0).endpoint.to_string(), "192.0.2.7:51820");

  // Disabling removes it from every map; deleting likewise.
  m.update_peer(web3, true, 4, [](Peer& p) { p.disabled = true; });
  EXPECT_EQ(names(m.build_map(*m.by_name("db1"))), (std::vector<std::string>{"web1", "web2"}));
  m.update_peer(web3, true, 5, [](Peer& p) { p.disabled = false; });
  EXPECT_EQ(m.build_map(*m.by_name("db1")).peers.size(), 3u);
  uint64_t before = m.by_name("db1")->serial;
  m.remove_peer(m.by_name("web1")->id, 6);
  EXPECT_GT(m.by_name("db1")->serial, before);
  EXPECT_EQ(names(m.build_map(*m.by_name("db1"))), (std::vector<std::string>{"web2", "web3"}));

  // Group change moves a peer between rules.
  m.update_peer(m.by_name("x1")->id, true, 7, [](Peer& p) { p.groups = {"web"}; });
  EXPECT_EQ(names(m.build_map(*m.by_name("x1"))), (std::vector<std::string>{"db1"}));

  // A policy change that changes nothing for a peer keeps its serial.
  uint64_t x2 = m.by_name("x2")->serial;
  m.set_policy(policy(kWebPolicy), 8);
  EXPECT_EQ(m.by_name("x2")->serial, x2);
}

TEST(CoordModel, IncrementalEqualsFullRebuild) {
  // Random operations applied incrementally must leave every map equal to a
  // model rebuilt from scratch from the same peers and policy.
  Model m(config());
  m.rebuild(0);
  m.set_policy(policy(R"({
    "groups": {"g0": {}, "g1": {}, "g2": {"members": ["p3"]}, "g3": {"tags": ["t"]}},
    "rules": [
      {"src": ["g0"], "dst": ["g1"], "proto": "tcp", "ports": [22]},
      {"src": ["g1", "g2"], "dst": ["g3"], "proto": "udp"},
      {"src": ["g3"], "dst": ["g0", "peer:p5"]},
      {"src": ["100.64.0.0/28"], "dst": ["g2"], "proto": "icmp"}
    ]})"), 0);
  uint32_t seed = 7;
  auto rnd = [&](uint32_t n) {
    seed = seed * 1103515245 + 12345;
    return (seed >> 16) % n;
  };
  int t = 1;
  for (int i = 0; i < 300; ++i, ++t) {
    auto ps = m.peers();
    uint32_t op = ps.empty() ? 0 : rnd(5);
    if (op == 0 || ps.size() < 4) {
      auto p = make_peer(m, "p" + std::to_string(m.new_peer_id()), {"g" + std::to_string(rnd(4))});
      if (rnd(3) == 0) p->tags = {"t"};
      m.add_peer(std::move(p), t);
    } else {
      const Peer* p = ps[rnd(static_cast<uint32_t>(ps.size()))];
      if (op == 1) m.remove_peer(p->id, t);
      else if (op == 2) m.update_peer(p->id, true, t, [&](Peer& q) { q.groups = {"g" + std::to_string(rnd(4))}; });
      else if (op == 3) m.update_peer(p->id, true, t, [&](Peer& q) { q.disabled = !q.disabled; });
      else m.update_peer(p->id, false, t, [&](Peer& q) {
        q.endpoints = {Candidate{*SockAddr::parse("198.51.100." + std::to_string(rnd(200) + 1) + ":4000"), "host"}};
      });
    }
  }
  Model fresh(config());
  for (const Peer* p : m.peers()) {
    auto copy = Peer::from_record(p->to_record());
    ASSERT_TRUE(copy);
    fresh.load_peer(std::move(*copy));
  }
  fresh.load_policy(m.policy());
  fresh.rebuild(0);
  for (const Peer* p : m.peers()) {
    EXPECT_EQ(m.map_json(*p), netmap_json_text(m.build_map(*p))) << p->name;
    NetMap a = m.build_map(*p), b = fresh.build_map(*fresh.by_id(p->id));
    a.serial = b.serial = 0;
    a.generated_at = b.generated_at = 0;
    EXPECT_EQ(netmap_to_json(a), netmap_to_json(b)) << p->name;
  }
}

TEST(CoordModel, MapsCarryTheDnsDomainAndReissueGivesNewSerials) {
  ModelConfig c = config();
  c.dns_domain = "corp.example";
  Model m(c);
  m.rebuild(0);
  m.add_peer(make_peer(m, "web1", {"web"}), 1);
  m.add_peer(make_peer(m, "db1", {"db"}), 1);
  m.set_policy(policy(kWebPolicy), 2);
  for (const Peer* p : m.peers()) {
    EXPECT_EQ(m.build_map(*p).dns_domain, "corp.example");
    EXPECT_NE(m.map_json(*p).find("\"dns\":{\"domain\":\"corp.example\"}"), std::string::npos);
  }
  uint64_t before = m.serial_counter();
  Changes ch = m.reissue_all(9);
  EXPECT_EQ(ch.serial, before + 1);
  EXPECT_EQ(ch.changed.size(), 2u);
  for (const Peer* p : m.peers()) {
    EXPECT_EQ(p->serial, ch.serial);
    EXPECT_EQ(p->generated_at, 9);
  }
  Model none(config());
  EXPECT_EQ(none.reissue_all(1).serial, 0u);  // no peers, no serial spent
  EXPECT_EQ(none.serial_counter(), 0u);
}

TEST(CoordModel, PlanListsGainedAndLostAccess) {
  Model m(config());
  m.rebuild(0);
  m.add_peer(make_peer(m, "a", {"web"}), 1);
  m.add_peer(make_peer(m, "b", {"db"}), 1);
  m.set_policy(policy(R"({"groups":{"web":{},"db":{}},"rules":[
    {"src":["web"],"dst":["db"],"proto":"tcp","ports":[22, 5432]}]})"), 2);
  auto plan = m.plan(policy(R"({"groups":{"web":{},"db":{}},"rules":[
    {"src":["web"],"dst":["db"],"proto":"tcp","ports":["20-30"]},
    {"src":["db"],"dst":["web"],"proto":"icmp"}]})"));
  std::vector<AccessEntry> gained{{"a", "b", "tcp/20-21"}, {"a", "b", "tcp/23-30"}, {"b", "a", "icmp"}};
  std::vector<AccessEntry> lost{{"a", "b", "tcp/5432"}};
  EXPECT_EQ(plan.gained, gained);
  EXPECT_EQ(plan.lost, lost);
}

TEST(CoordModel, PolicyTestsRunAgainstPeersAndGroups) {
  Model m(config());
  m.rebuild(0);
  m.add_peer(make_peer(m, "alice", {"ops"}), 1);
  auto ok = policy(R"({"groups":{"ops":{}},"rules":[{"src":["ops"],"dst":["all"],"proto":"tcp","ports":[22]}],
    "tests":[{"from":"alice","to":"group:ops","port":"22/tcp","expect":"allow"},
             {"from":"group:ops","to":"alice","port":"23/tcp","expect":"deny"}]})");
  EXPECT_TRUE(m.run_tests(ok));
  auto bad = policy(R"({"groups":{"ops":{}},"rules":[],
    "tests":[{"from":"alice","to":"group:ops","port":"22/tcp","expect":"allow"}]})");
  Status s = m.run_tests(bad);
  EXPECT_EQ(s.code(), Exit::DataErr);
  EXPECT_NE(s.message().find("tests[0]: alice -> group:ops 22/tcp: expected allow"), std::string::npos) << s.message();
  auto unknown = policy(R"({"tests":[{"from":"zed","to":"alice","expect":"deny"}]})");
  EXPECT_NE(m.run_tests(unknown).message().find("tests[0].from: unknown peer 'zed'"), std::string::npos);
}

TEST(CoordModel, TurnCredentialsRefreshAtHalfLife) {
  ModelConfig c = config();
  c.relay_secret = "s3cret";
  c.turn = {TurnConfig{"192.0.2.1:3478", "udp"}};
  c.credential_lifetime = 86400;
  Model m(c);
  m.set_cred_window(m.credential_window(1000000));
  m.rebuild(0);
  m.add_peer(make_peer(m, "a", {}), 1000000);
  NetMap a = m.build_map(*m.by_name("a"));
  ASSERT_EQ(a.turn.size(), 1u);
  EXPECT_GE(a.turn[0].expires_at - 1000000, 43200);
  EXPECT_LE(a.turn[0].expires_at - 1000000, 86400);
  // One subject per enrolment: NAME@ID (coord/revoked.h).
  EXPECT_EQ(a.turn[0].username,
            std::to_string(a.turn[0].expires_at) + ":a@" + std::to_string(m.by_name("a")->id));
  EXPECT_EQ(a.turn[0].password, turn_password("s3cret", a.turn[0].username));
  uint64_t serial = a.serial;
  EXPECT_TRUE(m.tick_credentials(1000001).changed.empty());
  Changes ch = m.tick_credentials(a.turn[0].expires_at - 43200);
  EXPECT_EQ(ch.changed.size(), 1u);
  EXPECT_GT(m.by_name("a")->serial, serial);
  EXPECT_GT(m.build_map(*m.by_name("a")).turn[0].expires_at, a.turn[0].expires_at);
}

TEST(CoordMapJson, FastWriterMatchesNetmapToJsonByteForByte) {
  ModelConfig c = config();
  c.stun = {"192.0.2.1:3478", "stun.example.org:3478"};
  c.turn = {TurnConfig{"192.0.2.1:3478", "udp"}, TurnConfig{"[2001:db8::1]:5349", "tls"}};
  c.relay_secret = "x";
  Model m(c);
  m.rebuild(0);
  m.add_peer(make_peer(m, "web1", {"web"}), 1);
  m.add_peer(make_peer(m, "db1", {"db", "extra"}), 1);
  m.add_peer(make_peer(m, "ops1", {"ops"}), 1);
  m.update_peer(1, false, 2, [](Peer& p) {
    p.endpoints = {Candidate{*SockAddr::parse("192.0.2.9:1"), "host"},
                   Candidate{*SockAddr::parse("[2001:db8::9]:65535"), "relay"}};
  });
  m.set_policy(policy(kWebPolicy), 3);
  for (const Peer* p : m.peers()) {
    NetMap nm = m.build_map(*p);
    EXPECT_EQ(netmap_json_text(nm), dump_json(netmap_to_json(nm))) << p->name;
    EXPECT_EQ(m.map_json(*p), dump_json(netmap_to_json(nm))) << p->name;
    nm.peers.at(0).preshared_key = SecretKey::generate_preshared();
    nm.inbound.push_back(FirewallRule{{*Prefix::parse("100.64.0.1/32")}, "any", {}, ""});
    EXPECT_EQ(netmap_json_text(nm), dump_json(netmap_to_json(nm))) << p->name;
    nm.self.name = "needs \"escaping\"\n\xc3\xa9";
    EXPECT_EQ(netmap_json_text(nm), dump_json(netmap_to_json(nm))) << p->name;
    nm.dns_domain.clear();  // a map without a dns object
    EXPECT_EQ(netmap_json_text(nm), dump_json(netmap_to_json(nm))) << p->name;
  }
  NetMap empty;
  EXPECT_EQ(netmap_json_text(empty), dump_json(netmap_to_json(empty)));
}

// ---- call-me-maybe: the punch queue, its rate limit, and watch --events

namespace {
PublicKey test_key() { return SecretKey::generate_private().public_key(); }
}  // namespace

TEST(CoordPunch, NewerRequestFromTheSameRequesterReplacesTheOlder) {
  PunchQueue q;
  PublicKey b = test_key(), a = test_key(), c = test_key();
  q.push(b, a, "a", 1000);
  q.push(b, c, "c", 1100);
  q.push(b, a, "a-renamed", 1200);
  EXPECT_EQ(q.size(), 2u);
  auto got = q.drain(b, 1300);
  ASSERT_EQ(got.size(), 2u);
  // Oldest first; a's request moved behind c's with its new time and name.
  EXPECT_EQ(got[0].from, c);
  EXPECT_EQ(got[1].from, a);
  EXPECT_EQ(got[1].name, "a-renamed");
  EXPECT_EQ(got[1].at_ms, 1200);
  // Delivered once.
  EXPECT_TRUE(q.drain(b, 1300).empty());
  EXPECT_FALSE(q.pending(b, 1300));
  EXPECT_EQ(q.size(), 0u);
}

TEST(CoordPunch, QueuesAreBoundedPerTargetDroppingTheOldest) {
  PunchQueue q(PunchQueue::Limits{3, 10000});
  PublicKey b = test_key(), other = test_key();
  std::vector<PublicKey> from;
  for (int i = 0; i < 5; ++i) {
    from.push_back(test_key());
    q.push(b, from.back(), "p" + std::to_string(i), 1000 + i);
  }
  q.push(other, from[0], "p0", 1000);
  auto got = q.drain(b, 1010);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].from, from[2]);
  EXPECT_EQ(got[1].from, from[3]);
  EXPECT_EQ(got[2].from, from[4]);
  // Another target's queue is its own.
  ASSERT_EQ(q.drain(other, 1010).size(), 1u);
}

TEST(CoordPunch, RequestsExpireAfterTheirLifetime) {
  PunchQueue q(PunchQueue::Limits{64, 10000});
  PublicKey b = test_key(), a = test_key(), c = test_key();
  q.push(b, a, "a", 1000);
  q.push(b, c, "c", 5000);
  EXPECT_TRUE(q.pending(b, 10999));
  auto got = q.drain(b, 11000);  // a's is 10 s old: gone; c's is live
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].from, c);
  q.push(b, a, "a", 20000);
  EXPECT_FALSE(q.pending(b, 30000));
  EXPECT_TRUE(q.drain(b, 30000).empty());
  // prune() forgets expired requests of targets that never collect them.
  q.push(b, a, "a", 40000);
  q.push(c, a, "a", 45000);
  EXPECT_EQ(q.prune(50000), 1u);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.prune(56000), 0u);
}

TEST(CoordPunch, WindowLimiterAllowsMaxPerSlidingWindow) {
  WindowLimiter l(3, 10000);
  PublicKey a = test_key(), b = test_key();
  EXPECT_TRUE(l.allow(a, 0));
  EXPECT_TRUE(l.allow(a, 4000));
  EXPECT_TRUE(l.allow(a, 9000));
  EXPECT_FALSE(l.allow(a, 9999));  // refused requests are not recorded...
  EXPECT_TRUE(l.allow(b, 9999));   // ...and other keys are not affected
  EXPECT_TRUE(l.allow(a, 10000));  // the one at 0 left the window
  EXPECT_FALSE(l.allow(a, 13999));
  EXPECT_TRUE(l.allow(a, 14000));
  l.prune(30000);
  EXPECT_EQ(l.keys(), 0u);
}

TEST(CoordWatch, BackoffDoublesToTheCapWithJitterBelowTheStep) {
  Backoff b(0.1, 1.5);
  // u = 1: the full step; the steps are 0.1, 0.2, 0.4, 0.8, then the cap.
  for (double want : {0.1, 0.2, 0.4, 0.8, 1.5, 1.5}) EXPECT_DOUBLE_EQ(b.next(1.0), want);
  // u = 0: half the step, never less.
  EXPECT_DOUBLE_EQ(b.next(0.0), 0.75);
  b.reset();
  EXPECT_DOUBLE_EQ(b.next(0.5), 0.075);
  // Whatever the random draw, no delay exceeds the cap.
  Backoff c(0.1, 1.5);
  for (int i = 0; i < 100; ++i) {
    double d = c.next((i % 11) / 10.0);
    EXPECT_LE(d, 1.5);
    EXPECT_GE(d, 0.05);
  }
  // A cap below the start: the start is the cap.
  Backoff tiny(0.1, 0.02);
  EXPECT_DOUBLE_EQ(tiny.next(1.0), 0.02);
}

TEST(CoordWatch, EventLinesAreOneShortJsonLine) {
  EXPECT_EQ(map_event_line(42), "{\"event\":\"map\",\"serial\":42}\n");
  EXPECT_EQ(coordinator_event_line(true), "{\"event\":\"coordinator\",\"state\":\"up\"}\n");
  PublicKey k = test_key();
  std::string p = punch_event_line(k, "web-1");
  EXPECT_EQ(p, "{\"event\":\"punch\",\"from\":\"" + k.to_base64() + "\",\"name\":\"web-1\"}\n");
  // A long error is cut to 200 bytes, never inside a UTF-8 character, and
  // the line stays far below PIPE_BUF even when every byte is escaped.
  std::string err = std::string(199, 'x') + "\xc3\xa9" + std::string(500, 'y');
  auto j = nlohmann::json::parse(coordinator_event_line(false, err));
  EXPECT_EQ(j["state"], "down");
  EXPECT_EQ(j["error"].get<std::string>(), std::string(199, 'x'));
  std::string ctl(5000, '\x01');
  std::string line = coordinator_event_line(false, ctl);
  EXPECT_LT(line.size(), kMaxEventLine);
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  EXPECT_EQ(nlohmann::json::parse(line)["error"].get<std::string>().size(), kMaxEventError);
}

TEST(CoordWatch, EnvelopeCarriesAnOptionalMapAndPunchEvents) {
  PublicKey k = test_key();
  auto j = nlohmann::json::parse(R"({"map":{"serial":7},"events":[{"type":"punch","from":")" +
                                 k.to_base64() + R"(","name":"a"},{"type":"future","x":1}]})");
  auto b = parse_watch_envelope(j, "t");
  ASSERT_TRUE(b) << b.status().message();
  ASSERT_TRUE(b->map);
  EXPECT_EQ((*b->map)["serial"], 7);
  ASSERT_EQ(b->punches.size(), 1u);  // the unknown type is skipped
  EXPECT_EQ(b->punches[0].from, k);
  EXPECT_EQ(b->punches[0].name, "a");
  auto only = parse_watch_envelope(nlohmann::json::parse(R"({"events":[]})"), "t");
  ASSERT_TRUE(only);
  EXPECT_FALSE(only->map);
  EXPECT_EQ(parse_watch_envelope(nlohmann::json::parse(R"({"map":{}})"), "t").status().code(),
            Exit::DataErr);
  auto bad = parse_watch_envelope(
      nlohmann::json::parse(R"({"events":[{"type":"punch","from":"nope","name":"a"}]})"), "t");
  EXPECT_EQ(bad.status().code(), Exit::DataErr);
  auto badname = parse_watch_envelope(
      nlohmann::json::parse(R"({"events":[{"type":"punch","from":")" + k.to_base64() +
                            R"(","name":"A B\n"}]})"),
      "t");
  EXPECT_EQ(badname.status().code(), Exit::DataErr);
}

TEST(CoordLimits, SourceKeyIsTheIpv4AddressOrTheIpv6Slash64) {
  EXPECT_EQ(source_key("192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(source_key("::ffff:192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(source_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  EXPECT_EQ(source_key("2001:db8:1:2:bbbb::9"), source_key("2001:db8:1:2:aaaa::1"));
  EXPECT_NE(source_key("2001:db8:1:3::1"), source_key("2001:db8:1:2::1"));
}

TEST(CoordLimits, AFullLimiterTableKeepsItsBlockedSources) {
  FailureLimiter l(2, 10);
  l.failed("guesser", 1000);
  l.failed("guesser", 1000);
  ASSERT_TRUE(l.blocked("guesser", 1000));
  // A flood of new sources, each failing once, overflows the table many
  // times: the blocked source stays blocked until its failures age out.
  for (int i = 0; i < 100; ++i) l.failed("flood-" + std::to_string(i), 1001);
  EXPECT_LE(l.size(), 10u);
  EXPECT_TRUE(l.blocked("guesser", 1010));
  EXPECT_FALSE(l.blocked("guesser", 1061));
}

TEST(CoordLimits, ATableOfBlockedSourcesBlocksNewcomersTogether) {
  FailureLimiter l(2, 3);
  for (std::string s : {"a", "b", "c"}) {
    l.failed(s, 1000);
    l.failed(s, 1000);
  }
  EXPECT_FALSE(l.blocked("d", 1000));
  l.failed("d", 1000);
  l.failed("e", 1000);
  EXPECT_TRUE(l.blocked("d", 1000));
  EXPECT_TRUE(l.blocked("f", 1000));
  EXPECT_TRUE(l.blocked("a", 1000));
  EXPECT_FALSE(l.blocked("f", 1061));
}

TEST(CoordLimits, JoinNoncesAreBoundedPerSourceAndInTotal) {
  JoinNonces jn(2, 3);
  EXPECT_TRUE(jn.check_and_insert("s1", "aaaaaaaaaaaaaaaaaaaaaa", 1000));
  EXPECT_EQ(jn.check_and_insert("s2", "aaaaaaaaaaaaaaaaaaaaaa", 1000).code(), Exit::NoPerm);
  EXPECT_TRUE(jn.check_and_insert("s1", "bbbbbbbbbbbbbbbbbbbbbb", 1000));
  // The source is full; another source is not.
  EXPECT_EQ(jn.check_and_insert("s1", "cccccccccccccccccccccc", 1000).code(), Exit::TempFail);
  EXPECT_TRUE(jn.check_and_insert("s2", "cccccccccccccccccccccc", 1000));
  // The store is full.
  EXPECT_EQ(jn.check_and_insert("s3", "dddddddddddddddddddddd", 1000).code(), Exit::TempFail);
  EXPECT_EQ(jn.size(), 3u);
  // Once their requests cannot be fresh, the nonces go and the room returns.
  EXPECT_TRUE(jn.check_and_insert("s1", "dddddddddddddddddddddd", 1000 + 2 * kMaxSkewSeconds + 2));
  EXPECT_EQ(jn.size(), 1u);
}

TEST(CoordLimits, ConnectionsAndWatchesAreCountedAndReleased) {
  ConnectionLimits c(3, 2);
  EXPECT_EQ(c.try_open("a"), ConnectionLimits::Verdict::Ok);
  EXPECT_EQ(c.try_open("a"), ConnectionLimits::Verdict::Ok);
  EXPECT_EQ(c.try_open("a"), ConnectionLimits::Verdict::SourceFull);
  EXPECT_EQ(c.try_open("b"), ConnectionLimits::Verdict::Ok);
  EXPECT_EQ(c.try_open("c"), ConnectionLimits::Verdict::ServerFull);
  c.close("a");
  EXPECT_EQ(c.open(), 2u);
  EXPECT_EQ(c.try_open("c"), ConnectionLimits::Verdict::Ok);
  WatchCounter w(1);
  EXPECT_TRUE(w.acquire("k"));
  EXPECT_FALSE(w.acquire("k"));
  EXPECT_TRUE(w.acquire("j"));
  w.release("k");
  EXPECT_TRUE(w.acquire("k"));
  auto held = w.holders();
  std::sort(held.begin(), held.end());
  EXPECT_EQ(held, (std::vector<std::string>{"j", "k"}));
  w.release("j");
  EXPECT_EQ(w.holders(), std::vector<std::string>{"k"});
}

TEST(CoordAuth, SessionKeyCacheEvictsTheLeastRecentlyUsedKeyOnly) {
  SecretKey coord = SecretKey::generate_private();
  PublicKey cp = coord.public_key();
  auto keys_of = [&](const PublicKey& p) { return *derive_session_keys(coord, p, p, cp); };
  PublicKey a = SecretKey::generate_private().public_key();
  PublicKey b = SecretKey::generate_private().public_key();
  SessionKeyCache c(2);
  c.put(a, keys_of(a));
  c.put(b, keys_of(b));
  ASSERT_TRUE(c.get(a));  // a is now the most recently used
  for (int i = 0; i < 10; ++i) {
    PublicKey x = SecretKey::generate_private().public_key();
    c.put(x, keys_of(x));
    ASSERT_TRUE(c.get(a)) << "an active peer's keys were evicted by a flood";
  }
  EXPECT_FALSE(c.get(b));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.get(a)->request.bytes(), keys_of(a).request.bytes());
}

TEST(CoordCandidates, OnlyAddressesOtherPeersCanReachAreAccepted) {
  std::vector<Prefix> overlay{*Prefix::parse("100.64.0.0/10"), *Prefix::parse("fd00:1:2::/48")};
  auto check = [&](const char* ep) {
    return check_candidate(Candidate{*SockAddr::parse(ep), "host"}, overlay);
  };
  // Public, documentation and private LAN addresses: a LAN is how two peers
  // behind one router find each other.
  for (const char* ok : {"192.0.2.1:51820", "198.18.0.5:1", "10.1.2.3:51820", "100.63.255.255:9",
                         "100.128.0.1:9", "[2001:db8::1]:51820", "[fd00:1:3::1]:9"})
    EXPECT_TRUE(check(ok)) << ok;
  for (const char* bad : {"127.0.0.1:51820", "0.0.0.0:1", "169.254.169.254:80", "224.0.0.251:5353",
                          "239.1.1.1:9", "255.255.255.255:9", "240.0.0.1:9", "100.64.0.1:51820",
                          "100.127.255.254:9", "[::1]:9", "[::]:9", "[fe80::1]:9", "[ff02::1]:9",
                          "[::ffff:192.0.2.1]:9", "[fd00:1:2::5]:9", "192.0.2.1:0"}) {
    Status s = check(bad);
    EXPECT_EQ(s.code(), Exit::DataErr) << bad;
    EXPECT_NE(s.message().find(bad), std::string::npos) << s.message();
  }
}

TEST(CoordPunch, WindowLimiterTellsHowLongUntilTheNextEvent) {
  WindowLimiter l(2, 60000);
  PublicKey a = SecretKey::generate_private().public_key();
  EXPECT_EQ(l.allow_or_wait(a, 1000), 0);
  EXPECT_EQ(l.allow_or_wait(a, 5000), 0);
  EXPECT_EQ(l.allow_or_wait(a, 6000), 55000);  // the event at 1000 leaves at 61000
  EXPECT_EQ(l.allow_or_wait(a, 61000), 0);
}

TEST(CoordPunch, SignalsRoundTripWithA64BitOriginAndEveryTarget) {
  PunchSignal s{0xfedcba9876543210ull, test_key(), "laptop-1", {}};
  for (int i = 0; i < 64; ++i) s.targets.push_back(test_key());
  std::string text = encode_punch_signal(s);
  EXPECT_LE(text.size(), kMaxBroadcast);  // fits one PostgreSQL NOTIFY
  auto got = parse_punch_signal(text, 64);
  ASSERT_TRUE(got) << got.status().message();
  EXPECT_EQ(got->origin, 0xfedcba9876543210ull);
  EXPECT_EQ(got->from, s.from);
  EXPECT_EQ(got->name, "laptop-1");
  EXPECT_EQ(got->targets, s.targets);
  // One target fewer allowed: refused, not truncated.
  auto over = parse_punch_signal(text, 63);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.status().code(), Exit::DataErr);
}

TEST(CoordPunch, MalformedSignalsAreDataErrorsAndOtherTypesAreSkipped) {
  std::string k = test_key().to_base64();
  auto sig = [&](const std::string& origin, const std::string& from, const std::string& peers) {
    return "{\"type\":\"punch\",\"origin\":" + origin + ",\"from\":\"" + from +
           "\",\"name\":\"a\",\"peers\":" + peers + "}";
  };
  ASSERT_TRUE(parse_punch_signal(sig("\"7\"", k, "[\"" + k + "\"]"), 64));
  for (const std::string& bad :
       {sig("7", k, "[\"" + k + "\"]"),                      // origin not a string
        sig("\"-7\"", k, "[\"" + k + "\"]"),                 // not decimal digits
        sig("\"99999999999999999999\"", k, "[\"" + k + "\"]"),  // beyond 64 bits
        sig("\"7\"", "not-a-key", "[\"" + k + "\"]"),
        sig("\"7\"", k, "[]"),                               // no target
        sig("\"7\"", k, "[\"short\"]"),
        std::string("{\"type\":\"punch\"}"),                      // members missing
        std::string("not json")}) {
    auto r = parse_punch_signal(bad, 64);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.status().code(), Exit::DataErr) << bad;
  }
  auto extra = parse_punch_signal(
      "{\"type\":\"punch\",\"origin\":\"1\",\"from\":\"" + k +
          "\",\"name\":\"a\",\"peers\":[\"" + k + "\"],\"x\":1}",
      64);
  EXPECT_FALSE(extra);
  // A newer replica's broadcast of another kind: NoInput, which receivers skip.
  auto other = parse_punch_signal("{\"type\":\"hello\",\"more\":1}", 64);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.status().code(), Exit::NoInput);
}

TEST(CoordWatch, OnlyPermanentRefusalsEndAWatch) {
  EXPECT_EQ(classify_watch_failure(0, Exit::Unavailable), WatchFailure::Reconnect);
  EXPECT_EQ(classify_watch_failure(0, Exit::Usage), WatchFailure::Exit);
  for (int http : {408, 429, 500, 502, 503})
    EXPECT_EQ(classify_watch_failure(http, Exit::TempFail), WatchFailure::Backoff) << http;
  for (int http : {400, 401, 403, 404, 409})
    EXPECT_EQ(classify_watch_failure(http, Exit::DataErr), WatchFailure::Exit) << http;
  // A 200 the coordinator key does not authenticate.
  EXPECT_EQ(classify_watch_failure(200, Exit::NoPerm), WatchFailure::Exit);
}

TEST(CoordLimits, APoolWithEveryThreadBusyQueuesThenShedsOnTheCallersThread) {
  ElasticPool pool(1, 1);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, started = false;
  std::atomic<int> ran{0};
  pool.enqueue([&] {
    std::unique_lock lk(mu);
    started = true;
    cv.notify_all();
    cv.wait(lk, [&] { return release; });
    ++ran;
  });
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return started; });
  }
  bool queued_shed = true, overflow_shed = false;
  std::thread::id overflow_thread;
  pool.enqueue([&] { queued_shed = pool.shedding(); ++ran; });  // waits in the queue
  pool.enqueue([&] {  // no room: runs now, here, marked as shed
    overflow_shed = pool.shedding();
    overflow_thread = std::this_thread::get_id();
    ++ran;
  });
  EXPECT_TRUE(overflow_shed);
  EXPECT_EQ(overflow_thread, std::this_thread::get_id());
  EXPECT_EQ(ran.load(), 1);
  EXPECT_FALSE(pool.shedding());
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  pool.shutdown();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_FALSE(queued_shed);
  EXPECT_EQ(pool.threads(), 0u);
}
