// TURN server state machine (lib/turn) driven with a fake Io and clock.
#include <gtest/gtest.h>

#include <map>

#include "stun/stun.h"
#include "turn/auth.h"
#include "turn/server.h"

namespace mesh::turn {
namespace {

TEST(TurnAuth, RestPasswordKnownValue) {
  // openssl dgst -sha1 -hmac north -binary <<< "1700000000:alice" (no newline) | base64
  EXPECT_EQ(rest_password("north", "1700000000:alice"), "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
  int64_t exp = 0;
  std::string_view name;
  ASSERT_TRUE(parse_rest_username("1700000000:alice", &exp, &name));
  EXPECT_EQ(exp, 1700000000);
  EXPECT_EQ(name, "alice");
  ASSERT_TRUE(parse_rest_username("1700000000", &exp, &name));
  EXPECT_EQ(name, "");
  EXPECT_FALSE(parse_rest_username("alice", &exp, &name));
  EXPECT_FALSE(parse_rest_username("-5:x", &exp, &name));
}

TEST(TurnAuth, UsersFile) {
  auto u = Credentials::parse_users("# c\nalice:pw\n\nbob:0x00112233445566778899aabbccddeeff\n", "mesh", "f");
  ASSERT_TRUE(u) << u.status().message();
  EXPECT_EQ(u->at("alice"), stun::long_term_key("alice", "mesh", "pw"));
  EXPECT_EQ(u->at("bob")[15], 0xff);
  auto bad = Credentials::parse_users("alice:pw\nnocolon\n", "mesh", "users");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().code(), Exit::DataErr);
  EXPECT_NE(bad.status().message().find("users:2:"), std::string::npos);
  EXPECT_FALSE(Credentials::parse_users("a:1\na:2\n", "mesh", "f"));
}

TEST(TurnAuth, RestLookupAndExpiry) {
  Credentials c;
  c.set_realm("mesh");
  c.add_secret("north");
  std::vector<LongTermKey> keys;
  std::string q;
  EXPECT_EQ(c.keys_for("1700000000:alice", 1600000000, &keys, &q), Credentials::Lookup::Ok);
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0], stun::long_term_key("1700000000:alice", "mesh", "Cd/49soE35ICqcJF/bCTn8Z4OyE="));
  EXPECT_EQ(q, "alice");
  EXPECT_EQ(c.keys_for("1700000000:alice", 1700000001, &keys, &q), Credentials::Lookup::Expired);
  EXPECT_EQ(c.keys_for("mallory", 0, &keys, &q), Credentials::Lookup::Unknown);
}

TEST(TurnAuth, Nonces) {
  NonceMint m;
  std::string n = m.make(1000, 600);
  EXPECT_EQ(m.check(n, 1000), NonceMint::Check::Valid);
  EXPECT_EQ(m.check(n, 1601), NonceMint::Check::Stale);
  std::string forged = n;
  forged[5] = forged[5] == '0' ? '1' : '0';
  EXPECT_EQ(m.check(forged, 1000), NonceMint::Check::Invalid);
  EXPECT_EQ(NonceMint().check(n, 1000), NonceMint::Check::Invalid);  // another key
}

TEST(TurnAuth, NonceIsBoundToTheClientAddress) {
  NonceMint m;
  ClientKey a{*SockAddr::parse("198.51.100.5:4000"), 0, kUdp};
  ClientKey other_port{*SockAddr::parse("198.51.100.5:4001"), 0, kUdp};
  ClientKey other_ip{*SockAddr::parse("198.51.100.6:4000"), 0, kUdp};
  ClientKey tcp{*SockAddr::parse("198.51.100.5:4000"), 0x10001, kTcp};
  std::string n = m.make(1000, 600, nonce_binding(a));
  EXPECT_EQ(n.size(), 24u);
  EXPECT_EQ(m.check(n, 1000, nonce_binding(a)), NonceMint::Check::Valid);
  EXPECT_NE(m.check(n, 1000, nonce_binding(other_port)), NonceMint::Check::Valid);
  EXPECT_NE(m.check(n, 1000, nonce_binding(other_ip)), NonceMint::Check::Valid);
  EXPECT_NE(m.check(n, 1000, nonce_binding(tcp)), NonceMint::Check::Valid);
}

// ---- Engine -------------------------------------------------------------------

struct FakeIo : Io {
  std::vector<std::vector<uint8_t>> replies;
  std::vector<std::pair<SockAddr, std::vector<uint8_t>>> sent;
  int next_port = 50000, open = 0;
  Result<RelaySocket> open_relay(int, bool, Allocation*) override {
    ++open;
    return RelaySocket{100 + open, SockAddr{*IpAddr::parse("203.0.113.1"), static_cast<uint16_t>(next_port++)}};
  }
  void close_relay(RelaySocket& s) override {
    --open;
    s.fd = -1;
  }
  void reply(const ClientKey&, stun::Bytes msg, uint32_t) override {
    replies.emplace_back(msg.begin(), msg.end());
  }
  void send_to_peer(const RelaySocket&, const SockAddr& p, stun::Bytes d) override {
    sent.emplace_back(p, std::vector<uint8_t>(d.begin(), d.end()));
  }
  struct Delivery {
    Allocation* to;
    SockAddr peer;
    int channel;
    std::vector<uint8_t> data;
  };
  std::vector<Delivery> delivered;
  void deliver(Allocation& to, const SockAddr& peer, int channel, stun::Bytes d) override {
    delivered.push_back({&to, peer, channel, std::vector<uint8_t>(d.begin(), d.end())});
  }
  bool origin(const ClientKey&, uint32_t change, Origin*) override { return change == 0; }
};

