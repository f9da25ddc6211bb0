// Unit tests of the netlink codecs: WireGuard generic netlink (wgnl.h)
// including splitting large updates and merging multi-message dumps, and
// the rtnetlink builders/parsers (rtnl.h).
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/wireguard.h>

#include "apply/rtnl.h"
#include "apply/wgnl.h"

namespace mesh::apply {
namespace {

const nlmsghdr* hdr(const NlMsg& m) { return reinterpret_cast<const nlmsghdr*>(m.data()); }
Prefix pfx(const std::string& s) { return Prefix::parse(s).value(); }

DeviceUpdate big_update(int peers, int ips_each) {
  DeviceUpdate u;
  u.private_key = SecretKey::generate_private();
  u.listen_port = 51820;
  u.replace_peers = true;
  for (int i = 0; i < peers; ++i) {
    PeerUpdate p;
    p.public_key.bytes.fill(0);
    p.public_key.bytes[0] = static_cast<uint8_t>(i >> 8);
    p.public_key.bytes[1] = static_cast<uint8_t>(i);
    p.endpoint = SockAddr::parse("198.51.100." + std::to_string(i % 250 + 1) + ":51820").value();
    p.keepalive = 25;
    p.replace_allowed_ips = true;
    for (int j = 0; j < ips_each; ++j)
      p.allowed_ips.push_back(pfx("198.18." + std::to_string(j / 256) + "." + std::to_string(j % 256) +
                                  "/32"));
    p.allowed_ips.push_back(pfx("fd00::" + std::to_string(i + 1) + "/128"));
    u.peers.push_back(p);
  }
  return u;
}

TEST(ApplyWgnl, SmallSetIsOneMessage) {
  auto u = big_update(2, 1);
  auto msgs = wgnl_set_device(42, "wg0", u, 7).value();
  ASSERT_EQ(msgs.size(), 1u);
  const nlmsghdr* h = hdr(msgs[0]);
  EXPECT_EQ(h->nlmsg_type, 42);
  EXPECT_EQ(h->nlmsg_seq, 7u);
  EXPECT_EQ(h->nlmsg_flags, NLM_F_REQUEST | NLM_F_ACK);
  EXPECT_EQ(h->nlmsg_len, msgs[0].size());
  auto* g = static_cast<const genlmsghdr*>(mnl_nlmsg_get_payload(h));
  EXPECT_EQ(g->cmd, WG_CMD_SET_DEVICE);
  EXPECT_EQ(g->version, WG_GENL_VERSION);
  bool ifname = false, flags = false, port = false;
  MESH_NL_ATTRS(a, h, sizeof(genlmsghdr)) {
    if (mnl_attr_get_type(a) == WGDEVICE_A_IFNAME) ifname = std::string(mnl_attr_get_str(a)) == "wg0";
    if (mnl_attr_get_type(a) == WGDEVICE_A_FLAGS) flags = mnl_attr_get_u32(a) == WGDEVICE_F_REPLACE_PEERS;
    if (mnl_attr_get_type(a) == WGDEVICE_A_LISTEN_PORT) port = mnl_attr_get_u16(a) == 51820;
  }
  EXPECT_TRUE(ifname && flags && port);
}

TEST(ApplyWgnl, LargeSetIsSplitAndRoundTrips) {
  auto u = big_update(300, 3);
  u.peers[5].allowed_ips.clear();
  for (int j = 0; j < 1000; ++j)  // one peer too big for one message
    u.peers[5].allowed_ips.push_back(pfx("198.19." + std::to_string(j / 256) + "." +
                                         std::to_string(j % 256) + "/32"));
  auto msgs = wgnl_set_device(42, "wg0", u, 100).value();
  ASSERT_GT(msgs.size(), 3u);
  DeviceState d;
  int replace_peers = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_LE(msgs[i].size(), kWgMsgMax);
    EXPECT_EQ(hdr(msgs[i])->nlmsg_seq, 100 + i);
    MESH_NL_ATTRS(a, hdr(msgs[i]), sizeof(genlmsghdr)) {
      if (mnl_attr_get_type(a) == WGDEVICE_A_FLAGS) ++replace_peers;
    }
    // The SET attribute layout is the GET layout: parse it back.
    ASSERT_TRUE(wgnl_parse_get(hdr(msgs[i]), &d));
  }
  EXPECT_EQ(replace_peers, 1);  // device-level flags only in the first message
  EXPECT_EQ(d.listen_port, 51820);
  ASSERT_EQ(d.peers.size(), u.peers.size());
  for (size_t i = 0; i < u.peers.size(); ++i) {
    EXPECT_EQ(d.peers[i].public_key, u.peers[i].public_key);
    EXPECT_EQ(d.peers[i].allowed_ips, u.peers[i].allowed_ips) << "peer " << i;
    EXPECT_EQ(d.peers[i].endpoint, u.peers[i].endpoint);
    EXPECT_EQ(d.peers[i].keepalive, 25);
  }
}

TEST(ApplyWgnl, PeerRemovalFlag) {
  DeviceUpdate u;
  PeerUpdate p;
  p.public_key.bytes.fill(9);
  p.remove = true;
  u.peers = {p};
  auto msgs = wgnl_set_device(42, "wg0", u, 1).value();
  ASSERT_EQ(msgs.size(), 1u);
  uint32_t flags = 0;
  MESH_NL_ATTRS(a, hdr(msgs[0]), sizeof(genlmsghdr)) {
    if (mnl_attr_get_type(a) != WGDEVICE_A_PEERS) continue;
    MESH_NL_NESTED(peer, a) {
      MESH_NL_NESTED(f, peer) {
        if (mnl_attr_get_type(f) == WGPEER_A_FLAGS) flags = mnl_attr_get_u32(f);
      }
    }
  }
  EXPECT_EQ(flags, static_cast<uint32_t>(WGPEER_F_REMOVE_ME));
}

TEST(ApplyWgnl, FamilyLookupMessages) {
  NlMsg m = genl_get_family("wireguard", 3);
  EXPECT_EQ(hdr(m)->nlmsg_type, GENL_ID_CTRL);
  NlMsg reply;
  auto* h = nl_put_header(&reply, GENL_ID_CTRL, 0, 3);
  auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(h, sizeof(genlmsghdr)));
  g->cmd = CTRL_CMD_NEWFAMILY;
  mnl_attr_put_strz(h, CTRL_ATTR_FAMILY_NAME, "wireguard");
  mnl_attr_put_u16(h, CTRL_ATTR_FAMILY_ID, 0x1c);
  nl_finish(&reply);
  EXPECT_EQ(genl_parse_family_id(hdr(reply)), 0x1c);
  NlMsg get = wgnl_get_device(0x1c, "wg0", 4);
  EXPECT_EQ(hdr(get)->nlmsg_flags & NLM_F_DUMP, NLM_F_DUMP);
}

