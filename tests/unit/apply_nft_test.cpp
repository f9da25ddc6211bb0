// Unit tests of the firewall compiler (lib/apply/nft.h). The e2e tests
// load the same output into real nftables.
#include <gtest/gtest.h>

#include "apply/nft.h"

namespace mesh::apply {
namespace {

FirewallRule rule(std::vector<std::string> srcs, std::string proto, std::vector<PortRange> ports) {
  FirewallRule r;
  for (auto& s : srcs) r.sources.push_back(Prefix::parse(s).value());
  r.proto = std::move(proto);
  r.ports = std::move(ports);
  return r;
}

TEST(ApplyNft, TableName) {
  EXPECT_EQ(firewall_table_name("wg0"), "mesh_wg0");
  EXPECT_EQ(firewall_table_name("wg-a.b"), "mesh_wg_a_b");
}

TEST(ApplyNft, CompilesRulesIntoSets) {
  auto s = firewall_script("wg0", {rule({"100.64.0.2/32"}, "tcp", {{22, 22}, {8000, 8080}}),
                                   rule({"100.64.0.0/10"}, "icmp", {}),
                                   rule({"fd00::5/128"}, "udp", {}),
                                   rule({"100.64.0.9/32"}, "any", {})});
  EXPECT_EQ(s.table, "mesh_wg0");
  EXPECT_NE(s.body.find("elements = { 100.64.0.2/32 . 22,\n      100.64.0.2/32 . 8000-8080 }"),
            std::string::npos)
      << s.body;
  EXPECT_NE(s.body.find("fd00::5/128 . 1-65535"), std::string::npos);
  EXPECT_NE(s.body.find("elements = { 100.64.0.0/10 }"), std::string::npos);
  EXPECT_NE(s.body.find("elements = { 100.64.0.9/32 }"), std::string::npos);
  EXPECT_NE(s.body.find("iifname \"wg0\" jump mesh_in"), std::string::npos);
  EXPECT_NE(s.body.find("ct state established,related accept"), std::string::npos);
  EXPECT_EQ(s.digest.size(), 64u);
}

TEST(ApplyNft, OverlapsAreNormalised) {
  auto s = firewall_script("wg0", {rule({"100.64.0.0/24", "100.64.0.5/32"}, "any", {}),
                                   rule({"100.64.1.0/24"}, "tcp", {{20, 30}}),
                                   rule({"100.64.1.0/24"}, "tcp", {{25, 40}}),
                                   rule({"100.64.1.7/32"}, "tcp", {{10, 50}}),
                                   rule({"100.64.0.5/32"}, "tcp", {{80, 80}})});
  // The /32 inside the /24 "any" is dropped; port ranges merged; the nested
  // /32 keeps only what its /24 does not already allow.
  EXPECT_NE(s.body.find("elements = { 100.64.0.0/24 }"), std::string::npos) << s.body;
  EXPECT_NE(s.body.find("100.64.1.0/24 . 20-40"), std::string::npos) << s.body;
  EXPECT_NE(s.body.find("100.64.1.7/32 . 10-19"), std::string::npos) << s.body;
  EXPECT_NE(s.body.find("100.64.1.7/32 . 41-50"), std::string::npos) << s.body;
  EXPECT_EQ(s.body.find("100.64.0.5/32 . 80"), std::string::npos) << s.body;
}

TEST(ApplyNft, DigestIsStableAndSensitive) {
  auto a = firewall_script("wg0", {rule({"100.64.0.2/32"}, "tcp", {{22, 22}})});
  auto b = firewall_script("wg0", {rule({"100.64.0.2/32"}, "tcp", {{22, 22}})});
  auto c = firewall_script("wg0", {rule({"100.64.0.2/32"}, "tcp", {{23, 23}})});
  auto d = firewall_script("wg1", {rule({"100.64.0.2/32"}, "tcp", {{22, 22}})});
  EXPECT_EQ(a.digest, b.digest);
  EXPECT_NE(a.digest, c.digest);
  EXPECT_NE(a.digest, d.digest);
}

TEST(ApplyNft, TransactionReplacesAtomically) {
  auto s = firewall_script("wg0", {});
  std::string t = firewall_transaction(s);
  EXPECT_EQ(t.rfind("add table inet mesh_wg0\ndelete table inet mesh_wg0\ntable inet mesh_wg0 {\n"
                    "  comment \"mesh-apply sha256:" + s.digest + "\"\n", 0),
            0u)
      << t;
}

}  // namespace
}  // namespace mesh::apply
