// Unit tests of the no-op memo (lib/apply/memo.h).
#include <gtest/gtest.h>

#include <filesystem>

#include "apply/memo.h"
#include "core/file.h"

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
  EXPECT_EQ(l->hosts, "");  // hosts file not managed
  m.hosts = hosts_digest("# BEGIN mesh-apply wg0\n100.64.0.2\tb.mesh\n# END mesh-apply wg0\n");
  EXPECT_EQ(m.hosts.size(), 64u);
  EXPECT_NE(m.hosts, hosts_digest(""));
  store_memo(dir.string(), "wg0", m);
  l = load_memo(memo_path(dir.string(), "wg0"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->hosts, m.hosts);
  EXPECT_EQ(l->device_text, "");
  remove_memo(dir.string(), "wg0");
  EXPECT_FALSE(load_memo(memo_path(dir.string(), "wg0")));
  std::filesystem::remove_all(dir);
}

TEST(ApplyMemo, StoreAndLoadKeepsTheSnapshot) {
  auto dir = std::filesystem::temp_directory_path() / ("mesh-apply-memo2-" + std::to_string(::getpid()));
  Desired w = desired();
  Current after = expected_state(w, Current{});
  Memo m{std::string(64, 'a'), std::string(64, 'b'), 1};
  m.link = link_digest(after);
  m.ifindex = 7;
  m.backend = "userspace";
  m.verified_at = 1700000000;
  m.device_text = serialise_snapshot(snapshot_of(after.device));
  store_memo(dir.string(), "wg0", m);
  auto l = load_memo(memo_path(dir.string(), "wg0"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->link, m.link);
  EXPECT_EQ(l->ifindex, 7);
  EXPECT_EQ(l->backend, "userspace");
  EXPECT_EQ(l->verified_at, 1700000000);
  EXPECT_EQ(l->device_text, m.device_text);
  // No secret in the file: neither the private key nor its base64.
  auto text = read_file(memo_path(dir.string(), "wg0")).value();
  EXPECT_EQ(text.find(w.private_key.to_base64()), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ApplyMemo, SnapshotStandsInForTheDevice) {
  Desired w = desired();
  w.peers[0].preshared_key = SecretKey::generate_preshared();
  w.peers[0].keepalive = 25;
  Current after = expected_state(w, Current{});
  auto snap = parse_snapshot(serialise_snapshot(snapshot_of(after.device)));
  ASSERT_TRUE(snap) << snap.status().message();
  Current cur = after;
  cur.device = device_from_snapshot(*snap, w);
  EXPECT_FALSE(diff(w, cur).changed());
  EXPECT_EQ(state_digest(cur), state_digest(after));

  // A different wanted preshared key or private key: the digests do not
  // match, so the plan sets the wanted ones.
  Desired w2 = w;
  w2.peers[0].preshared_key = SecretKey::generate_preshared();
  w2.private_key = SecretKey::generate_private();
  cur.device = device_from_snapshot(*snap, w2);
  Plan p = diff(w2, cur);
  EXPECT_TRUE(p.set_private_key);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].fields, std::vector<std::string>{"preshared_key"});
  // A peer added to the map is an addition against the snapshot.
  Desired w3 = w;
  DesiredPeer extra;
  extra.public_key.bytes.fill(2);
  extra.allowed_ips = {pfx("100.64.0.3/32")};
  w3.peers.push_back(extra);
  cur.device = device_from_snapshot(*snap, w3);
  p = diff(w3, cur);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].kind, PeerChange::Kind::Add);
}

TEST(ApplyMemo, MalformedSnapshotIsRejected) {
  Desired w = desired();
  w.peers[0].preshared_key = SecretKey::generate_preshared();
  w.peers[0].forced_endpoint = SockAddr::parse("[2001:db8::1]:51820").value();
  w.peers[0].allowed_ips.push_back(pfx("fd00::/64"));
  Current after = expected_state(w, Current{});
  std::string good = serialise_snapshot(snapshot_of(after.device));
  ASSERT_TRUE(parse_snapshot(good));
  EXPECT_FALSE(parse_snapshot(""));
  // The text snapshot of memo version 2: unknown, so the device is read.
  EXPECT_FALSE(parse_snapshot("device - 1 0\npeer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= - - 0 -\n"));
  // Truncated anywhere, anything appended, any byte changed: rejected, never
  // a different device (the checksum, then the structure).
  for (size_t n = 0; n < good.size(); ++n) EXPECT_FALSE(parse_snapshot(good.substr(0, n))) << n;
  EXPECT_FALSE(parse_snapshot(good + "x"));
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x40);
    EXPECT_FALSE(parse_snapshot(bad)) << i;
  }
  // Peers out of order (or twice): not something mesh-apply wrote, even with
  // a valid checksum.
  Snapshot two = snapshot_of(after.device);
  ASSERT_FALSE(two.peers.empty());
  two.peers.push_back(two.peers.front());
  EXPECT_FALSE(parse_snapshot(serialise_snapshot(two)));
  // Structurally bad fields under a valid checksum: a prefix too long.
  Snapshot longpfx = snapshot_of(after.device);
  longpfx.peers[0].allowed_ips[0].len = 33;
  EXPECT_FALSE(parse_snapshot(serialise_snapshot(longpfx)));
  // An empty device is fine.
  auto empty = parse_snapshot(serialise_snapshot(Snapshot{}));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->peers.empty());
}

