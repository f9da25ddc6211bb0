// OpenID Connect for the coordinator (man/mesh-coord.8, LOGIN): the
// issuer's discovery document, its JWKS, and ID token verification
// (OpenID Connect Core 1.0, section 3.1.3.7) with OpenSSL's EVP: RS256 and
// ES256 signatures (RFC 7518), JWKs (RFC 7517) turned into EVP_PKEYs by
// EVP_PKEY_fromdata; no hand-rolled crypto.
//
// The parsing and checking are pure functions (unit-tested with keys made
// by OpenSSL in the test); Issuer adds the HTTP fetches and the JWKS cache,
// refetched when a token names an unknown key id, at most once per
// kJwksRefetchSeconds.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"
#include "core/log.h"
#include "core/status.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace mesh::coord::oidc {

// A verification key from a JWKS. Only RSA (RS256) and EC P-256 (ES256)
// signing keys are kept; others are skipped.
struct Jwk {
  std::string kid, kty, alg;  // alg may be empty (any the kty allows)
  std::shared_ptr<EVP_PKEY> key;
};

// A compact JWS split and decoded, not yet verified.
struct Jwt {
  Json header, payload;
  std::string alg, kid;
  std::string signing_input;     // BASE64URL(header) "." BASE64URL(payload)
  std::vector<uint8_t> signature;
};

// What a verified token says about its user.
struct Identity {
  std::string issuer, subject, email, name;
  std::vector<std::string> groups;
  int64_t issued_at = 0, expires_at = 0;
  Json to_json() const;
};

struct Expect {
  std::string issuer;     // exact match with "iss"
  std::string audience;   // the client id: in "aud" (and "azp" when aud has several)
  int64_t now = 0;        // unix seconds
  int64_t skew = 60;      // clock skew allowed for exp and iat
  std::optional<std::string> nonce;  // required and compared when set
  std::string groups_claim = "groups";
};

// j[name] when j is an object and that member a string; else "".
std::string str_field(const Json& j, const char* name);

// Errors are Exit::NoPerm for a token that is not acceptable (with the
// reason: "token expired", "issuer ... is not ...") and Exit::DataErr for
// one that is not a JWT at all.
Result<Jwt> parse_jwt(std::string_view token);
Result<std::vector<Jwk>> parse_jwks(const Json& jwks);
Result<Jwk> parse_jwk(const Json& jwk);
Status verify_signature(const Jwt& t, const Jwk& k);
Result<Identity> check_claims(const Jwt& t, const Expect& e);
// The key among `keys` a token names: by kid, or the only key for its alg
// when the token has no kid. nullptr when there is none.
const Jwk* find_key(const std::vector<Jwk>& keys, const Jwt& t);
// Signature, then claims, against a key set (no fetching).
Result<Identity> verify_id_token(std::string_view token, const std::vector<Jwk>& keys,
                                 const Expect& e);

// ECDSA signatures: JWS carries R||S (RFC 7518 3.4), OpenSSL DER.
Result<std::vector<uint8_t>> ecdsa_raw_to_der(const std::vector<uint8_t>& raw);
Result<std::vector<uint8_t>> ecdsa_der_to_raw(const std::vector<uint8_t>& der);

// Minimal HTTP(S) for the IdP (cpp-httplib): JSON responses up to 1 MiB.
// Unreachable -> Exit::Unavailable; non-2xx -> the IdP's error document.
struct HttpReply {
  int status = 0;
  Json body;
};
Result<HttpReply> http_get_json(const std::string& url, const std::string& ca_file);
Result<HttpReply> http_post_form(const std::string& url,
                                 const std::vector<std::pair<std::string, std::string>>& form,
                                 const std::string& ca_file);

struct Discovery {
  std::string issuer, jwks_uri, token_endpoint, device_authorization_endpoint,
      authorization_endpoint;
  static Result<Discovery> from_json(const Json& j, const std::string& expected_issuer);
};
// GET ISSUER/.well-known/openid-configuration; "issuer" must equal ISSUER.
Result<Discovery> discover(const std::string& issuer, const std::string& ca_file);

inline constexpr int64_t kJwksRefetchSeconds = 10;

// One issuer as the coordinator trusts it: discovery and JWKS fetched on
// first use and cached; thread-safe.
class Issuer {
 public:
  Issuer(std::string issuer, std::string client_id, std::string groups_claim, std::string ca_file,
         const Log& log)
      : issuer_(std::move(issuer)), client_id_(std::move(client_id)),
        groups_claim_(std::move(groups_claim)), ca_file_(std::move(ca_file)), log_(log) {}

  const std::string& issuer() const { return issuer_; }
  const std::string& client_id() const { return client_id_; }
  // The discovery document (fetched now when not yet cached).
  Result<Discovery> discovery();
  // Fetches discovery and the JWKS now (at start, to fail early).
  Status refresh(int64_t now);
  // Verifies an ID token; refetches the JWKS once when its kid is unknown.
  Result<Identity> verify(std::string_view token, int64_t now,
                          const std::optional<std::string>& nonce = std::nullopt);

 private:
  Status fetch_locked(int64_t now);
  std::string issuer_, client_id_, groups_claim_, ca_file_;
  const Log& log_;
  std::mutex mu_;
  std::optional<Discovery> disc_;
  std::vector<Jwk> keys_;
  int64_t fetched_at_ = 0;  // last fetch attempt
  bool fetched_ = false;
};

}  // namespace mesh::coord::oidc