struct TurnEngineTest : ::testing::Test {
  Config cfg;
  std::unique_ptr<Shared> shared;
  FakeIo io;
  Stats stats;
  std::unique_ptr<Engine> eng;
  Now now{1000000, 1700000000};
  ClientKey client{*SockAddr::parse("198.51.100.5:4000"), 0, kUdp};
  std::string nonce;  // when set, sent instead of the sender's own nonce
  std::array<uint8_t, 1500> buf{};

  void SetUp() override { make(); }
  void make() {
    cfg.relay_ips = {*IpAddr::parse("203.0.113.1")};
    cfg.deny_peers = default_denied_peers();
    cfg.allow_peers = {*Prefix::parse("198.51.100.0/24")};
    auto c = std::make_unique<Credentials>();
    c->set_realm("mesh");
    c->add_user("alice", stun::long_term_key("alice", "mesh", "pw"));
    c->add_user("bob", stun::long_term_key("bob", "mesh", "pw"));
    shared = std::make_unique<Shared>(cfg, std::move(c));
    eng = std::make_unique<Engine>(*shared, io, stats);
  }
  std::string nonce_for(const ClientKey& k) const {
    return shared->nonces().make(now.unix_s, 600, nonce_binding(k));
  }

  // Sends a request; returns the parsed answer's bytes (kept in `last`).
  std::vector<uint8_t> last;
  stun::MessageView send(uint16_t method, std::function<void(stun::Builder&)> fill,
                         const char* user = "alice", bool auth = true, const ClientKey* from = nullptr,
                         stun::TxId tx = stun::random_txid()) {
    stun::Builder b(buf, method, stun::kRequest, tx);
    if (fill) fill(b);
    if (auth) {
      b.add_string(stun::kUsername, user).add_string(stun::kRealm, "mesh");
      b.add_string(stun::kNonce, nonce.empty() ? nonce_for(from ? *from : client) : nonce);
      b.add_integrity(stun::long_term_key(user, "mesh", "pw"));
    }
    b.add_fingerprint();
    io.replies.clear();
    eng->on_message(from ? *from : client, b.finish(), now);
    EXPECT_EQ(io.replies.size(), 1u);
    last = io.replies.empty() ? std::vector<uint8_t>{} : io.replies.back();
    auto m = stun::parse(last);
    EXPECT_TRUE(m);
    return m ? *m : stun::MessageView{};
  }
  static int code(const stun::MessageView& m) {
    if (m.cls != stun::kError) return 0;
    auto e = stun::decode_error_code(*m.find(stun::kErrorCode));
    return e ? e->code : -1;
  }
  static void udp(stun::Builder& b) {
    uint8_t rt[4] = {17, 0, 0, 0};
    b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
  }
  SockAddr allocate() {
    auto m = send(stun::kAllocate, udp);
    EXPECT_EQ(m.cls, stun::kSuccess);
    EXPECT_TRUE(stun::check_integrity(m, stun::long_term_key("alice", "mesh", "pw")));
    return *stun::decode_xor_address(*m.find(stun::kXorRelayedAddress), m.tx);
  }
};

TEST_F(TurnEngineTest, UnauthenticatedGets401WithRealmAndNonce) {
  auto m = send(stun::kAllocate, udp, "alice", false);
  EXPECT_EQ(code(m), 401);
  ASSERT_TRUE(m.find(stun::kRealm));
  EXPECT_EQ(stun::as_string(*m.find(stun::kRealm)), "mesh");
  ASSERT_TRUE(m.find(stun::kNonce));
  EXPECT_EQ(shared->nonces().check(stun::as_string(*m.find(stun::kNonce)), now.unix_s,
                                   nonce_binding(client)),
            NonceMint::Check::Valid);
  EXPECT_EQ(io.open, 0);
}

TEST_F(TurnEngineTest, WrongPasswordAndUnknownUserGet401) {
  stun::Builder b(buf, stun::kAllocate, stun::kRequest, stun::random_txid());
  udp(b);
  b.add_string(stun::kUsername, "alice").add_string(stun::kRealm, "mesh");
  b.add_string(stun::kNonce, nonce_for(client));
  b.add_integrity(stun::long_term_key("alice", "mesh", "wrong"));
  eng->on_message(client, b.finish(), now);
  EXPECT_EQ(code(*stun::parse(io.replies.back())), 401);
  EXPECT_EQ(code(send(stun::kAllocate, udp, "mallory")), 401);
  EXPECT_EQ(stats.auth_failures.load(), 2u);
}

