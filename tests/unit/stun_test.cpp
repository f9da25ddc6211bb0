#include "stun/stun.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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


// RFC 5769 section 2.2: sample IPv4 response (SOFTWARE padded with spaces).
const char* kSampleResponseV4 =
    "01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae "
    "80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 "
    "00 20 00 08 00 01 a1 47 e1 12 a6 43 "
    "00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7 "
    "80 28 00 04 c0 7d 4c 96";

// RFC 5769 section 2.3: sample IPv6 response.
const char* kSampleResponseV6 =
    "01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae "
    "80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 "
    "00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9 "
    "00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41 "
    "80 28 00 04 c8 fb 0b 4c";

// RFC 5769 section 2.4: request with long-term authentication (no FINGERPRINT).
const char* kSampleRequestLongTerm =
    "00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e "
    "00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00 "
    "00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41 "
    "00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00 "
    "00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

const TxId kSampleTx = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};

TEST(Stun, Rfc5769SampleIpv4Response) {
  auto pkt = hex(kSampleResponseV4);
  ASSERT_TRUE(looks_like_stun(pkt));
  auto m = parse(pkt);  // also verifies FINGERPRINT
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->method, kBinding);
  EXPECT_EQ(m->cls, kSuccess);
  EXPECT_EQ(m->tx, kSampleTx);
  EXPECT_EQ(as_string(*m->find(kSoftware)), "test vector");
  auto a = decode_xor_address(*m->find(kXorMappedAddress), m->tx);
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->to_string(), "192.0.2.1:32853");
  EXPECT_TRUE(check_integrity(*m, str("VOkJxbRl1RmTxUk/WvJxBt")));
  EXPECT_FALSE(check_integrity(*m, str("VOkJxbRl1RmTxUk/WvJxBx")));
}

TEST(Stun, Rfc5769SampleIpv6Response) {
  auto pkt = hex(kSampleResponseV6);
  auto m = parse(pkt);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->cls, kSuccess);
  auto a = decode_xor_address(*m->find(kXorMappedAddress), m->tx);
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->to_string(), "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
  EXPECT_TRUE(check_integrity(*m, str("VOkJxbRl1RmTxUk/WvJxBt")));
  // The XOR with the transaction id matters for IPv6: a different id gives
  // a different address.
  TxId other = m->tx;
  other[11] ^= 1;
  EXPECT_NE(*decode_xor_address(*m->find(kXorMappedAddress), other), *a);
}

TEST(Stun, Rfc5769SampleRequestLongTermCredentials) {
  auto pkt = hex(kSampleRequestLongTerm);
  auto m = parse(pkt);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->cls, kRequest);
  EXPECT_EQ(m->fingerprint_offset, 0);
  // Username U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9 in UTF-8; the
  // password after SASLprep is "TheMatrIX" (RFC 5769 section 2.4).
  const std::string user = "\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9";
  EXPECT_EQ(as_string(*m->find(kUsername)), user);
  EXPECT_EQ(as_string(*m->find(kNonce)), "f//499k954d6OL34oL9FSTvy64sA");
  EXPECT_EQ(as_string(*m->find(kRealm)), "example.org");
  auto key = long_term_key(user, "example.org", "TheMatrIX");
  EXPECT_TRUE(check_integrity(*m, key));
  auto wrong = long_term_key(user, "example.org", "TheMatrix");
  EXPECT_FALSE(check_integrity(*m, wrong));
}

TEST(Stun, IntegrityVerifiesWithoutFingerprint) {
  // MESSAGE-INTEGRITY is computed with the length field pointing at its
  // own end (RFC 8489 section 14.5): removing the trailing FINGERPRINT (and
  // fixing the length) leaves it valid.
  auto pkt = hex(kSampleResponseV4);
  pkt.resize(pkt.size() - 8);  // drop FINGERPRINT
  pkt[3] = static_cast<uint8_t>(pkt.size() - 20);
  auto m = parse(pkt);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_TRUE(check_integrity(*m, str("VOkJxbRl1RmTxUk/WvJxBt")));
}

