// Unit tests of the UAPI text codec (lib/apply/uapi.h), with a response
// captured from wireguard-go 0.0.20220316 (`get=1` on its socket).
#include <gtest/gtest.h>

#include "apply/uapi.h"

namespace mesh::apply {
namespace {

// Keys are hex on the wire; this one is 32 bytes of 0x11 and so on.
const std::string k11(64, '1'), k22(64, '2');

TEST(ApplyUapi, ParsesCapturedGet) {
  std::string resp =
      "private_key=" + std::string(64, 'a') + "\nlisten_port=51820\n"
      "public_key=" + k22 + "\npreshared_key=" + std::string(64, '0') + "\n"
      "protocol_version=1\nendpoint=198.51.100.2:51820\nlast_handshake_time_sec=1700000000\n"
      "last_handshake_time_nsec=5\ntx_bytes=276\nrx_bytes=220\npersistent_keepalive_interval=25\n"
      "allowed_ip=198.18.1.0/24\nallowed_ip=100.64.0.2/32\n"
      "public_key=" + k11 + "\nendpoint=[2001:db8::1]:9\nallowed_ip=fd00::/8\n"
      "errno=0\n\n";
  auto d = uapi_parse_get(resp);
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_EQ(d->listen_port, 51820);
  ASSERT_TRUE(d->private_key);
  EXPECT_EQ(d->private_key->bytes()[0], 0xaa);
  ASSERT_EQ(d->peers.size(), 2u);
  // Sorted by key: 0x11.. first.
  EXPECT_EQ(d->peers[0].public_key.bytes[0], 0x11);
  EXPECT_EQ(d->peers[0].endpoint->to_string(), "[2001:db8::1]:9");
  const auto& p = d->peers[1];
  EXPECT_FALSE(p.preshared_key);  // all-zero means none
  EXPECT_EQ(p.keepalive, 25);
  EXPECT_EQ(p.last_handshake_sec, 1700000000);
  EXPECT_EQ(p.rx_bytes, 220u);
  ASSERT_EQ(p.allowed_ips.size(), 2u);
  EXPECT_EQ(p.allowed_ips[0].to_string(), "100.64.0.2/32");  // sorted
}

TEST(ApplyUapi, RejectsMalformed) {
  EXPECT_FALSE(uapi_parse_get("listen_port=1\n"));                     // truncated
  EXPECT_FALSE(uapi_parse_get("listen_port=x\nerrno=0\n\n"));          // bad number
  EXPECT_FALSE(uapi_parse_get("public_key=zz\nerrno=0\n\n"));          // bad key
  EXPECT_FALSE(uapi_parse_get("garbage\nerrno=0\n\n"));                // no '='
  EXPECT_FALSE(uapi_parse_get("listen_port=1\n\n"));                   // no errno
  auto e = uapi_parse_get("errno=13\n\n");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.status().code(), Exit::IoErr);
}

TEST(ApplyUapi, EncodesSet) {
  DeviceUpdate u;
  u.listen_port = 51820;
  PeerUpdate a;
  a.public_key.bytes.fill(0x11);
  a.update_only = true;
  a.endpoint = SockAddr::parse("198.51.100.2:51820").value();
  a.keepalive = 0;
  a.allowed_ips = {Prefix::parse("198.18.0.0/24").value()};
  PeerUpdate b;
  b.public_key.bytes.fill(0x22);
  b.remove = true;
  u.peers = {a, b};
  EXPECT_EQ(uapi_encode_set(u),
            "set=1\nlisten_port=51820\npublic_key=" + k11 +
                "\nupdate_only=true\nendpoint=198.51.100.2:51820\n"
                "persistent_keepalive_interval=0\nallowed_ip=198.18.0.0/24\n"
                "public_key=" + k22 + "\nremove=true\n\n");
}

TEST(ApplyUapi, SetInPartsIsTheWholeSet) {
  DeviceUpdate u;
  u.private_key = SecretKey::generate_private();
  u.listen_port = 51820;
  u.replace_peers = true;
  PeerUpdate a;
  a.public_key.bytes.fill(0x11);
  a.preshared_key = SecretKey::generate_preshared();
  a.endpoint = SockAddr::parse("[2001:db8::1]:51820").value();
  a.keepalive = 25;
  a.replace_allowed_ips = true;
  a.allowed_ips = {Prefix::parse("100.64.0.2/32").value(), Prefix::parse("2001:db8::/64").value()};
  PeerUpdate b;
  b.public_key.bytes.fill(0x22);
  b.remove = true;
  u.peers = {a, b};
  std::string parts = uapi_encode_device(u);
  EXPECT_EQ(parts.find("public_key="), std::string::npos);
  EXPECT_NE(parts.find("replace_peers=true\n"), std::string::npos);
  for (const auto& p : u.peers) uapi_append_peer(&parts, p);
  EXPECT_EQ(parts + "\n", uapi_encode_set(u));
}

TEST(ApplyUapi, Errno) {
  EXPECT_EQ(uapi_parse_errno("errno=0\n\n").value(), 0);
  EXPECT_EQ(uapi_parse_errno("errno=22\n\n").value(), 22);
  EXPECT_FALSE(uapi_parse_errno("oops\n\n"));
  EXPECT_TRUE(uapi_response_complete("errno=0\n\n"));
  EXPECT_FALSE(uapi_response_complete("errno=0\n"));
}

}  // namespace
}  // namespace mesh::apply