TEST_F(TurnEngineTest, StaleNonceGets438) {
  nonce = nonce_for(client);
  now.unix_s += 601;
  auto m = send(stun::kAllocate, udp);
  EXPECT_EQ(code(m), 438);
  ASSERT_TRUE(m.find(stun::kNonce));
}

TEST_F(TurnEngineTest, NonceFromAnotherAddressGets438) {
  // A nonce the server gave 198.51.100.5:4000 is stale from another
  // address; the answer carries a nonce for the new address, which works.
  nonce = nonce_for(client);
  ClientKey moved{*SockAddr::parse("198.51.100.99:4000"), 0, kUdp};
  auto m = send(stun::kAllocate, udp, "alice", true, &moved);
  EXPECT_EQ(code(m), 438);
  ASSERT_TRUE(m.find(stun::kNonce));
  nonce = std::string(stun::as_string(*m.find(stun::kNonce)));
  EXPECT_EQ(send(stun::kAllocate, udp, "alice", true, &moved).cls, stun::kSuccess);
  // And that one is refused from the first address.
  EXPECT_EQ(code(send(stun::kAllocate, udp)), 438);
}

TEST_F(TurnEngineTest, UnauthenticatedAnswersAreSmall) {
  // The smallest requests an attacker can spoof get answers at most 3x
  // their size (2x for Binding): no SOFTWARE, FINGERPRINT only when asked.
  std::array<uint8_t, 64> req{};
  stun::Builder b(req, stun::kAllocate, stun::kRequest, stun::random_txid());
  udp(b);
  auto r = b.finish();
  io.replies.clear();
  eng->on_message(client, r, now);
  ASSERT_EQ(io.replies.size(), 1u);
  auto m = stun::parse(io.replies[0]);
  ASSERT_TRUE(m);
  EXPECT_EQ(code(*m), 401);
  EXPECT_FALSE(m->find(stun::kSoftware));
  EXPECT_EQ((*m).fingerprint_offset, 0);
  EXPECT_LE(io.replies[0].size(), 3 * r.size()) << r.size() << " -> " << io.replies[0].size();
  stun::Builder bb(req, stun::kBinding, stun::kRequest, stun::random_txid());
  r = bb.finish();
  io.replies.clear();
  eng->on_message(client, r, now);
  ASSERT_EQ(io.replies.size(), 1u);
  EXPECT_LE(io.replies[0].size(), 2 * r.size()) << r.size() << " -> " << io.replies[0].size();
  // A request with a FINGERPRINT gets one back.
  auto fp = send(stun::kBinding, nullptr, "", false);
  EXPECT_NE(fp.fingerprint_offset, 0);
  // Authenticated answers still carry SOFTWARE.
  auto a = send(stun::kAllocate, udp);
  ASSERT_EQ(a.cls, stun::kSuccess);
  EXPECT_TRUE(a.find(stun::kSoftware));
}

TEST_F(TurnEngineTest, AllocateRetransmitMismatchRefreshAndExpiry) {
  stun::TxId tx = stun::random_txid();
  auto m = send(stun::kAllocate, udp, "alice", true, nullptr, tx);
  ASSERT_EQ(m.cls, stun::kSuccess);
  auto relayed = *stun::decode_xor_address(*m.find(stun::kXorRelayedAddress), m.tx);
  EXPECT_EQ(relayed.to_string(), "203.0.113.1:50000");
  EXPECT_EQ(*stun::decode_u32(*m.find(stun::kLifetime)), 600u);
  EXPECT_EQ(stun::decode_xor_address(*m.find(stun::kXorMappedAddress), m.tx)->to_string(),
            "198.51.100.5:4000");
  // A retransmission gets the same answer, a new Allocate 437.
  m = send(stun::kAllocate, udp, "alice", true, nullptr, tx);
  EXPECT_EQ(m.cls, stun::kSuccess);
  EXPECT_EQ(code(send(stun::kAllocate, udp)), 437);
  EXPECT_EQ(io.open, 1);
  // Another user on the same 5-tuple: 441.
  EXPECT_EQ(code(send(stun::kRefresh, nullptr, "bob")), 441);
  // Refresh extends; expiry removes.
  now.mono_ms += 500 * 1000;
  m = send(stun::kRefresh, [](stun::Builder& b) { b.add_u32(stun::kLifetime, 700); });
  EXPECT_EQ(m.cls, stun::kSuccess);
  EXPECT_EQ(*stun::decode_u32(*m.find(stun::kLifetime)), 700u);
  eng->expire(now.mono_ms + 699 * 1000);
  EXPECT_EQ(eng->allocation_count(), 1u);
  eng->expire(now.mono_ms + 700 * 1000);
  EXPECT_EQ(eng->allocation_count(), 0u);
  EXPECT_EQ(io.open, 0);
  EXPECT_EQ(stats.allocations_expired.load(), 1u);
  EXPECT_EQ(code(send(stun::kRefresh, nullptr)), 437);
}

