// Unit tests of plan = diff(desired, current) (lib/apply/plan.h).
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "apply/plan.h"

namespace mesh::apply {
namespace {

PublicKey key(uint8_t b) {
  PublicKey k;
  k.bytes.fill(b);
  return k;
}
Prefix pfx(const char* s) { return Prefix::parse(s).value(); }
SockAddr sa(const char* s) { return SockAddr::parse(s).value(); }

struct Fixture {
  Desired want;
  Current cur;
  Fixture() {
    want.private_key = SecretKey::generate_private();
    want.listen_port = 51820;
    want.addresses = {pfx("100.64.0.1/10")};
    want.mtu = 1420;
    want.firewall_digest = "d1";
    cur.link.exists = true;
    cur.link.mtu = 1420;
    cur.link.up = true;
    cur.link.addresses = want.addresses;
    cur.device.private_key = want.private_key;
    cur.device.listen_port = 51820;
    cur.firewall_digest = "d1";
  }
  void add(uint8_t k, std::vector<Prefix> ips, std::optional<SockAddr> map_ep = {}) {
    DesiredPeer p;
    p.public_key = key(k);
    p.allowed_ips = std::move(ips);
    p.map_endpoint = map_ep;
    want.peers.push_back(p);
    std::sort(want.peers.begin(), want.peers.end(),
              [](auto& a, auto& b) { return a.public_key < b.public_key; });
  }
  void have(uint8_t k, std::vector<Prefix> ips, std::optional<SockAddr> ep = {}) {
    PeerState p;
    p.public_key = key(k);
    p.allowed_ips = std::move(ips);
    p.endpoint = ep;
    cur.device.peers.push_back(p);
    normalise(&cur.device);
  }
};

TEST(ApplyPlan, NoOpWhenEverythingMatches) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")}, sa("198.51.100.2:51820"));
  f.have(1, {pfx("100.64.0.2/32")}, sa("198.51.100.2:51820"));
  Plan p = diff(f.want, f.cur);
  EXPECT_FALSE(p.changed());
  EXPECT_EQ(p.peers_unchanged, 1u);
  EXPECT_TRUE(device_update(p, f.want).empty());
  Json j = plan_to_json(p, "wg0", "userspace", "inet mesh_wg0", false);
  EXPECT_EQ(j["changed"], false);
  EXPECT_EQ(j["peers"]["unchanged"], 1);
}

TEST(ApplyPlan, AddsPeerWithMapEndpoint) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")}, sa("198.51.100.2:51820"));
  Plan p = diff(f.want, f.cur);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].kind, PeerChange::Kind::Add);
  EXPECT_EQ(p.peers[0].endpoint, sa("198.51.100.2:51820"));
  DeviceUpdate u = device_update(p, f.want);
  ASSERT_EQ(u.peers.size(), 1u);
  EXPECT_FALSE(u.peers[0].update_only);
  EXPECT_TRUE(u.peers[0].replace_allowed_ips);
  EXPECT_EQ(u.peers[0].allowed_ips, std::vector<Prefix>{pfx("100.64.0.2/32")});
  EXPECT_FALSE(u.private_key);  // unchanged key is not re-sent
}

TEST(ApplyPlan, RemovesPeerFirst) {
  Fixture f;
  f.add(2, {pfx("100.64.0.3/32")});
  f.have(1, {pfx("100.64.0.3/32")});
  Plan p = diff(f.want, f.cur);
  ASSERT_EQ(p.peers.size(), 2u);
  EXPECT_EQ(p.peers[0].kind, PeerChange::Kind::Remove);  // the IP moves: remove before add
  EXPECT_EQ(p.peers[0].public_key, key(1));
  EXPECT_EQ(p.peers[1].kind, PeerChange::Kind::Add);
  DeviceUpdate u = device_update(p, f.want);
  EXPECT_TRUE(u.peers[0].remove);
  EXPECT_EQ(p.count(PeerChange::Kind::Remove), 1u);
}

TEST(ApplyPlan, RoamingEndpointIsKept) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")}, sa("198.51.100.2:51820"));
  f.have(1, {pfx("100.64.0.2/32")}, sa("203.0.113.9:40000"));  // learned by roaming
  Plan p = diff(f.want, f.cur);
  EXPECT_FALSE(p.changed());
}

TEST(ApplyPlan, EndpointsDocumentOverridesRoaming) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")}, sa("198.51.100.2:51820"));
  f.want.peers[0].forced_endpoint = sa("127.0.0.1:3478");
  f.have(1, {pfx("100.64.0.2/32")}, sa("203.0.113.9:40000"));
  Plan p = diff(f.want, f.cur);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].fields, std::vector<std::string>{"endpoint"});
  EXPECT_EQ(p.peers[0].endpoint, sa("127.0.0.1:3478"));
  DeviceUpdate u = device_update(p, f.want);
  EXPECT_TRUE(u.peers[0].update_only);
  EXPECT_TRUE(u.peers[0].allowed_ips.empty());
  EXPECT_FALSE(u.peers[0].replace_allowed_ips);
}

