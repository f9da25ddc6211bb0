// ID token verification (coord/oidc.h) with keys OpenSSL makes here: the
// tokens are signed by OpenSSL's EVP, the JWKs carry the keys' real
// parameters, and every refusal names its reason.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "coord/oidc.h"
#include "core/base64.h"

namespace mesh::coord::oidc {
namespace {

constexpr int64_t kNow = 1800000000;
const char* kIss = "https://idp.example.com";

std::string b64u(const std::string& s) {
  return base64url_encode({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}
std::string b64u(const std::vector<uint8_t>& v) { return base64url_encode(v); }

std::vector<uint8_t> bn_param(EVP_PKEY* k, const char* name) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(k, name, &bn), 1);
  std::vector<uint8_t> out(static_cast<size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, out.data());
  BN_free(bn);
  return out;
}

struct TestKey {
  std::shared_ptr<EVP_PKEY> pkey;
  std::string alg, kid;
  Json jwk;

  static TestKey rsa(const std::string& kid) {
    TestKey t{std::shared_ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}),
                                        EVP_PKEY_free),
              "RS256", kid, {}};
    t.jwk = {{"kty", "RSA"}, {"kid", kid}, {"use", "sig"}, {"alg", "RS256"},
             {"n", b64u(bn_param(t.pkey.get(), OSSL_PKEY_PARAM_RSA_N))},
             {"e", b64u(bn_param(t.pkey.get(), OSSL_PKEY_PARAM_RSA_E))}};
    return t;
  }
  static TestKey ec(const std::string& kid) {
    TestKey t{std::shared_ptr<EVP_PKEY>(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"),
                                        EVP_PKEY_free),
              "ES256", kid, {}};
    std::vector<uint8_t> pt(65);
    size_t len = 0;
    EXPECT_EQ(EVP_PKEY_get_octet_string_param(t.pkey.get(), OSSL_PKEY_PARAM_PUB_KEY, pt.data(),
                                              pt.size(), &len), 1);
    EXPECT_EQ(len, 65u);
    t.jwk = {{"kty", "EC"}, {"kid", kid}, {"crv", "P-256"},
             {"x", b64u(std::vector<uint8_t>(pt.begin() + 1, pt.begin() + 33))},
             {"y", b64u(std::vector<uint8_t>(pt.begin() + 33, pt.end()))}};
    return t;
  }

  std::string sign(const Json& payload, Json header = Json::object()) const {
    if (!header.contains("alg")) header["alg"] = alg;
    if (!header.contains("kid")) header["kid"] = kid;
    std::string input = b64u(header.dump()) + "." + b64u(payload.dump());
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    EXPECT_EQ(EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, pkey.get()), 1);
    size_t len = 0;
    EVP_DigestSign(md, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                   input.size());
    std::vector<uint8_t> sig(len);
    EXPECT_EQ(EVP_DigestSign(md, sig.data(), &len,
                             reinterpret_cast<const unsigned char*>(input.data()), input.size()), 1);
    sig.resize(len);
    EVP_MD_CTX_free(md);
    if (alg == "ES256") sig = *ecdsa_der_to_raw(sig);
    return input + "." + b64u(sig);
  }
};

Json claims() {
  return Json{{"iss", kIss}, {"sub", "alice"}, {"aud", "mesh"}, {"iat", kNow - 10},
              {"exp", kNow + 600}, {"email", "alice@example.com"}, {"name", "Alice"},
              {"groups", {"eng", "ops"}}};
}

Expect expect() {
  Expect e;
  e.issuer = kIss;
  e.audience = "mesh";
  e.now = kNow;
  return e;
}