TEST(ApplyMemo, SnapshotRoundTripsExactly) {
  Desired w = desired();
  w.peers[0].preshared_key = SecretKey::generate_preshared();
  w.peers[0].keepalive = 25;
  w.peers[0].forced_endpoint = SockAddr::parse("[2001:db8::1]:51820").value();
  w.peers[0].allowed_ips.push_back(pfx("fd00::/64"));
  w.listen_port = 51820;
  Current after = expected_state(w, Current{});
  after.device.fwmark = 0x1234;
  Snapshot s = snapshot_of(after.device);
  auto back = parse_snapshot(serialise_snapshot(s));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->private_key, s.private_key);
  EXPECT_EQ(back->listen_port, 51820);
  EXPECT_EQ(back->fwmark, 0x1234u);
  ASSERT_EQ(back->peers.size(), s.peers.size());
  for (size_t i = 0; i < s.peers.size(); ++i) {
    EXPECT_EQ(back->peers[i].public_key, s.peers[i].public_key);
    EXPECT_EQ(back->peers[i].psk, s.peers[i].psk);
    EXPECT_EQ(back->peers[i].endpoint, s.peers[i].endpoint);
    EXPECT_EQ(back->peers[i].keepalive, s.peers[i].keepalive);
    EXPECT_EQ(back->peers[i].allowed_ips, s.peers[i].allowed_ips);
  }
  Current cur = after;
  cur.device = device_from_snapshot(*back, w);
  EXPECT_EQ(state_digest(cur), state_digest(after));
}

TEST(ApplyMemo, SnapshotIsTrustedOnlyOnTheSameInterfaceWithinTheInterval) {
  Memo m;
  m.ifindex = 7;
  m.backend = "userspace";
  m.verified_at = 1000;
  m.device_text = serialise_snapshot(Snapshot{});
  EXPECT_TRUE(snapshot_trusted(m, "userspace", 7, 1059, 60));
  EXPECT_FALSE(snapshot_trusted(m, "userspace", 7, 1060, 60));  // interval over
  EXPECT_FALSE(snapshot_trusted(m, "userspace", 8, 1001, 60));  // recreated interface
  EXPECT_FALSE(snapshot_trusted(m, "kernel", 7, 1001, 60));
  EXPECT_FALSE(snapshot_trusted(m, "userspace", 7, 999, 60));   // clock went back
  EXPECT_FALSE(snapshot_trusted(m, "userspace", 7, 1001, 0));   // always verify
  m.device_text.clear();
  EXPECT_FALSE(snapshot_trusted(m, "userspace", 7, 1001, 60));
}

}  // namespace
}  // namespace mesh::apply

namespace mesh::apply {
namespace {

TEST(ApplyMemo, ShortcutsMatchTheGeneralForms) {
  Desired w = desired();
  w.peers[0].preshared_key = SecretKey::generate_preshared();
  Current after = expected_state(w, Current{});
  // Straight from the device or through snapshot_of(): the same bytes.
  EXPECT_EQ(serialise_snapshot(after.device), serialise_snapshot(snapshot_of(after.device)));
  DeviceState unsorted = after.device;
  PeerState extra = unsorted.peers.front();
  extra.public_key.bytes.fill(0);
  unsorted.peers.push_back(extra);  // out of order: sorted on the way
  EXPECT_EQ(serialise_snapshot(unsorted), serialise_snapshot(snapshot_of(unsorted)));
  // Moving out of the snapshot gives the same device.
  auto snap = parse_snapshot(serialise_snapshot(after.device)).value();
  Current a = after, b = after;
  a.device = device_from_snapshot(snap, w);
  b.device = device_from_snapshot(std::move(snap), w);
  EXPECT_EQ(state_digest(a), state_digest(b));
  EXPECT_EQ(state_digest(a), state_digest(after));
}

}  // namespace
}  // namespace mesh::apply