std::vector<uint8_t> data_file(const std::string& name) {
  std::ifstream in(std::filesystem::path(MESH_TESTDATA) / name, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Replies of a real server, coturn 4.6.1 in STUN-only mode with RFC 5780,
// captured by tests/unit/data/capture-coturn.sh.
TEST(Stun, CapturedCoturnIpv4BindingResponse) {
  auto pkt = data_file("coturn-success-v4-from3478.bin");
  ASSERT_EQ(pkt.size(), 100u);
  auto m = parse(pkt);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->method, kBinding);
  EXPECT_EQ(m->cls, kSuccess);
  EXPECT_NE(m->fingerprint_offset, 0);  // and it verified
  EXPECT_EQ(decode_xor_address(*m->find(kXorMappedAddress), m->tx)->to_string(), "203.0.113.1:40000");
  EXPECT_EQ(decode_address(*m->find(kMappedAddress))->to_string(), "203.0.113.1:40000");
  EXPECT_EQ(decode_address(*m->find(kResponseOrigin))->to_string(), "203.0.113.1:3478");
  EXPECT_EQ(decode_address(*m->find(kOtherAddress))->to_string(), "203.0.113.2:3479");
  EXPECT_EQ(as_string(*m->find(kSoftware)).substr(0, 7), "Coturn-");
}

TEST(Stun, CapturedCoturnChangeRequestAnswer) {
  // The answer to CHANGE-REQUEST(change IP and port), from the other address.
  auto pkt = data_file("coturn-success-v4-from3479.bin");
  auto m = parse(pkt);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->fingerprint_offset, 0);
  EXPECT_EQ(decode_address(*m->find(kResponseOrigin))->to_string(), "203.0.113.2:3479");
  EXPECT_EQ(decode_xor_address(*m->find(kXorMappedAddress), m->tx)->ip.to_string(), "203.0.113.1");
}

TEST(Stun, CapturedCoturnIpv6BindingResponses) {
  for (const char* f : {"coturn-success-v6-from3478.bin", "coturn-success-v6-from3479.bin"}) {
    auto pkt = data_file(f);
    auto m = parse(pkt);
    ASSERT_TRUE(m.is_ok()) << f << ": " << m.status().message();
    auto a = decode_xor_address(*m->find(kXorMappedAddress), m->tx);
    ASSERT_TRUE(a.is_ok()) << f;
    EXPECT_EQ(a->to_string(), "[2001:db8::1]:40006") << f;
    EXPECT_EQ(*a, *decode_address(*m->find(kMappedAddress))) << f;
  }
}

TEST(Stun, TruncationsOfCapturedRepliesAreRejected) {
  auto pkt = data_file("coturn-success-v4-from3478.bin");
  ASSERT_FALSE(pkt.empty());
  for (size_t n = 0; n < pkt.size(); ++n) {
    std::vector<uint8_t> cut(pkt.begin(), pkt.begin() + static_cast<long>(n));
    EXPECT_FALSE(parse(cut).is_ok()) << n;
  }
}

TEST(Stun, AddressDecodersRejectBadLengthsAndFamilies) {
  uint8_t v4bad[7] = {0, 1, 0, 1, 1, 2, 3};
  uint8_t fam3[8] = {0, 3, 0, 1, 1, 2, 3, 4};
  uint8_t v6short[8] = {0, 2, 0, 1, 1, 2, 3, 4};
  TxId tx{};
  for (Bytes b : {Bytes(v4bad), Bytes(fam3), Bytes(v6short), Bytes()}) {
    Attribute a{kXorMappedAddress, 20, b};
    EXPECT_FALSE(decode_address(a).is_ok());
    EXPECT_FALSE(decode_xor_address(a, tx).is_ok());
  }
}

TEST(Stun, StreamFramesAreCutAsRfc8656Section12_5Says) {
  using K = stun::StreamFrame::Kind;
  // ChannelData: 5 bytes of data, padded to 8 on a stream.
  const uint8_t chan[] = {0x40, 0x01, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0xff};
  auto f = stun::next_stream_frame({chan, 12});
  EXPECT_EQ(f.kind, K::ChannelData);
  EXPECT_EQ(f.size, 12u);
  EXPECT_EQ(f.length, 9u);
  EXPECT_EQ(stun::next_stream_frame({chan, 11}).kind, K::Incomplete);
  EXPECT_EQ(stun::next_stream_frame({chan, 3}).kind, K::Incomplete);
  // STUN: 20-byte header plus the length field; no padding beyond it.
  uint8_t msg[24] = {0x00, 0x01, 0x00, 0x04};
  f = stun::next_stream_frame({msg, 24});
  EXPECT_EQ(f.kind, K::Stun);
  EXPECT_EQ(f.size, 24u);
  EXPECT_EQ(f.length, 24u);
  EXPECT_EQ(stun::next_stream_frame({msg, 19}).kind, K::Incomplete);
  // First two bits 10 or 11: not TURN.
  const uint8_t bad[] = {0x80, 0, 0, 0};
  EXPECT_EQ(stun::next_stream_frame({bad, 4}).kind, K::Invalid);
}

}  // namespace
}  // namespace mesh::stun