TEST(ApplyWgnl, RejectsBrokenAllowedIp) {
  NlMsg m;
  auto* h = nl_put_header(&m, 42, 0, 1);
  mnl_nlmsg_put_extra_header(h, sizeof(genlmsghdr));
  auto* peers = mnl_attr_nest_start(h, WGDEVICE_A_PEERS);
  auto* peer = mnl_attr_nest_start(h, 0);
  uint8_t k[32] = {1};
  mnl_attr_put(h, WGPEER_A_PUBLIC_KEY, 32, k);
  auto* ips = mnl_attr_nest_start(h, WGPEER_A_ALLOWEDIPS);
  auto* ip = mnl_attr_nest_start(h, 0);
  mnl_attr_put_u16(h, WGALLOWEDIP_A_FAMILY, AF_INET);
  uint8_t addr[16] = {};
  mnl_attr_put(h, WGALLOWEDIP_A_IPADDR, 16, addr);  // wrong length for IPv4
  mnl_attr_put_u8(h, WGALLOWEDIP_A_CIDR_MASK, 24);
  mnl_attr_nest_end(h, ip);
  mnl_attr_nest_end(h, ips);
  mnl_attr_nest_end(h, peer);
  mnl_attr_nest_end(h, peers);
  nl_finish(&m);
  DeviceState d;
  EXPECT_FALSE(wgnl_parse_get(hdr(m), &d));
}

TEST(ApplyRtnl, RouteRoundTrip) {
  NlMsg m = rtnl_route(true, 7, pfx("198.18.1.77/24"), 5);
  const nlmsghdr* h = hdr(m);
  EXPECT_EQ(h->nlmsg_type, RTM_NEWROUTE);
  EXPECT_EQ(h->nlmsg_flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  // A NEWROUTE request parses like a dump entry.
  auto e = rtnl_parse_route(h);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->ifindex, 7);
  EXPECT_EQ(e->prefix.to_string(), "198.18.1.0/24");  // canonical on the wire
  EXPECT_EQ(e->protocol, kRouteProto);
  EXPECT_EQ(e->table, static_cast<uint32_t>(RT_TABLE_MAIN));
  auto e6 = rtnl_parse_route(hdr(rtnl_route(false, 3, pfx("fd00:1::/64"), 6)));
  EXPECT_FALSE(e6);  // DELROUTE is not an entry
}

TEST(ApplyRtnl, AddressRoundTrip) {
  NlMsg m = rtnl_addr(true, 9, pfx("100.64.0.1/10"), 1);
  auto e = rtnl_parse_addr(hdr(m));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->ifindex, 9);
  EXPECT_EQ(e->prefix.to_string(), "100.64.0.1/10");  // host bits kept
  auto e6 = rtnl_parse_addr(hdr(rtnl_addr(true, 9, pfx("fd00::1/64"), 2)));
  ASSERT_TRUE(e6);
  EXPECT_EQ(e6->prefix.to_string(), "fd00::1/64");
}

TEST(ApplyRtnl, LinkMessages) {
  NlMsg m = rtnl_new_link("wg0", "wireguard", 1);
  EXPECT_EQ(hdr(m)->nlmsg_type, RTM_NEWLINK);
  auto li = rtnl_parse_link(hdr(m));
  ASSERT_TRUE(li);
  EXPECT_EQ(li->name, "wg0");
  EXPECT_EQ(li->kind, "wireguard");
  auto set = rtnl_parse_link(hdr(rtnl_set_link(4, 1420, true, 2)));
  ASSERT_TRUE(set);
  EXPECT_EQ(set->ifindex, 4);
  EXPECT_EQ(set->mtu, 1420);
  EXPECT_TRUE(set->up);
}

}  // namespace
}  // namespace mesh::apply
