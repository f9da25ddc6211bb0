// Unit tests for the hand-written outputs of lib/apply: plan_json_text()
// must be byte for byte dump_json(plan_to_json()), and the UAPI SET must
// format addresses exactly as IpAddr/Prefix/SockAddr::to_string() do.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "apply/format.h"
#include "apply/plan.h"
#include "apply/uapi.h"
#include "core/base64.h"

namespace mesh::apply {
namespace {

Prefix pfx(const char* s) { return Prefix::parse(s).value(); }
SockAddr sa(const char* s) { return SockAddr::parse(s).value(); }

PublicKey key(uint8_t seed) {
  PublicKey k;
  for (size_t i = 0; i < k.bytes.size(); ++i) k.bytes[i] = static_cast<uint8_t>(seed * 37 + i * 11);
  return k;
}

void same(const Plan& p, const std::string& iface = "wg0", bool dry = false) {
  EXPECT_EQ(plan_json_text(p, iface, "userspace", "inet mesh_wg0", dry),
            dump_json(plan_to_json(p, iface, "userspace", "inet mesh_wg0", dry)));
}

TEST(ApplyOutput, PlanJsonTextIsTheDomsSerialisation) {
  Plan none;
  same(none);
  same(none, "wg0", true);
  none.peers_unchanged = 5000;
  same(none);
  // The hosts file's block: null file when not managed; a change to it
  // alone is a change.
  Json j = Json::parse(plan_json_text(none, "wg0", "userspace", "inet mesh_wg0", false));
  EXPECT_EQ(j["hosts"], Json::parse(R"({"file":null,"changed":false,"names":0})"));
  none.hosts_file = "/etc/hosts";
  none.hosts_names = 12;
  same(none);
  none.hosts_changed = true;
  EXPECT_TRUE(none.changed());
  same(none);
  none.hosts_file = "/tmp/odd \"name\"\n";
  same(none);
  none = Plan{};

  Plan p;
  p.create_interface = true;
  p.set_private_key = true;
  p.set_listen_port = 51820;
  p.set_mtu = 1420;
  p.set_up = true;
  p.firewall = true;
  p.addresses_add = {pfx("100.64.0.1/10"), pfx("fd00::1/64")};
  p.addresses_del = {pfx("198.18.0.1/15")};
  p.routes_add = {pfx("198.18.4.0/24")};
  p.routes_del = {pfx("2001:db8::/32")};
  PeerChange add;
  add.kind = PeerChange::Kind::Add;
  add.name = "plain";
  add.public_key = key(1);
  add.allowed_ips = {pfx("100.64.0.2/32"), pfx("fd00::2/128")};
  add.endpoint = sa("198.18.0.2:51820");
  p.peers.push_back(add);
  add.public_key = key(2);
  add.name = "";  // no name member
  add.endpoint.reset();
  add.allowed_ips = {};
  p.peers.push_back(add);
  add.public_key = key(3);
  add.name = "quote \" backslash \\ tab \t del \x7f Jos\xc3\xa9 bad \xff";
  add.endpoint = sa("[2001:db8::7]:1");
  p.peers.push_back(add);
  PeerChange up;
  up.kind = PeerChange::Kind::Update;
  up.name = "u";
  up.public_key = key(4);
  up.fields = {"endpoint", "keepalive", "allowed_ips"};
  up.endpoint = sa("203.0.113.9:65535");
  up.keepalive = 0;
  up.ips_added = {pfx("100.64.0.9/32")};
  up.ips_removed = {pfx("100.64.0.8/32"), pfx("0.0.0.0/0")};
  p.peers.push_back(up);
  up.public_key = key(5);
  up.fields = {"preshared_key"};
  up.endpoint.reset();
  up.keepalive = 25;
  up.ips_added.clear();
  up.ips_removed.clear();
  p.peers.push_back(up);
  PeerChange rm;
  rm.kind = PeerChange::Kind::Remove;
  rm.public_key = key(6);
  rm.ips_removed = {pfx("100.64.0.6/32")};
  p.peers.insert(p.peers.begin(), rm);
  same(p);
  same(p, "weird\"name", true);
}

TEST(ApplyOutput, AddressesFormatAsToString) {
  for (const char* s : {"0.0.0.0/0", "255.255.255.255/32", "100.64.0.1/10", "10.0.0.0/8", "fd00::/8",
                        "2001:db8::1/128", "::/0", "::ffff:198.18.0.1/128"}) {
    std::string o;
    append_prefix(&o, pfx(s));
    EXPECT_EQ(o, pfx(s).to_string());
  }
  for (const char* s : {"0.0.0.0:1", "198.18.0.2:51820", "[2001:db8::7]:65535", "[::1]:9"}) {
    std::string o;
    append_sockaddr(&o, sa(s));
    EXPECT_EQ(o, sa(s).to_string());
  }
}

TEST(ApplyOutput, UapiSetFormatsAsBefore) {
  DeviceUpdate u;
  u.private_key = SecretKey::generate_private();
  u.listen_port = 51820;
  PeerUpdate p;
  p.public_key = key(1);
  p.preshared_key = SecretKey::generate_preshared();
  p.endpoint = sa("[2001:db8::7]:51820");
  p.keepalive = 25;
  p.replace_allowed_ips = true;
  p.allowed_ips = {pfx("100.64.0.2/32"), pfx("fd00::/64")};
  u.peers.push_back(p);
  PeerUpdate r;
  r.public_key = key(2);
  r.remove = true;
  u.peers.push_back(r);
  std::string want = "set=1\nprivate_key=" + hex_encode(u.private_key->bytes()) +
                     "\nlisten_port=51820\npublic_key=" + hex_encode(p.public_key.bytes) +
                     "\npreshared_key=" + hex_encode(p.preshared_key->bytes()) +
                     "\nendpoint=[2001:db8::7]:51820\npersistent_keepalive_interval=25\n"
                     "replace_allowed_ips=true\nallowed_ip=100.64.0.2/32\nallowed_ip=fd00::/64\n"
                     "public_key=" + hex_encode(r.public_key.bytes) + "\nremove=true\n\n";
  EXPECT_EQ(uapi_encode_set(u), want);
}

}  // namespace
}  // namespace mesh::apply