TEST_F(TurnEngineTest, RefreshZeroDeletes) {
  allocate();
  auto m = send(stun::kRefresh, [](stun::Builder& b) { b.add_u32(stun::kLifetime, 0); });
  EXPECT_EQ(m.cls, stun::kSuccess);
  EXPECT_EQ(eng->allocation_count(), 0u);
  eng->collect();
}

TEST_F(TurnEngineTest, RequestedTransportChecked) {
  EXPECT_EQ(code(send(stun::kAllocate, nullptr)), 400);
  EXPECT_EQ(code(send(stun::kAllocate, [](stun::Builder& b) {
              uint8_t rt[4] = {6, 0, 0, 0};
              b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
            })),
            442);
  EXPECT_EQ(code(send(stun::kAllocate, [](stun::Builder& b) {
              udp(b);
              uint8_t f[4] = {2, 0, 0, 0};
              b.add(stun::kRequestedAddressFamily, stun::Bytes(f, 4));
            })),
            440);
}

TEST_F(TurnEngineTest, PermissionsForbiddenPeersAndLifetimes) {
  allocate();
  auto perm = [&](const char* peer) {
    SockAddr p = *SockAddr::parse(peer);
    return send(stun::kCreatePermission, [p](stun::Builder& b) { b.add_xor_address(stun::kXorPeerAddress, p); });
  };
  EXPECT_EQ(code(perm("127.0.0.1:9")), 403);
  EXPECT_EQ(code(perm("10.1.2.3:9")), 403);
  EXPECT_EQ(code(perm("203.0.113.1:50000")), 0);  // a relayed address of ours (self relay)
  EXPECT_EQ(code(perm("203.0.113.1:0")), 0);      // port 0: the IP only (RFC 8656 9.1)
  EXPECT_EQ(code(perm("203.0.113.1:50123")), 403);  // a relay port no allocation holds
  EXPECT_EQ(perm("198.51.100.9:9").cls, stun::kSuccess);  // allowed range
  Allocation* a = eng->find(client);
  ASSERT_TRUE(a);
  SockAddr peer = *SockAddr::parse("198.51.100.9:7777");
  EXPECT_EQ(eng->on_peer_data(*a, peer, 100, now.mono_ms), 0);  // Data indication
  EXPECT_EQ(eng->on_peer_data(*a, *SockAddr::parse("198.51.100.10:1"), 100, now.mono_ms), -1);
  eng->expire(now.mono_ms + 300 * 1000);
  EXPECT_EQ(eng->on_peer_data(*a, peer, 100, now.mono_ms + 300 * 1000), -1);
}

TEST_F(TurnEngineTest, ChannelBindAndFastPath) {
  allocate();
  SockAddr peer = *SockAddr::parse("198.51.100.9:7777");
  auto bind = [&](uint16_t ch, SockAddr p) {
    return send(stun::kChannelBind, [&](stun::Builder& b) {
      b.add_u32(stun::kChannelNumber, uint32_t{ch} << 16);
      b.add_xor_address(stun::kXorPeerAddress, p);
    });
  };
  EXPECT_EQ(code(bind(0x3FFF, peer)), 400);
  EXPECT_EQ(bind(0x4001, peer).cls, stun::kSuccess);
  EXPECT_EQ(bind(0x4001, peer).cls, stun::kSuccess);  // refresh
  EXPECT_EQ(code(bind(0x4002, peer)), 400);           // peer bound to another channel
  EXPECT_EQ(code(bind(0x4001, *SockAddr::parse("198.51.100.9:1"))), 400);
  EXPECT_EQ(code(bind(0x4003, *SockAddr::parse("192.168.1.1:1"))), 403);
  auto r = eng->route_channel(client, 0x4001, 1200, now.mono_ms);
  ASSERT_TRUE(r.alloc);
  EXPECT_EQ(*r.peer, peer);
  EXPECT_FALSE(eng->route_channel(client, 0x4002, 1200, now.mono_ms).alloc);
  ClientKey other{*SockAddr::parse("198.51.100.6:4000"), 0, kUdp};
  EXPECT_FALSE(eng->route_channel(other, 0x4001, 1200, now.mono_ms).alloc);
  Allocation* a = eng->find(client);
  EXPECT_EQ(eng->on_peer_data(*a, peer, 1200, now.mono_ms), 0x4001);
  // Channels live 600 s; the permission they install 300 s.
  EXPECT_FALSE(eng->route_channel(client, 0x4001, 1, now.mono_ms + 600 * 1000).alloc);
}

