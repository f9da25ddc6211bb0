// Relay credential revocations: the coordinator's list (coord/revoked.h),
// the MACs both sides compute, and the relay applying an answer
// (relay/revocations.h) to the TURN engine, which then refuses the subject.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coord/revoked.h"
#include "relay/revocations.h"
#include "stun/stun.h"
#include "turn/server.h"

namespace mesh {
namespace {

TEST(RelayRevocations, ListSinceFullAndPrune) {
  coord::RevocationList l;
  EXPECT_EQ(l.seq(), 0);
  l.add("alice@1", 1000);
  l.add("bob@2", 2000);
  Json all = l.since(0);
  EXPECT_EQ(all["seq"], 2);
  EXPECT_TRUE(all["full"].get<bool>());
  ASSERT_EQ(all["revoked"].size(), 2u);
  Json after1 = l.since(1);
  EXPECT_FALSE(after1["full"].get<bool>());
  ASSERT_EQ(after1["revoked"].size(), 1u);
  EXPECT_EQ(after1["revoked"][0]["subject"], "bob@2");
  EXPECT_EQ(l.since(2)["revoked"].size(), 0u);
  // A relay ahead of us (our state was reset): the whole list.
  EXPECT_TRUE(l.since(7)["full"].get<bool>());
  // Revoked again: a new seq, the later until kept.
  l.add("alice@1", 500);
  Json again = l.since(2);
  ASSERT_EQ(again["revoked"].size(), 1u);
  EXPECT_EQ(again["revoked"][0]["until"], 1000);
  EXPECT_EQ(again["revoked"][0]["seq"], 3);
  // Persisted and back.
  auto back = coord::RevocationList::from_json(l.to_json());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->since(0), l.since(0));
  EXPECT_FALSE(coord::RevocationList::from_json(Json{{"seq", 1}}));
  // Entries go once their credentials have expired.
  EXPECT_TRUE(l.prune(1500));
  EXPECT_EQ(l.since(0)["revoked"].size(), 1u);
  EXPECT_FALSE(l.prune(1500));
  EXPECT_EQ(coord::relay_subject("alice", 7), "alice@7");
}

TEST(RelayRevocations, RequestMacChecksTimeParametersAndSecret) {
  int64_t now = 1700000000, ts = 0;
  std::string h = std::to_string(now) + ":" + coord::revocation_request_mac("s3cret", now, 4, 25);
  EXPECT_TRUE(coord::check_revocation_request("s3cret", h, now + 10, 4, 25, &ts));
  EXPECT_EQ(ts, now);
  EXPECT_FALSE(coord::check_revocation_request("other", h, now, 4, 25, &ts));
  EXPECT_FALSE(coord::check_revocation_request("s3cret", h, now, 5, 25, &ts));   // another after
  EXPECT_FALSE(coord::check_revocation_request("s3cret", h, now, 4, 0, &ts));    // another wait
  EXPECT_FALSE(coord::check_revocation_request("s3cret", h, now + 301, 4, 25, &ts));
  EXPECT_FALSE(coord::check_revocation_request("s3cret", "", now, 4, 25, &ts));
  EXPECT_FALSE(coord::check_revocation_request("s3cret", "x:y", now, 4, 25, &ts));
  EXPECT_NE(coord::revocation_response_mac("s3cret", now, "{}"),
            coord::revocation_response_mac("s3cret", now + 1, "{}"));
}

struct NullIo : turn::Io {
  int open = 0;
  Result<turn::RelaySocket> open_relay(int, bool, turn::Allocation*) override {
    ++open;
    return turn::RelaySocket{10 + open, SockAddr{*IpAddr::parse("203.0.113.1"), static_cast<uint16_t>(50000 + open)}};
  }
  void close_relay(turn::RelaySocket& s) override { s.fd = -1; }
  std::vector<std::vector<uint8_t>> replies;
  void reply(const turn::ClientKey&, stun::Bytes m, uint32_t) override { replies.emplace_back(m.begin(), m.end()); }
  void send_to_peer(const turn::RelaySocket&, const SockAddr&, stun::Bytes) override {}
  void deliver(turn::Allocation&, const SockAddr&, int, stun::Bytes) override {}
  bool origin(const turn::ClientKey&, uint32_t c, Origin*) override { return c == 0; }
};

TEST(RelayRevocations, AppliedAnswerRefusesTheSubjectAndEndsItsAllocations) {
  turn::Config cfg;
  cfg.relay_ips = {*IpAddr::parse("203.0.113.1")};
  auto creds = std::make_unique<turn::Credentials>();
  creds->set_realm("mesh");
  creds->add_secret("s3cret");
  turn::Shared shared(cfg, std::move(creds));
  NullIo io;
  turn::Stats stats;
  turn::Engine eng(shared, io, stats);
  turn::Now now{1000, 1700000000};
  turn::ClientKey client{*SockAddr::parse("198.51.100.5:4000"), 0, turn::kUdp};
  std::array<uint8_t, 512> buf{};
  auto allocate = [&](const std::string& user, stun::TxId tx) {
    stun::Builder b(buf, stun::kAllocate, stun::kRequest, tx);
    uint8_t rt[4] = {17, 0, 0, 0};
    b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
    b.add_string(stun::kUsername, user).add_string(stun::kRealm, "mesh");
    b.add_string(stun::kNonce, shared.nonces().make(now.unix_s, 600, turn::nonce_binding(client)));
    b.add_integrity(stun::long_term_key(user, "mesh", turn::rest_password("s3cret", user)));
    io.replies.clear();
    eng.on_message(client, b.finish(), now);
    auto m = stun::parse(io.replies.at(0));
    if (!m || m->cls == stun::kSuccess) return 0;
    return stun::decode_error_code(*m->find(stun::kErrorCode))->code;
  };
  std::string user = "1700003600:alice@1";
  stun::TxId tx = stun::random_txid();
  ASSERT_EQ(allocate(user, tx), 0);
  ASSERT_EQ(eng.allocation_count(), 1u);

  // A newer credential of the same subject (re-minted by the coordinator)
  // carries the allocation on: Refresh works, an older one is then refused;
  // another subject's credential gets 441 (RFC 8656 section 5).
  auto refresh = [&](const std::string& u) {
    stun::Builder b(buf, stun::kRefresh, stun::kRequest, stun::random_txid());
    b.add_string(stun::kUsername, u).add_string(stun::kRealm, "mesh");
    b.add_string(stun::kNonce, shared.nonces().make(now.unix_s, 600, turn::nonce_binding(client)));
    b.add_integrity(stun::long_term_key(u, "mesh", turn::rest_password("s3cret", u)));
    io.replies.clear();
    eng.on_message(client, b.finish(), now);
    auto m = stun::parse(io.replies.at(0));
    if (!m || m->cls == stun::kSuccess) return 0;
    return stun::decode_error_code(*m->find(stun::kErrorCode))->code;
  };
  EXPECT_EQ(refresh("1700003600:bob@2"), 441);
  EXPECT_EQ(refresh("1700005400:alice@1"), 0);
  EXPECT_EQ(refresh(user), 441);
  EXPECT_EQ(eng.find(client)->username, "1700005400:alice@1");
  user = "1700005400:alice@1";

  // A forged answer (wrong MAC) changes nothing.
  std::string body =
      R"({"seq":3,"full":false,"revoked":[{"seq":3,"subject":"alice@1","until":1700005400}]})";
  int64_t ts = now.unix_s;
  auto bad = relay::apply_revocations(shared, {"other"}, ts, body,
                                      coord::revocation_response_mac("other2", ts, body), now.unix_s);
  EXPECT_FALSE(bad);
  EXPECT_FALSE(shared.revoked("alice@1", now.unix_s));
  // The coordinator's answer: the subject is refused, its allocation ends.
  auto got = relay::apply_revocations(shared, {"new", "s3cret"}, ts, body,
                                      coord::revocation_response_mac("s3cret", ts, body), now.unix_s);
  ASSERT_TRUE(got) << got.status().message();
  EXPECT_EQ(*got, 3);
  EXPECT_TRUE(shared.revoked("alice@1", now.unix_s));
  EXPECT_FALSE(shared.revoked("alice@2", now.unix_s));  // a re-enrolled alice
  eng.end_revoked(now.unix_s);
  EXPECT_EQ(eng.allocation_count(), 0u);
  EXPECT_EQ(stats.allocations_revoked.load(), 1u);
  EXPECT_EQ(allocate(user, stun::random_txid()), 401);
  EXPECT_EQ(allocate("1700003600:alice@2", stun::random_txid()), 0);
  // After the subject's last EXPIRY the entry is dropped (and the
  // credential is expired anyway); a full answer replaces the list.
  shared.revoke({}, true, now.unix_s);
  EXPECT_FALSE(shared.revoked("alice@1", now.unix_s));
}

}  // namespace
}  // namespace mesh