class Oidc : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new TestKey(TestKey::rsa("r1"));
    ec_ = new TestKey(TestKey::ec("e1"));
    other_ = new TestKey(TestKey::rsa("r1"));  // same kid, another key
  }
  static void TearDownTestSuite() {
    delete rsa_;
    delete ec_;
    delete other_;
  }
  std::vector<Jwk> keys() const {
    auto k = parse_jwks(Json{{"keys", {rsa_->jwk, ec_->jwk}}});
    EXPECT_TRUE(k) << k.status().message();
    return *k;
  }
  static TestKey *rsa_, *ec_, *other_;
};
TestKey *Oidc::rsa_, *Oidc::ec_, *Oidc::other_;

TEST_F(Oidc, AcceptsRs256AndEs256) {
  for (const TestKey* k : {rsa_, ec_}) {
    auto id = verify_id_token(k->sign(claims()), keys(), expect());
    ASSERT_TRUE(id) << k->alg << ": " << id.status().message();
    EXPECT_EQ(id->subject, "alice");
    EXPECT_EQ(id->email, "alice@example.com");
    EXPECT_EQ(id->name, "Alice");
    EXPECT_EQ(id->groups, (std::vector<std::string>{"eng", "ops"}));
    EXPECT_EQ(id->expires_at, kNow + 600);
  }
}

TEST_F(Oidc, RefusesBadSignatures) {
  // Signed by another key under the same kid.
  auto r = verify_id_token(other_->sign(claims()), keys(), expect());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Exit::NoPerm);
  EXPECT_NE(r.status().message().find("bad signature"), std::string::npos);
  // One flipped bit in the payload.
  std::string t = rsa_->sign(claims());
  Json altered = claims();
  altered["groups"] = {"admins"};
  std::string forged = t.substr(0, t.find('.')) + "." + b64u(altered.dump()) + t.substr(t.rfind('.'));
  EXPECT_FALSE(verify_id_token(forged, keys(), expect()));
  // ES256 signature of the wrong length.
  std::string e = ec_->sign(claims());
  EXPECT_FALSE(verify_id_token(e.substr(0, e.size() - 4), keys(), expect()));
}

TEST_F(Oidc, RefusesAlgorithmsOutsideRs256Es256) {
  Json h{{"alg", "none"}, {"kid", "r1"}};
  std::string none = b64u(h.dump()) + "." + b64u(claims().dump()) + ".";
  auto r = verify_id_token(none, keys(), expect());
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("'none' is not accepted"), std::string::npos);
  // An RSA key presented as ES256 (algorithm confusion).
  Json t = claims();
  auto conf = verify_id_token(ec_->sign(t, Json{{"alg", "ES256"}, {"kid", "r1"}}), keys(), expect());
  ASSERT_FALSE(conf);
  EXPECT_NE(conf.status().message().find("does not match"), std::string::npos);
}

TEST_F(Oidc, RefusesUnknownKid) {
  auto r = verify_id_token(rsa_->sign(claims(), Json{{"kid", "nope"}}), keys(), expect());
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("'nope' is not in the issuer's JWKS"), std::string::npos);
}

TEST_F(Oidc, ChecksClaims) {
  struct Case {
    const char* what;
    std::function<void(Json&)> edit;
    const char* error;
  };
  std::vector<Case> cases = {
      {"issuer", [](Json& j) { j["iss"] = "https://evil.example.com"; }, "is not the configured issuer"},
      {"audience", [](Json& j) { j["aud"] = "other"; }, "does not include this coordinator's client id"},
      {"audiences without azp", [](Json& j) { j["aud"] = {"mesh", "other"}; }, "\"azp\""},
      {"expired", [](Json& j) { j["exp"] = kNow - 61; }, "token expired at"},
      {"future iat", [](Json& j) { j["iat"] = kNow + 3600; }, "issued in the future"},
      {"no exp", [](Json& j) { j.erase("exp"); }, "no \"exp\""},
      {"no sub", [](Json& j) { j.erase("sub"); }, "\"sub\""},
      {"groups", [](Json& j) { j["groups"] = 5; }, "neither a string nor a list"},
  };
  for (const auto& c : cases) {
    Json j = claims();
    c.edit(j);
    auto r = verify_id_token(rsa_->sign(j), keys(), expect());
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.status().code(), Exit::NoPerm) << c.what;
    EXPECT_NE(r.status().message().find(c.error), std::string::npos)
        << c.what << ": " << r.status().message();
  }
  // Within the skew, and several audiences with azp, are fine.
  Json j = claims();
  j["exp"] = kNow - 30;
  j["aud"] = {"mesh", "other"};
  j["azp"] = "mesh";
  EXPECT_TRUE(verify_id_token(rsa_->sign(j), keys(), expect()));
}