TEST_F(TurnEngineTest, SendIndicationNeedsPermission) {
  allocate();
  SockAddr peer = *SockAddr::parse("198.51.100.9:7777");
  auto ind = [&] {
    stun::Builder b(buf, stun::kSend, stun::kIndication, stun::random_txid());
    uint8_t d[3] = {1, 2, 3};
    b.add_xor_address(stun::kXorPeerAddress, peer).add(stun::kData_, stun::Bytes(d, 3));
    eng->on_message(client, b.finish(), now);
  };
  ind();
  EXPECT_TRUE(io.sent.empty());
  send(stun::kCreatePermission, [&](stun::Builder& b) { b.add_xor_address(stun::kXorPeerAddress, peer); });
  ind();
  ASSERT_EQ(io.sent.size(), 1u);
  EXPECT_EQ(io.sent[0].first, peer);
  EXPECT_EQ(io.sent[0].second.size(), 3u);
}

TEST_F(TurnEngineTest, UserQuotaGets486) {
  cfg.user_quota = 1;
  make();
  allocate();
  ClientKey second{*SockAddr::parse("198.51.100.5:4001"), 0, kUdp};
  EXPECT_EQ(code(send(stun::kAllocate, udp, "alice", true, &second)), 486);
  EXPECT_EQ(send(stun::kAllocate, udp, "bob", true, &second).cls, stun::kSuccess);
  // Freed quota is reusable.
  send(stun::kRefresh, [](stun::Builder& b) { b.add_u32(stun::kLifetime, 0); });
  ClientKey third{*SockAddr::parse("198.51.100.5:4002"), 0, kUdp};
  EXPECT_EQ(send(stun::kAllocate, udp, "alice", true, &third).cls, stun::kSuccess);
}

TEST_F(TurnEngineTest, BandwidthQuotaDrops) {
  cfg.max_bps = 10000;
  make();
  allocate();
  SockAddr peer = *SockAddr::parse("198.51.100.9:7777");
  send(stun::kChannelBind, [&](stun::Builder& b) {
    b.add_u32(stun::kChannelNumber, 0x40000000u);
    b.add_xor_address(stun::kXorPeerAddress, peer);
  });
  int ok = 0;
  for (int i = 0; i < 20; ++i) ok += eng->route_channel(client, 0x4000, 1000, now.mono_ms).alloc != nullptr;
  EXPECT_EQ(ok, 10);
  EXPECT_TRUE(eng->route_channel(client, 0x4000, 1000, now.mono_ms + 200).alloc);
}

TEST_F(TurnEngineTest, BindingAndUnknownAttributes) {
  auto m = send(stun::kBinding, nullptr, "", false);
  EXPECT_EQ(m.cls, stun::kSuccess);
  EXPECT_EQ(stun::decode_xor_address(*m.find(stun::kXorMappedAddress), m.tx)->to_string(), "198.51.100.5:4000");
  m = send(stun::kBinding, [](stun::Builder& b) { b.add_u32(stun::kChangeRequest, stun::kChangeIp); }, "", false);
  EXPECT_EQ(code(m), 420);
  m = send(stun::kAllocate, [](stun::Builder& b) { b.add_u32(0x0042, 1); }, "", false);
  EXPECT_EQ(code(m), 420);
  ASSERT_TRUE(m.find(stun::kUnknownAttributes));
}

TEST_F(TurnEngineTest, ClassicRfc3489BindingGetsMappedAddress) {
  // The `stun` client's Binding request (captured): a 16-byte transaction
  // id where RFC 8489 has the magic cookie, and CHANGE-REQUEST 0.
  const uint8_t req[28] = {0x00, 0x01, 0x00, 0x08, 0x01, 0xa4, 0x6d, 0x22, 0xe4, 0xd7,
                           0x38, 0x58, 0x98, 0xd5, 0xfd, 0x23, 0xa6, 0xb1, 0xba, 0x4f,
                           0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00};
  io.replies.clear();
  eng->on_message(client, stun::Bytes(req, sizeof req), now);
  ASSERT_EQ(io.replies.size(), 1u);
  const auto& r = io.replies[0];
  ASSERT_EQ(r.size(), 32u);  // header + MAPPED-ADDRESS: no larger than 28 + 4
  EXPECT_EQ(r[0], 0x01);
  EXPECT_EQ(r[1], 0x01);
  EXPECT_TRUE(std::equal(req + 4, req + 20, r.begin() + 4));  // the same 16-byte id
  EXPECT_EQ(r[20], 0x00);
  EXPECT_EQ(r[21], 0x01);  // MAPPED-ADDRESS
  EXPECT_EQ(r[25], 0x01);  // IPv4
  EXPECT_EQ(r[26] << 8 | r[27], 4000);
  EXPECT_EQ(r[28], 198);
  EXPECT_EQ(r[31], 5);
  // A change this server cannot make (no alternate address): silence.
  uint8_t change[28];
  std::memcpy(change, req, sizeof req);
  change[27] = stun::kChangeIp;
  io.replies.clear();
  eng->on_message(client, stun::Bytes(change, sizeof change), now);
  EXPECT_TRUE(io.replies.empty());
  // Other cookie-less messages are not answered.
  uint8_t other[20] = {0x00, 0x03, 0x00, 0x00};
  eng->on_message(client, stun::Bytes(other, sizeof other), now);
  EXPECT_TRUE(io.replies.empty());
}

