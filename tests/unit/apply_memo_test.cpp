// Unit tests of the no-op memo (lib/apply/memo.h).
#include <gtest/gtest.h>

#include <filesystem>

#include "apply/memo.h"

namespace mesh::apply {
namespace {

Prefix pfx(const char* s) { return Prefix::parse(s).value(); }

Desired desired() {
  Desired w;
  w.private_key = SecretKey::generate_private();
  w.listen_port = 51820;
  w.addresses = {pfx("100.64.0.1/10")};
  w.mtu = 1420;
  w.firewall_digest = "f";
  DesiredPeer p;
  p.public_key.bytes.fill(1);
  p.allowed_ips = {pfx("100.64.0.2/32"), pfx("198.18.0.0/24")};
  p.map_endpoint = SockAddr::parse("198.51.100.2:51820").value();
  w.peers = {p};
  w.routes = routes_for(w.addresses, w.peers);
  return w;
}

TEST(ApplyMemo, ExpectedStateIsANoOp) {
  Desired w = desired();
  Current after = expected_state(w, Current{});
  EXPECT_FALSE(diff(w, after).changed());
  // Counters and handshake times do not matter.
  Current observed = after;
  observed.device.peers[0].rx_bytes = 99;
  observed.device.peers[0].last_handshake_sec = 5;
  EXPECT_EQ(state_digest(observed), state_digest(after));
}

TEST(ApplyMemo, EveryRelevantDifferenceChangesTheDigest) {
  Desired w = desired();
  Current base = expected_state(w, Current{});
  std::string d = state_digest(base);
  auto differs = [&](auto&& mutate) {
    Current c = base;
    mutate(c);
    return state_digest(c) != d;
  };
  EXPECT_TRUE(differs([](Current& c) { c.device.peers.clear(); }));
  EXPECT_TRUE(differs([](Current& c) { c.device.peers[0].endpoint.reset(); }));
  EXPECT_TRUE(differs([](Current& c) { c.device.peers[0].keepalive = 1; }));
  EXPECT_TRUE(differs([](Current& c) { c.device.peers[0].allowed_ips.pop_back(); }));
  EXPECT_TRUE(differs([](Current& c) { c.device.peers[0].preshared_key = SecretKey::generate_preshared(); }));
  EXPECT_TRUE(differs([](Current& c) { c.device.listen_port = 1; }));
  EXPECT_TRUE(differs([](Current& c) { c.device.private_key = SecretKey::generate_private(); }));
  EXPECT_TRUE(differs([](Current& c) { c.link.mtu = 1280; }));
  EXPECT_TRUE(differs([](Current& c) { c.link.up = false; }));
  EXPECT_TRUE(differs([](Current& c) { c.link.addresses.clear(); }));
  EXPECT_TRUE(differs([](Current& c) { c.link.routes.clear(); }));
  EXPECT_TRUE(differs([](Current& c) { c.firewall_digest.reset(); }));
}

TEST(ApplyMemo, RoamedEndpointIsPartOfTheExpectedState) {
  Desired w = desired();
  Current before = expected_state(w, Current{});
  before.device.peers[0].endpoint = SockAddr::parse("203.0.113.5:4000").value();
  Current after = expected_state(w, before);
  EXPECT_EQ(after.device.peers[0].endpoint, before.device.peers[0].endpoint);
}

TEST(ApplyMemo, InputDigestSeparatesFields) {
  InputDigest a, b;
  a.add("map", "ab");
  a.add("endpoints", "c");
  b.add("map", "a");
  b.add("endpoints", "bc");
  EXPECT_NE(a.hex(), b.hex());
}

TEST(ApplyMemo, StoreAndLoad) {
  auto dir = std::filesystem::temp_directory_path() / ("mesh-apply-memo-" + std::to_string(::getpid()));
  Memo m{std::string(64, 'a'), std::string(64, 'b'), 5000};
  store_memo(dir.string(), "wg0", m);
  auto l = load_memo(memo_path(dir.string(), "wg0"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->inputs, m.inputs);
  EXPECT_EQ(l->state, m.state);
  EXPECT_EQ(l->peers, 5000u);
  remove_memo(dir.string(), "wg0");
  EXPECT_FALSE(load_memo(memo_path(dir.string(), "wg0")));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mesh::apply