TEST(ApplyPlan, AllowedIpAdditionNeedsNoReplace) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32"), pfx("198.18.0.0/24")});
  f.have(1, {pfx("100.64.0.2/32")});
  Plan p = diff(f.want, f.cur);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].ips_added, std::vector<Prefix>{pfx("198.18.0.0/24")});
  DeviceUpdate u = device_update(p, f.want);
  EXPECT_FALSE(u.peers[0].replace_allowed_ips);
  EXPECT_EQ(u.peers[0].allowed_ips, std::vector<Prefix>{pfx("198.18.0.0/24")});
}

TEST(ApplyPlan, AllowedIpRemovalReplacesWithFullList) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")});
  f.have(1, {pfx("100.64.0.2/32"), pfx("198.18.0.0/24")});
  Plan p = diff(f.want, f.cur);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].ips_removed, std::vector<Prefix>{pfx("198.18.0.0/24")});
  DeviceUpdate u = device_update(p, f.want);
  EXPECT_TRUE(u.peers[0].replace_allowed_ips);
  EXPECT_EQ(u.peers[0].allowed_ips, std::vector<Prefix>{pfx("100.64.0.2/32")});
}

TEST(ApplyPlan, KeepaliveAndPresharedKeyChanges) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")});
  f.want.peers[0].keepalive = 25;
  f.want.peers[0].preshared_key = SecretKey::generate_preshared();
  f.have(1, {pfx("100.64.0.2/32")});
  Plan p = diff(f.want, f.cur);
  ASSERT_EQ(p.peers.size(), 1u);
  EXPECT_EQ(p.peers[0].fields, (std::vector<std::string>{"keepalive", "preshared_key"}));
  DeviceUpdate u = device_update(p, f.want);
  EXPECT_EQ(u.peers[0].keepalive, 25);
  ASSERT_TRUE(u.peers[0].preshared_key);
}

TEST(ApplyPlan, LinkAddressesRoutesAndFirewall) {
  Fixture f;
  f.cur.link.addresses = {pfx("100.64.0.9/10")};
  f.cur.link.mtu = 1500;
  f.cur.link.up = false;
  f.cur.link.routes = {pfx("198.18.9.0/24")};
  f.cur.firewall_digest.reset();
  f.add(1, {pfx("100.64.0.2/32"), pfx("198.18.0.0/24")});
  f.want.routes = routes_for(f.want.addresses, f.want.peers);
  EXPECT_EQ(f.want.routes, std::vector<Prefix>{pfx("198.18.0.0/24")});  // /32 is on-link
  Plan p = diff(f.want, f.cur);
  EXPECT_EQ(p.addresses_add, std::vector<Prefix>{pfx("100.64.0.1/10")});
  EXPECT_EQ(p.addresses_del, std::vector<Prefix>{pfx("100.64.0.9/10")});
  EXPECT_EQ(p.routes_add, std::vector<Prefix>{pfx("198.18.0.0/24")});
  EXPECT_EQ(p.routes_del, std::vector<Prefix>{pfx("198.18.9.0/24")});
  EXPECT_EQ(p.set_mtu, 1420);
  EXPECT_TRUE(p.set_up);
  EXPECT_TRUE(p.firewall);
}

TEST(ApplyPlan, FreshInterfaceSetsKeyAndPort) {
  Fixture f;
  f.cur = Current{};
  Plan p = diff(f.want, f.cur);
  EXPECT_TRUE(p.create_interface);
  EXPECT_TRUE(p.set_private_key);
  EXPECT_EQ(p.set_listen_port, 51820);
  DeviceUpdate u = device_update(p, f.want);
  ASSERT_TRUE(u.private_key);
  EXPECT_EQ(u.listen_port, 51820);
}

TEST(ApplyPlan, DesiredFromMapRejectsForeignKey) {
  NetMap m;
  m.self.public_key = key(7);
  m.self.addresses = {pfx("100.64.0.1/10")};
  auto d = desired_from_map(m, SecretKey::generate_private(), {}, std::nullopt);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.status().code(), Exit::DataErr);
}