TEST_F(TurnEngineTest, DataIndicationBuilds) {
  uint8_t out[200];
  uint8_t d[5] = {9, 8, 7, 6, 5};
  auto msg = Engine::build_data_indication(out, *SockAddr::parse("198.51.100.9:7777"), stun::Bytes(d, 5));
  auto m = stun::parse(msg);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->method, stun::kData);
  EXPECT_EQ(m->cls, stun::kIndication);
  EXPECT_EQ(m->find(stun::kData_)->value.size(), 5u);
}

// ---- The internal hop: both peers relayed through this engine ----------------

struct TurnInternalHopTest : TurnEngineTest {
  ClientKey bob_key{*SockAddr::parse("198.51.100.7:5000"), 0, kUdp};
  SockAddr ra, rb;  // alice's and bob's relayed addresses
  Allocation* a = nullptr;
  Allocation* b = nullptr;
  void SetUp() override {
    make();
    ra = allocate();
    auto m = send(stun::kAllocate, udp, "bob", true, &bob_key);
    ASSERT_EQ(m.cls, stun::kSuccess);
    rb = *stun::decode_xor_address(*m.find(stun::kXorRelayedAddress), m.tx);
    a = eng->find(client);
    b = eng->find(bob_key);
    ASSERT_TRUE(a && b);
    ASSERT_EQ(eng->find_relayed(ra), a);
    ASSERT_EQ(eng->find_relayed(rb), b);
  }
  int bind(const ClientKey* who, const char* user, uint16_t ch, SockAddr peer) {
    return code(send(stun::kChannelBind, [&](stun::Builder& bb) {
      bb.add_u32(stun::kChannelNumber, uint32_t{ch} << 16);
      bb.add_xor_address(stun::kXorPeerAddress, peer);
    }, user, true, who));
  }
  int permit(const ClientKey* who, const char* user, SockAddr peer) {
    return code(send(stun::kCreatePermission,
                     [&](stun::Builder& bb) { bb.add_xor_address(stun::kXorPeerAddress, peer); },
                     user, true, who));
  }
};

TEST_F(TurnInternalHopTest, PermissionAtReceiverChannelOrDataIndicationAndCounters) {
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  // bob has no permission for alice's relayed address: dropped at bob, as
  // the kernel path drops it on bob's relay socket.
  auto r = eng->route_channel(client, 0x4001, 1000, now.mono_ms);
  ASSERT_EQ(r.alloc, a);
  EXPECT_EQ(*r.peer, rb);
  EXPECT_EQ(r.local, b);
  EXPECT_EQ(r.local_channel, -1);
  EXPECT_EQ(stats.dropped_no_permission.load(), 1u);
  EXPECT_EQ(b->packets_in, 0u);
  EXPECT_EQ(stats.internal_packets.load(), 0u);
  // A permission for another address does not help (checked by IP).
  ASSERT_EQ(permit(&bob_key, "bob", *SockAddr::parse("198.51.100.9:1")), 0);
  EXPECT_EQ(eng->route_channel(client, 0x4001, 1000, now.mono_ms).local_channel, -1);
  // Permission, no channel: a Data indication from alice's relayed address.
  ASSERT_EQ(permit(&bob_key, "bob", SockAddr{ra.ip, 0}), 0);
  r = eng->route_channel(client, 0x4001, 1000, now.mono_ms);
  EXPECT_EQ(r.local, b);
  EXPECT_EQ(r.local_channel, 0);
  // bob binds a channel to alice's relayed address: ChannelData on it.
  ASSERT_EQ(bind(&bob_key, "bob", 0x4007, ra), 0);
  r = eng->route_channel(client, 0x4001, 1000, now.mono_ms);
  EXPECT_EQ(r.local_channel, 0x4007);
  // And the other way round, bob -> alice: alice has a permission for rb's
  // IP (her channel installed it), no channel to ra: Data indication.
  r = eng->route_channel(bob_key, 0x4007, 500, now.mono_ms);
  EXPECT_EQ(r.alloc, b);
  EXPECT_EQ(r.local, a);
  EXPECT_EQ(r.local_channel, 0x4001);  // alice's channel 0x4001 is bound to rb
  EXPECT_EQ(a->packets_out, 4u);
  EXPECT_EQ(a->packets_in, 1u);
  EXPECT_EQ(b->packets_out, 1u);
  EXPECT_EQ(b->packets_in, 2u);
  EXPECT_EQ(b->bytes_in, 2000u);
  EXPECT_EQ(stats.internal_packets.load(), 3u);
  EXPECT_EQ(stats.internal_bytes.load(), 2500u);
  EXPECT_EQ(stats.dropped_no_permission.load(), 2u);
}

