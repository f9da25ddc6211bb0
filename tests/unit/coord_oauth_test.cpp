// The pure parts of a login's OAuth flows (coord/oauth.h): PKCE (RFC 7636
// Appendix B's vector), the authorization URL, the redirect's query and its
// state check, loopback redirect URIs, and the coordinator's bounded,
// node-bound pending device logins.
#include <gtest/gtest.h>

#include "coord/oauth.h"
#include "core/base64.h"

using namespace mesh;
using namespace mesh::coord;
using namespace mesh::coord::oauth;

TEST(CoordOauth, PkceChallengeIsRfc7636AppendixB) {
  EXPECT_EQ(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  std::string v = pkce_verifier();
  EXPECT_EQ(v.size(), 43u);  // 32 bytes, base64url without padding
  EXPECT_EQ(v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            std::string::npos);
  EXPECT_NE(v, pkce_verifier());
}

TEST(CoordOauth, AuthorizationUrlEncodesEveryParameter) {
  AuthRequest r{"mesh", "http://127.0.0.1:5000/callback", "openid email", "s&t", "n=1", "abc"};
  EXPECT_EQ(authorization_url("https://idp.example/auth", r),
            "https://idp.example/auth?response_type=code&client_id=mesh"
            "&redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcallback&scope=openid%20email"
            "&state=s%26t&nonce=n%3D1&code_challenge=abc&code_challenge_method=S256");
  EXPECT_EQ(authorization_url("https://idp.example/auth?tenant=x", r).substr(0, 46),
            "https://idp.example/auth?tenant=x&response_typ");
}

TEST(CoordOauth, RedirectQueryIsDecodedAndStrict) {
  auto r = parse_redirect_query("code=a%2Fb+c&state=xyz&iss=http%3A%2F%2Fidp&session_state=1");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(r->code, "a/b c");
  EXPECT_EQ(r->state, "xyz");
  auto e = parse_redirect_query("error=access_denied&error_description=End-User%20aborted&state=s");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, "access_denied");
  EXPECT_EQ(e->error_description, "End-User aborted");
  EXPECT_FALSE(parse_redirect_query("code=1&code=2"));   // ambiguous
  EXPECT_FALSE(parse_redirect_query("code=%zz"));        // bad escape
  EXPECT_FALSE(parse_redirect_query("code=%4"));
  auto empty = parse_redirect_query("");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->code.empty());
}

TEST(CoordOauth, StateMustMatchBeforeAnythingElse) {
  Redirect ok{"the-code", "s1", "", ""};
  auto c = check_redirect(ok, "s1");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, "the-code");
  auto other = check_redirect(ok, "s2");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.status().code(), Exit::NoPerm);
  EXPECT_NE(other.status().message().find("state does not match"), std::string::npos);
  EXPECT_FALSE(check_redirect(Redirect{"the-code", "", "", ""}, ""));  // no state is no match
  // The provider's error, with our state: the person said no.
  auto denied = check_redirect(Redirect{"", "s1", "access_denied", ""}, "s1");
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.status().code(), Exit::NoPerm);
  EXPECT_NE(denied.status().message().find("denied"), std::string::npos);
  // An error with another state is a forgery first.
  auto forged = check_redirect(Redirect{"", "x", "access_denied", ""}, "s1");
  EXPECT_NE(forged.status().message().find("state"), std::string::npos);
  auto nocode = check_redirect(Redirect{"", "s1", "", ""}, "s1");
  ASSERT_FALSE(nocode);
  EXPECT_EQ(nocode.status().code(), Exit::DataErr);
}

TEST(CoordOauth, LoopbackRedirectUris) {
  EXPECT_TRUE(loopback_redirect_uri("http://127.0.0.1:49152/callback"));
  EXPECT_TRUE(loopback_redirect_uri("http://[::1]:8080/cb"));
  EXPECT_FALSE(loopback_redirect_uri("https://127.0.0.1:49152/callback"));
  EXPECT_FALSE(loopback_redirect_uri("http://127.0.0.1.example:1/callback"));
  EXPECT_FALSE(loopback_redirect_uri("http://127.0.0.1:/callback"));
  EXPECT_FALSE(loopback_redirect_uri("http://127.0.0.1:80"));
  EXPECT_FALSE(loopback_redirect_uri("http://127.0.0.1:123456/x"));
  EXPECT_FALSE(loopback_redirect_uri("http://192.0.2.1:80/callback"));
}

TEST(CoordOauth, PendingLoginsAreBoundToTheirNodeAndBounded) {
  PendingLogins p(3, 2);
  auto a = SecretKey::generate_private().public_key();
  auto b = SecretKey::generate_private().public_key();
  auto c = SecretKey::generate_private().public_key();
  DeviceAuth auth;
  auth.device_code = "dc";
  auth.interval = 5;
  auth.expires_in = 600;
  auto ha = p.add(a, "192.0.2.1", auth, 1000);
  ASSERT_TRUE(ha);
  EXPECT_EQ(ha->size(), 43u);
  ASSERT_NE(p.find(*ha, a, 1000), nullptr);
  EXPECT_EQ(p.find(*ha, a, 1000)->next_poll_at, 1005);
  EXPECT_EQ(p.find(*ha, b, 1000), nullptr);  // another node's handle is no handle
  EXPECT_EQ(p.find("guess", a, 1000), nullptr);
  // A node's new login replaces its own.
  auto ha2 = p.add(a, "192.0.2.1", auth, 1001);
  ASSERT_TRUE(ha2);
  EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(p.find(*ha, a, 1001), nullptr);
  // Two per source, three in all.
  ASSERT_TRUE(p.add(b, "192.0.2.1", auth, 1002));
  auto full = p.add(c, "192.0.2.1", auth, 1002);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.status().code(), Exit::TempFail);
  ASSERT_TRUE(p.add(c, "192.0.2.2", auth, 1002));
  EXPECT_FALSE(p.add(SecretKey::generate_private().public_key(), "192.0.2.3", auth, 1002));
  // Expiry: the provider's, at most kMaxDeviceSeconds.
  EXPECT_NE(p.find(*ha2, a, 1600), nullptr);
  EXPECT_EQ(p.find(*ha2, a, 1601), nullptr);
  auth.expires_in = 86400;
  auto hl = p.add(a, "192.0.2.9", auth, 2000);
  ASSERT_TRUE(hl);
  EXPECT_EQ(p.find(*hl, a, 2000 + kMaxDeviceSeconds), nullptr);
}

TEST(CoordOauth, NonceMustBeThisLogins) {
  auto b64 = [](const std::string& s) {
    return base64url_encode(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  std::string tok = b64(R"({"alg":"RS256"})") + "." + b64(R"({"sub":"a","nonce":"n1"})") + "." + b64("sig");
  EXPECT_TRUE(check_nonce(tok, "n1"));
  auto other = check_nonce(tok, "n2");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.code(), Exit::NoPerm);
  std::string none = b64(R"({"alg":"RS256"})") + "." + b64(R"({"sub":"a"})") + "." + b64("sig");
  EXPECT_FALSE(check_nonce(none, "n1"));
  EXPECT_FALSE(check_nonce("not-a-jwt", "n1"));
}
