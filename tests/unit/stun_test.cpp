#include "stun/stun.h"

#include <gtest/gtest.h>

#include <cstring>
#include <sstream>
#include <vector>

namespace mesh::stun {
namespace {

std::vector<uint8_t> hex(const char* s) {
  std::vector<uint8_t> out;
  std::istringstream in(s);
  unsigned v;
  while (in >> std::hex >> v) out.push_back(static_cast<uint8_t>(v));
  return out;
}

Bytes str(const char* s) { return {reinterpret_cast<const uint8_t*>(s), std::strlen(s)}; }

// RFC 5769 section 2.1: sample request with short-term credentials.
const char* kSampleRequest =
    "00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae "
    "80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74 "
    "00 24 00 04 6e 00 01 ff "
    "80 29 00 08 93 2f f9 b1 51 26 3b 36 "
    "00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20 "
    "00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2 "
    "80 28 00 04 e5 7a 3b cf";

TEST(Stun, Rfc5769SampleRequestIntegrityAndFingerprint) {
  auto pkt = hex(kSampleRequest);
  ASSERT_TRUE(looks_like_stun(pkt));
  auto m = parse(pkt);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->method, kBinding);
  EXPECT_EQ(m->cls, kRequest);
  ASSERT_NE(m->find(kUsername), nullptr);
  EXPECT_EQ(as_string(*m->find(kUsername)), "evtj:h6vY");
  EXPECT_EQ(as_string(*m->find(kSoftware)), "STUN test client");
  EXPECT_TRUE(check_integrity(*m, str("VOkJxbRl1RmTxUk/WvJxBt")));
  EXPECT_FALSE(check_integrity(*m, str("VOkJxbRl1RmTxUk/WvJxBu")));
}

TEST(Stun, FingerprintMismatchIsRejected) {
  auto pkt = hex(kSampleRequest);
  pkt.back() ^= 1;
  EXPECT_FALSE(parse(pkt).is_ok());
}

TEST(Stun, BuildAndParseRoundTrip) {
  uint8_t buf[512];
  TxId tx = random_txid();
  SockAddr a = *SockAddr::parse("203.0.113.7:40000");
  SockAddr b = *SockAddr::parse("[2001:db8::1]:3478");
  Builder bl(buf, kBinding, kSuccess, tx);
  bl.add_xor_address(kXorMappedAddress, a).add_address(kOtherAddress, b).add_string(kSoftware, "mesh");
  bl.add_integrity(str("secret")).add_fingerprint();
  ASSERT_TRUE(bl.ok());
  auto m = parse(bl.finish());
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->cls, kSuccess);
  EXPECT_EQ(m->tx, tx);
  EXPECT_EQ(*decode_xor_address(*m->find(kXorMappedAddress), tx), a);
  EXPECT_EQ(*decode_address(*m->find(kOtherAddress)), b);
  EXPECT_TRUE(check_integrity(*m, str("secret")));
}

TEST(Stun, BuilderOverflowIsReported) {
  uint8_t buf[24];
  Builder bl(buf, kBinding, kRequest, random_txid());
  bl.add_string(kSoftware, "too long for the buffer");
  EXPECT_FALSE(bl.ok());
  EXPECT_TRUE(bl.finish().empty());
}

}  // namespace
}  // namespace mesh::stun