TEST_F(TurnInternalHopTest, PermissionExpiresAtReceiver) {
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  ASSERT_EQ(permit(&bob_key, "bob", ra), 0);
  EXPECT_EQ(eng->route_channel(client, 0x4001, 100, now.mono_ms).local_channel, 0);
  // Permissions live 300 s, alice's channel 600 s: after 300 s bob refuses.
  int64_t later = now.mono_ms + 300 * 1000;
  eng->expire(later);
  auto r = eng->route_channel(client, 0x4001, 100, later);
  EXPECT_EQ(r.local, b);
  EXPECT_EQ(r.local_channel, -1);
  // Refreshed at bob: delivered again.
  now.mono_ms = later;
  ASSERT_EQ(permit(&bob_key, "bob", ra), 0);
  EXPECT_EQ(eng->route_channel(client, 0x4001, 100, later).local_channel, 0);
}

TEST_F(TurnInternalHopTest, ReceiverBandwidthQuotaApplies) {
  cfg.max_bps = 10000;
  eng.reset();  // before make() replaces the Shared it releases quotas to
  SetUp();
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  ASSERT_EQ(permit(&bob_key, "bob", ra), 0);
  // bob's bucket is drained by traffic reaching him from elsewhere.
  ASSERT_EQ(permit(&bob_key, "bob", *SockAddr::parse("198.51.100.8:1")), 0);
  EXPECT_EQ(eng->on_peer_data(*b, *SockAddr::parse("198.51.100.8:1"), 10000, now.mono_ms), 0);
  auto r = eng->route_channel(client, 0x4001, 100, now.mono_ms);
  EXPECT_EQ(r.local, b);
  EXPECT_EQ(r.local_channel, -1);
  EXPECT_EQ(stats.dropped_rate.load(), 1u);
}

TEST_F(TurnInternalHopTest, SendIndicationDeliveredInternally) {
  auto ind = [&](SockAddr to) {
    stun::Builder bb(buf, stun::kSend, stun::kIndication, stun::random_txid());
    uint8_t d[3] = {1, 2, 3};
    bb.add_xor_address(stun::kXorPeerAddress, to).add(stun::kData_, stun::Bytes(d, 3));
    eng->on_message(client, bb.finish(), now);
  };
  ASSERT_EQ(permit(nullptr, "alice", rb), 0);
  ind(rb);  // no permission at bob
  EXPECT_TRUE(io.delivered.empty());
  EXPECT_TRUE(io.sent.empty());
  ASSERT_EQ(permit(&bob_key, "bob", ra), 0);
  ind(rb);
  ASSERT_EQ(io.delivered.size(), 1u);
  EXPECT_EQ(io.delivered[0].to, b);
  EXPECT_EQ(io.delivered[0].peer, ra);
  EXPECT_EQ(io.delivered[0].channel, 0);
  EXPECT_EQ(io.delivered[0].data, (std::vector<uint8_t>{1, 2, 3}));
  ASSERT_EQ(bind(&bob_key, "bob", 0x4100, ra), 0);
  ind(rb);
  ASSERT_EQ(io.delivered.size(), 2u);
  EXPECT_EQ(io.delivered[1].channel, 0x4100);
  EXPECT_TRUE(io.sent.empty());  // never through the kernel
  // A port of ours that no allocation holds is not a peer: nothing leaves.
  SockAddr none{rb.ip, static_cast<uint16_t>(rb.port + 100)};
  EXPECT_EQ(permit(nullptr, "alice", none), 403);
  ind(none);
  EXPECT_TRUE(io.sent.empty());
  EXPECT_EQ(stats.internal_packets.load(), 2u);
}

TEST_F(TurnInternalHopTest, DeletedReceiverFallsBackToKernelPath) {
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  ASSERT_EQ(permit(&bob_key, "bob", ra), 0);
  EXPECT_EQ(eng->route_channel(client, 0x4001, 100, now.mono_ms).local, b);
  send(stun::kRefresh, [](stun::Builder& bb) { bb.add_u32(stun::kLifetime, 0); }, "bob", true, &bob_key);
  EXPECT_EQ(eng->find_relayed(rb), nullptr);
  auto r = eng->route_channel(client, 0x4001, 100, now.mono_ms);
  EXPECT_EQ(r.alloc, a);
  EXPECT_EQ(r.local, nullptr);  // sent to the (closed) port by the kernel, as before
}

TEST_F(TurnInternalHopTest, ExpiredReceiverIsGone) {
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  ASSERT_EQ(permit(&bob_key, "bob", ra), 0);
  // alice refreshes, bob does not: after bob's 600 s lifetime only alice is left.
  now.mono_ms += 500 * 1000;
  send(stun::kRefresh, [](stun::Builder& bb) { bb.add_u32(stun::kLifetime, 600); });
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  eng->expire(now.mono_ms + 100 * 1000);
  EXPECT_EQ(eng->find(bob_key), nullptr);
  EXPECT_EQ(eng->find_relayed(rb), nullptr);
  EXPECT_EQ(eng->find_relayed(ra), a);
  auto r = eng->route_channel(client, 0x4001, 100, now.mono_ms + 100 * 1000);
  EXPECT_EQ(r.alloc, a);
  EXPECT_EQ(r.local, nullptr);
}