TEST_F(Oidc, ChecksNonceWhenTheFlowHasOne) {
  Expect e = expect();
  e.nonce = "n-1";
  Json j = claims();
  EXPECT_FALSE(verify_id_token(rsa_->sign(j), keys(), e));
  j["nonce"] = "n-2";
  EXPECT_FALSE(verify_id_token(rsa_->sign(j), keys(), e));
  j["nonce"] = "n-1";
  EXPECT_TRUE(verify_id_token(rsa_->sign(j), keys(), e));
}

TEST_F(Oidc, GroupsClaimIsConfigurable) {
  Expect e = expect();
  e.groups_claim = "roles";
  Json j = claims();
  j["roles"] = "admins";
  auto id = verify_id_token(rsa_->sign(j), keys(), e);
  ASSERT_TRUE(id);
  EXPECT_EQ(id->groups, std::vector<std::string>{"admins"});
}

TEST_F(Oidc, ParsesOnlyWellFormedTokens) {
  for (const char* bad : {"", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30"}) {
    auto r = parse_jwt(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.status().code(), Exit::DataErr) << bad;
    }
  }
  auto crit = parse_jwt(b64u(R"({"alg":"RS256","crit":["x"]})") + "." + b64u("{}") + ".");
  EXPECT_FALSE(crit);
}

TEST_F(Oidc, JwksKeepsUsableKeysOnly) {
  Json small = rsa_->jwk;
  small["n"] = b64u(std::string(128, '\x01'));  // 1024-bit modulus
  Json off_curve = ec_->jwk;
  off_curve["kid"] = "bad";
  off_curve["y"] = b64u(std::string(32, '\x01'));
  Json sym{{"kty", "oct"}, {"k", "c2VjcmV0"}, {"kid", "h"}};
  Json enc = rsa_->jwk;
  enc["use"] = "enc";
  EXPECT_FALSE(parse_jwk(small));
  EXPECT_FALSE(parse_jwk(off_curve));
  EXPECT_FALSE(parse_jwk(sym));
  auto k = parse_jwks(Json{{"keys", {small, off_curve, sym, enc, ec_->jwk}}});
  ASSERT_TRUE(k);
  ASSERT_EQ(k->size(), 1u);
  EXPECT_EQ((*k)[0].kid, "e1");
  EXPECT_FALSE(parse_jwks(Json::array()));
}

TEST_F(Oidc, EcdsaSignatureConversionRoundTrips) {
  std::vector<uint8_t> raw(64);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<uint8_t>(i + 1);
  auto der = ecdsa_raw_to_der(raw);
  ASSERT_TRUE(der);
  EXPECT_EQ((*der)[0], 0x30);
  auto back = ecdsa_der_to_raw(*der);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, raw);
  EXPECT_FALSE(ecdsa_raw_to_der(std::vector<uint8_t>(63)));
}

TEST(OidcDiscovery, IssuerMustMatch) {
  Json d{{"issuer", kIss}, {"jwks_uri", std::string(kIss) + "/jwks"},
         {"token_endpoint", std::string(kIss) + "/token"}};
  EXPECT_TRUE(Discovery::from_json(d, kIss));
  EXPECT_FALSE(Discovery::from_json(d, "https://other.example.com"));
  d.erase("jwks_uri");
  EXPECT_FALSE(Discovery::from_json(d, kIss));
}

}  // namespace
}  // namespace mesh::coord::oidc