TEST(ApplyPlan, DesiredFromMapEndpointsAndPort) {
  SecretKey sk = SecretKey::generate_private();
  NetMap m;
  m.self.public_key = sk.public_key();
  m.self.addresses = {pfx("100.64.0.1/10")};
  m.self.listen_port = 1000;
  MapPeer a;
  a.public_key = key(1);
  a.allowed_ips = {pfx("100.64.0.2/32")};
  a.endpoints = {Candidate{sa("198.51.100.2:1"), "host"}};
  MapPeer b = a;
  b.public_key = key(2);
  b.allowed_ips = {pfx("100.64.0.3/32")};
  m.peers = {a, b};
  EndpointsDoc doc;
  PeerPath pa;
  pa.public_key = key(1);
  pa.endpoint = sa("127.0.0.1:5000");
  PeerPath pb;
  pb.public_key = key(2);
  pb.status = "relay-needed";  // no endpoint: keeps current / the map's
  doc.peers = {pa, pb};
  auto d = desired_from_map(m, sk, doc, std::nullopt).value();
  EXPECT_EQ(d.listen_port, 1000);
  EXPECT_EQ(d.peers[0].forced_endpoint, sa("127.0.0.1:5000"));
  EXPECT_FALSE(d.peers[1].forced_endpoint);
  EXPECT_EQ(d.peers[1].map_endpoint, sa("198.51.100.2:1"));
  auto d2 = desired_from_map(m, sk, doc, uint16_t{2000}).value();
  EXPECT_EQ(d2.listen_port, 2000);
  // Moving out of the map gives the same desired state.
  m.peers[1].name = "a name longer than the small-string buffer";
  auto copied = desired_from_map(m, sk, doc, std::nullopt).value();
  auto moved = desired_from_map(std::move(m), sk, doc, std::nullopt).value();
  ASSERT_EQ(moved.peers.size(), copied.peers.size());
  for (size_t i = 0; i < moved.peers.size(); ++i) {
    EXPECT_EQ(moved.peers[i].name, copied.peers[i].name);
    EXPECT_EQ(moved.peers[i].public_key, copied.peers[i].public_key);
    EXPECT_EQ(moved.peers[i].allowed_ips, copied.peers[i].allowed_ips);
    EXPECT_EQ(moved.peers[i].map_endpoint, copied.peers[i].map_endpoint);
    EXPECT_EQ(moved.peers[i].forced_endpoint, copied.peers[i].forced_endpoint);
  }
  EXPECT_EQ(moved.routes, copied.routes);
}

// mesh-apply's early SET (apply.cpp) writes peer_addition(desired_peer())
// for each peer as it is read; it must be what the plan sends for a device
// without peers, which mesh-apply also checks before it trusts it.
TEST(ApplyPlan, PeerAdditionIsThePlansSetForANewPeer) {
  SecretKey sk = SecretKey::generate_private();
  NetMap m;
  m.self.public_key = sk.public_key();
  m.self.addresses = {pfx("100.64.0.1/10")};
  MapPeer a;
  a.public_key = key(3);
  a.allowed_ips = {pfx("100.64.0.2/32"), pfx("198.18.0.1/24"), pfx("100.64.0.2/32")};
  a.endpoints = {Candidate{sa("198.51.100.2:1"), "host"}, Candidate{sa("198.51.100.3:1"), "host"}};
  a.keepalive = 25;
  a.preshared_key = SecretKey::generate_preshared();
  MapPeer b;
  b.public_key = key(1);
  b.allowed_ips = {pfx("100.64.0.3/32")};
  b.endpoints = {Candidate{sa("198.51.100.4:1"), "host"}};
  MapPeer c;  // no endpoint, no keepalive, no PSK
  c.public_key = key(2);
  c.allowed_ips = {pfx("100.64.0.4/32")};
  m.peers = {a, b, c};
  EndpointsDoc doc;
  PeerPath pb;
  pb.public_key = key(1);
  pb.endpoint = sa("127.0.0.1:5000");
  doc.peers = {pb};
  Desired want = desired_from_map(m, sk, doc, std::nullopt).value();
  Current empty;
  empty.link.exists = true;
  DeviceUpdate u = device_update(diff(want, empty), want);
  ASSERT_EQ(u.peers.size(), 3u);
  for (const MapPeer& mp : m.peers) {
    PeerUpdate early = peer_addition(desired_peer(mp, doc));
    auto it = std::find_if(u.peers.begin(), u.peers.end(),
                           [&](const PeerUpdate& p) { return p.public_key == mp.public_key; });
    ASSERT_NE(it, u.peers.end());
    EXPECT_FALSE(early.remove || early.update_only);
    EXPECT_EQ(early.endpoint, it->endpoint);
    EXPECT_EQ(early.keepalive, it->keepalive);
    EXPECT_TRUE(psk_equal(early.preshared_key, it->preshared_key));
    EXPECT_EQ(early.replace_allowed_ips, it->replace_allowed_ips);
    EXPECT_EQ(early.allowed_ips, it->allowed_ips);
  }
  // The endpoints document wins over the map, as in the plan.
  EXPECT_EQ(peer_addition(desired_peer(b, doc)).endpoint, sa("127.0.0.1:5000"));
  EXPECT_EQ(peer_addition(desired_peer(a, doc)).allowed_ips.size(), 2u);  // canonical, unique
}

TEST(ApplyPlan, WgQuickConfiguration) {
  Fixture f;
  f.add(1, {pfx("100.64.0.2/32")}, sa("198.51.100.2:51820"));
  f.want.peers[0].keepalive = 25;
  std::string c = wg_quick_conf(f.want, Current{});
  EXPECT_NE(c.find("[Interface]\nPrivateKey = "), std::string::npos);
  EXPECT_NE(c.find("ListenPort = 51820\n"), std::string::npos);
  EXPECT_NE(c.find("Address = 100.64.0.1/10\n"), std::string::npos);
  EXPECT_NE(c.find("AllowedIPs = 100.64.0.2/32\nEndpoint = 198.51.100.2:51820\nPersistentKeepalive = 25\n"),
            std::string::npos);
}

}  // namespace
}  // namespace mesh::apply