TEST_F(TurnInternalHopTest, OurOwnAddressesOnlyAsRelayedAddresses) {
  // The relay host's own services (the TURN port, DNS, NTP) are not peers,
  // even when --allow-peer covers the address; other allocations are.
  cfg.allow_peers.push_back(*Prefix::parse("127.0.0.0/8"));
  cfg.self_ips = {*IpAddr::parse("192.0.2.77")};
  eng.reset();
  SetUp();
  for (const char* p : {"203.0.113.1:3478", "203.0.113.1:53", "203.0.113.1:49151", "127.0.0.1:53",
                        "127.0.0.1:8080", "192.0.2.77:123", "0.0.0.0:22", "203.0.113.1:60000",
                        "127.0.0.1:50000"}) {
    SCOPED_TRACE(p);
    EXPECT_EQ(permit(nullptr, "alice", *SockAddr::parse(p)), 403);
    EXPECT_EQ(bind(nullptr, "alice", 0x4001, *SockAddr::parse(p)), 403);
  }
  EXPECT_EQ(bind(nullptr, "alice", 0x4001, SockAddr{rb.ip, 0}), 403);
  EXPECT_GE(stats.forbidden_peers.load(), 18u);
  // A permission for our address (any port: 0) does not let a Send
  // indication reach a port outside the relay range.
  ASSERT_EQ(permit(nullptr, "alice", SockAddr{rb.ip, 0}), 0);
  auto ind = [&](SockAddr to) {
    stun::Builder bb(buf, stun::kSend, stun::kIndication, stun::random_txid());
    uint8_t d[3] = {1, 2, 3};
    bb.add_xor_address(stun::kXorPeerAddress, to).add(stun::kData_, stun::Bytes(d, 3));
    eng->on_message(client, bb.finish(), now);
  };
  ind(*SockAddr::parse("203.0.113.1:3478"));
  ind(*SockAddr::parse("203.0.113.1:53"));
  EXPECT_TRUE(io.sent.empty());
  EXPECT_TRUE(io.delivered.empty());
  // Relaying between two allocations still works, both ways.
  ASSERT_EQ(bind(nullptr, "alice", 0x4001, rb), 0);
  ASSERT_EQ(bind(&bob_key, "bob", 0x4002, ra), 0);
  EXPECT_EQ(eng->route_channel(client, 0x4001, 100, now.mono_ms).local_channel, 0x4002);
  EXPECT_EQ(eng->route_channel(bob_key, 0x4002, 100, now.mono_ms).local_channel, 0x4001);
  // A relay port that no allocation holds (another program's, perhaps): no.
  EXPECT_EQ(bind(nullptr, "alice", 0x4003, SockAddr{rb.ip, static_cast<uint16_t>(rb.port + 1)}), 403);
  ind(SockAddr{rb.ip, static_cast<uint16_t>(rb.port + 1)});
  EXPECT_TRUE(io.sent.empty());
  // Once bob is gone, his relayed address is no peer either.
  send(stun::kRefresh, [](stun::Builder& bb) { bb.add_u32(stun::kLifetime, 0); }, "bob", true, &bob_key);
  EXPECT_EQ(bind(nullptr, "alice", 0x4004, rb), 403);
}

TEST(TurnPeers, DefaultDeniedRangesCoverTranslationAnd6to4) {
  auto denied = [](const char* ip) {
    IpAddr a = *IpAddr::parse(ip);
    for (const auto& p : default_denied_peers())
      if (p.contains(a)) return true;
    return false;
  };
  // NAT64 (64:ff9b::/96 embeds any IPv4 address, private ones included),
  // 6to4 (2002::/16 embeds one too) and the 6to4 relay anycast range.
  EXPECT_TRUE(denied("64:ff9b::a00:1"));
  EXPECT_TRUE(denied("64:ff9b::7f00:1"));
  EXPECT_TRUE(denied("2002:a00:1::1"));
  EXPECT_TRUE(denied("192.88.99.1"));
  EXPECT_FALSE(denied("8.8.8.8"));
  EXPECT_FALSE(denied("2001:4860::8888"));
}

TEST(TurnPeers, DefaultQuotasAreBounded) {
  Config c;
  EXPECT_GT(c.user_quota, 0u);
  EXPECT_GT(c.max_allocations, 0u);
  EXPECT_GT(c.max_bps, 0u);
}

TEST_F(TurnInternalHopTest, NoSelfRelayMeansNoPermissionToOurAddresses) {
  // With self relay off, our relayed addresses (documentation range here)
  // are denied peers: neither the kernel nor the internal path carries data.
  cfg.self_relay = false;
  eng.reset();
  SetUp();
  EXPECT_EQ(bind(nullptr, "alice", 0x4001, rb), 403);
  EXPECT_EQ(permit(nullptr, "alice", rb), 403);
  EXPECT_FALSE(eng->route_channel(client, 0x4001, 100, now.mono_ms).alloc);
}

}  // namespace
}  // namespace mesh::turn
