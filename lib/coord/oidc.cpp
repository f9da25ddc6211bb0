#include "coord/oidc.h"

#include <httplib.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <nlohmann/json.hpp>

#include "core/base64.h"

namespace mesh::coord::oidc {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using BldPtr = std::unique_ptr<OSSL_PARAM_BLD, Deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, Deleter<OSSL_PARAM, OSSL_PARAM_free>>;
using CtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using MdPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using SigPtr = std::unique_ptr<ECDSA_SIG, Deleter<ECDSA_SIG, ECDSA_SIG_free>>;

Result<std::vector<uint8_t>> b64u_field(const Json& j, const char* name) {
  if (!j.contains(name) || !j[name].is_string())
    return data_error(std::string("jwk: \"") + name + "\" missing or not a string");
  auto v = base64url_decode(j[name].get<std::string>());
  if (!v) return data_error(std::string("jwk: \"") + name + "\": " + v.status().message());
  return *v;
}

std::shared_ptr<EVP_PKEY> from_params(const char* type, OSSL_PARAM_BLD* bld) {
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  if (!params) return nullptr;
  CtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* pk = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &pk, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0)
    return nullptr;
  return std::shared_ptr<EVP_PKEY>(pk, EVP_PKEY_free);
}

Result<std::shared_ptr<EVP_PKEY>> rsa_key(const Json& j) {
  MESH_ASSIGN(auto n, b64u_field(j, "n"));
  MESH_ASSIGN(auto e, b64u_field(j, "e"));
  // RFC 7518 3.3: RS256 keys are 2048 bits or larger.
  size_t lead = 0;
  while (lead < n.size() && n[lead] == 0) ++lead;
  if ((n.size() - lead) * 8 < 2048) return data_error("jwk: RSA modulus shorter than 2048 bits");
  if (n.size() > 2048 || e.empty() || e.size() > 8) return data_error("jwk: bad RSA key size");
  BnPtr bn(BN_bin2bn(n.data(), static_cast<int>(n.size()), nullptr));
  BnPtr be(BN_bin2bn(e.data(), static_cast<int>(e.size()), nullptr));
  BldPtr bld(OSSL_PARAM_BLD_new());
  if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, be.get()))
    return internal_error("jwk: OpenSSL cannot build the RSA parameters");
  auto pk = from_params("RSA", bld.get());
  if (!pk) return data_error("jwk: not a valid RSA public key");
  return pk;
}

Result<std::shared_ptr<EVP_PKEY>> ec_key(const Json& j) {
  if (str_field(j, "crv") != "P-256") return data_error("jwk: EC curve must be P-256");
  MESH_ASSIGN(auto x, b64u_field(j, "x"));
  MESH_ASSIGN(auto y, b64u_field(j, "y"));
  if (x.size() != 32 || y.size() != 32) return data_error("jwk: P-256 coordinates must be 32 bytes");
  std::vector<uint8_t> point{0x04};
  point.insert(point.end(), x.begin(), x.end());
  point.insert(point.end(), y.begin(), y.end());
  BldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                        point.size()))
    return internal_error("jwk: OpenSSL cannot build the EC parameters");
  // EVP_PKEY_fromdata checks the point is on the curve.
  auto pk = from_params("EC", bld.get());
  if (!pk) return data_error("jwk: not a valid P-256 public key");
  return pk;
}

bool alg_fits(const std::string& alg, const std::string& kty) {
  return (alg == "RS256" && kty == "RSA") || (alg == "ES256" && kty == "EC");
}

Result<int64_t> num_claim(const Json& p, const char* name) {
  if (!p.contains(name)) return no_permission(std::string("token has no \"") + name + "\" claim");
  const Json& v = p[name];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) return static_cast<int64_t>(v.get<double>());
  return no_permission(std::string("token claim \"") + name + "\" is not a number");
}

std::string fmt_time(int64_t t) {
  char buf[32];
  time_t tt = static_cast<time_t>(t);
  struct tm tm{};
  gmtime_r(&tt, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// "https://host:port/path" -> ("https://host:port", "/path").
Result<std::pair<std::string, std::string>> split_url(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos || (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0))
    return usage_error("not an http(s) URL: '" + url + "'");
  auto slash = url.find('/', scheme + 3);
  if (slash == std::string::npos) return std::pair{url, std::string("/")};
  return std::pair{url.substr(0, slash), url.substr(slash)};
}

Result<HttpReply> reply(const httplib::Result& res, const std::string& url) {
  if (!res) return unavailable("cannot reach " + url + ": " + httplib::to_string(res.error()));
  if (res->body.size() > (1u << 20)) return unavailable(url + ": response larger than 1 MiB");
  HttpReply r;
  r.status = res->status;
  auto j = parse_json(res->body, url);
  if (!j) {
    if (r.status / 100 != 2) return unavailable(url + ": HTTP " + std::to_string(r.status));
    return j.status();
  }
  r.body = std::move(*j);
  return r;
}

}  // namespace

std::string str_field(const Json& j, const char* name) {
  return j.is_object() && j.contains(name) && j[name].is_string() ? j[name].get<std::string>() : "";
}

Json Identity::to_json() const {
  return Json{{"issuer", issuer}, {"subject", subject}, {"email", email}, {"name", name},
              {"groups", groups}, {"issued_at", issued_at}, {"expires_at", expires_at}};
}

Result<Jwt> parse_jwt(std::string_view token) {
  if (token.size() > 65536) return data_error("token: longer than 64 KiB");
  auto d1 = token.find('.');
  auto d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return data_error("token: not a JWT (expected HEADER.PAYLOAD.SIGNATURE)");
  Jwt t;
  auto h = base64url_decode(token.substr(0, d1));
  auto p = base64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto s = base64url_decode(token.substr(d2 + 1));
  if (!h || !p || !s) return data_error("token: a part is not base64url");
  auto hj = parse_json(std::string_view(reinterpret_cast<const char*>(h->data()), h->size()),
                       "token header");
  if (!hj) return hj.status();
  auto pj = parse_json(std::string_view(reinterpret_cast<const char*>(p->data()), p->size()),
                       "token payload");
  if (!pj) return pj.status();
  if (!hj->is_object() || !pj->is_object()) return data_error("token: header and payload must be objects");
  t.header = std::move(*hj);
  t.payload = std::move(*pj);
  t.alg = str_field(t.header, "alg");
  t.kid = str_field(t.header, "kid");
  if (t.header.contains("crit"))
    return no_permission("token: header has \"crit\" extensions, which are not supported");
  t.signing_input = std::string(token.substr(0, d2));
  t.signature = std::move(*s);
  return t;
}

Result<Jwk> parse_jwk(const Json& j) {
  if (!j.is_object()) return data_error("jwk: not an object");
  Jwk k;
  k.kid = str_field(j, "kid");
  k.kty = str_field(j, "kty");
  k.alg = str_field(j, "alg");
  std::string use = str_field(j, "use");
  if (!use.empty() && use != "sig") return data_error("jwk: not a signing key (use " + use + ")");
  if (!k.alg.empty() && !alg_fits(k.alg, k.kty))
    return data_error("jwk: unsupported alg " + k.alg + " for kty " + k.kty);
  if (k.kty == "RSA") {
    MESH_ASSIGN(k.key, rsa_key(j));
  } else if (k.kty == "EC") {
    MESH_ASSIGN(k.key, ec_key(j));
  } else {
    return data_error("jwk: unsupported kty '" + k.kty + "' (RSA and EC P-256 are)");
  }
  return k;
}

Result<std::vector<Jwk>> parse_jwks(const Json& jwks) {
  if (!jwks.is_object() || !jwks.contains("keys") || !jwks["keys"].is_array())
    return data_error("jwks: expected {\"keys\": [...]}");
  std::vector<Jwk> out;
  for (const Json& j : jwks["keys"]) {
    auto k = parse_jwk(j);
    if (k) out.push_back(std::move(*k));  // keys we cannot use are skipped
  }
  return out;
}

Result<std::vector<uint8_t>> ecdsa_raw_to_der(const std::vector<uint8_t>& raw) {
  if (raw.size() != 64) return no_permission("bad signature (ES256 signatures are 64 bytes)");
  SigPtr sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(raw.data(), 32, nullptr);
  BIGNUM* s = BN_bin2bn(raw.data() + 32, 32, nullptr);
  if (!sig || !r || !s || !ECDSA_SIG_set0(sig.get(), r, s)) {
    BN_free(r);
    BN_free(s);
    return internal_error("OpenSSL cannot build an ECDSA signature");
  }
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return internal_error("OpenSSL cannot encode an ECDSA signature");
  std::vector<uint8_t> der(static_cast<size_t>(len));
  uint8_t* p = der.data();
  i2d_ECDSA_SIG(sig.get(), &p);
  return der;
}

Result<std::vector<uint8_t>> ecdsa_der_to_raw(const std::vector<uint8_t>& der) {
  const uint8_t* p = der.data();
  SigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) return data_error("not a DER ECDSA signature");
  const BIGNUM *r = nullptr, *s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  std::vector<uint8_t> raw(64);
  if (BN_bn2binpad(r, raw.data(), 32) != 32 || BN_bn2binpad(s, raw.data() + 32, 32) != 32)
    return data_error("ECDSA signature values too large for P-256");
  return raw;
}

Status verify_signature(const Jwt& t, const Jwk& k) {
  if (t.alg != "RS256" && t.alg != "ES256")
    return no_permission("token: signature algorithm '" + t.alg + "' is not accepted (RS256, ES256 are)");
  if (!alg_fits(t.alg, k.kty) || (!k.alg.empty() && k.alg != t.alg))
    return no_permission("token: algorithm " + t.alg + " does not match the issuer's key '" + k.kid + "'");
  std::vector<uint8_t> sig = t.signature;
  if (t.alg == "ES256") {
    MESH_ASSIGN(sig, ecdsa_raw_to_der(t.signature));
  }
  MdPtr md(EVP_MD_CTX_new());
  if (!md || EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, k.key.get()) != 1)
    return internal_error("OpenSSL cannot start a signature check");
  int ok = EVP_DigestVerify(md.get(), sig.data(), sig.size(),
                            reinterpret_cast<const unsigned char*>(t.signing_input.data()),
                            t.signing_input.size());
  if (ok != 1) return no_permission("token: bad signature (not made by the issuer's key '" + k.kid + "')");
  return Status::ok();
}

Result<Identity> check_claims(const Jwt& t, const Expect& e) {
  const Json& p = t.payload;
  Identity id;
  id.issuer = str_field(p, "iss");
  if (id.issuer != e.issuer)
    return no_permission("token: issuer '" + id.issuer + "' is not the configured issuer '" + e.issuer + "'");
  bool aud_ok = false;
  size_t n_aud = 0;
  if (p.contains("aud") && p["aud"].is_string()) {
    n_aud = 1;
    aud_ok = p["aud"].get<std::string>() == e.audience;
  } else if (p.contains("aud") && p["aud"].is_array()) {
    for (const Json& a : p["aud"]) {
      ++n_aud;
      if (a.is_string() && a.get<std::string>() == e.audience) aud_ok = true;
    }
  }
  if (!aud_ok)
    return no_permission("token: audience " + (p.contains("aud") ? p["aud"].dump() : std::string("(none)")) +
                         " does not include this coordinator's client id '" + e.audience + "'");
  // OpenID Connect Core 3.1.3.7 (4, 5): several audiences need azp.
  if (n_aud > 1 && str_field(p, "azp") != e.audience)
    return no_permission("token: several audiences and \"azp\" is not '" + e.audience + "'");
  MESH_ASSIGN(id.expires_at, num_claim(p, "exp"));
  MESH_ASSIGN(id.issued_at, num_claim(p, "iat"));
  if (e.now >= id.expires_at + e.skew)
    return no_permission("token expired at " + fmt_time(id.expires_at) + " (now " + fmt_time(e.now) + ")");
  if (id.issued_at > e.now + e.skew)
    return no_permission("token issued in the future (" + fmt_time(id.issued_at) + "; check the clocks)");
  if (e.nonce) {
    if (str_field(p, "nonce") != *e.nonce) return no_permission("token: nonce does not match this login");
  }
  id.subject = str_field(p, "sub");
  if (id.subject.empty() || id.subject.size() > 255)
    return no_permission("token: \"sub\" missing, empty or longer than 255 characters");
  id.email = str_field(p, "email");
  id.name = str_field(p, "name");
  if (p.contains(e.groups_claim)) {
    const Json& g = p[e.groups_claim];
    if (g.is_string()) {
      id.groups.push_back(g.get<std::string>());
    } else if (g.is_array()) {
      for (const Json& x : g)
        if (x.is_string()) id.groups.push_back(x.get<std::string>());
    } else {
      return no_permission("token: claim \"" + e.groups_claim + "\" is neither a string nor a list");
    }
  }
  return id;
}

const Jwk* find_key(const std::vector<Jwk>& keys, const Jwt& t) {
  if (!t.kid.empty()) {
    for (const auto& k : keys)
      if (k.kid == t.kid) return &k;
    return nullptr;
  }
  const Jwk* only = nullptr;
  for (const auto& k : keys)
    if (alg_fits(t.alg, k.kty)) {
      if (only) return nullptr;  // ambiguous without a kid
      only = &k;
    }
  return only;
}

Result<Identity> verify_id_token(std::string_view token, const std::vector<Jwk>& keys,
                                 const Expect& e) {
  MESH_ASSIGN(Jwt t, parse_jwt(token));
  const Jwk* k = find_key(keys, t);
  if (!k)
    return no_permission("token: signing key id '" + t.kid + "' is not in the issuer's JWKS");
  MESH_TRY(verify_signature(t, *k));
  return check_claims(t, e);
}

Result<HttpReply> http_get_json(const std::string& url, const std::string& ca_file) {
  MESH_ASSIGN(auto parts, split_url(url));
  try {
    httplib::Client cli(parts.first);
    if (!cli.is_valid()) return usage_error("invalid URL '" + url + "'");
    if (!ca_file.empty()) cli.set_ca_cert_path(ca_file.c_str());
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(10, 0);
    return reply(cli.Get(parts.second), url);
  } catch (const std::exception& ex) {
    return unavailable("GET " + url + " failed: " + ex.what());
  }
}

Result<HttpReply> http_post_form(const std::string& url,
                                 const std::vector<std::pair<std::string, std::string>>& form,
                                 const std::string& ca_file) {
  MESH_ASSIGN(auto parts, split_url(url));
  try {
    httplib::Client cli(parts.first);
    if (!cli.is_valid()) return usage_error("invalid URL '" + url + "'");
    if (!ca_file.empty()) cli.set_ca_cert_path(ca_file.c_str());
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(30, 0);
    httplib::Params params;
    for (const auto& [k, v] : form) params.emplace(k, v);
    return reply(cli.Post(parts.second, params), url);
  } catch (const std::exception& ex) {
    return unavailable("POST " + url + " failed: " + ex.what());
  }
}

Result<Discovery> Discovery::from_json(const Json& j, const std::string& expected_issuer) {
  if (!j.is_object()) return data_error("discovery document: not an object");
  Discovery d;
  d.issuer = str_field(j, "issuer");
  d.jwks_uri = str_field(j, "jwks_uri");
  d.token_endpoint = str_field(j, "token_endpoint");
  d.device_authorization_endpoint = str_field(j, "device_authorization_endpoint");
  d.authorization_endpoint = str_field(j, "authorization_endpoint");
  // OpenID Connect Discovery 4.3: the issuer must be the one asked for.
  if (d.issuer != expected_issuer)
    return data_error("discovery document: issuer '" + d.issuer + "' is not '" + expected_issuer + "'");
  if (d.jwks_uri.empty()) return data_error("discovery document: no jwks_uri");
  return d;
}

Result<Discovery> discover(const std::string& issuer, const std::string& ca_file) {
  std::string base = issuer;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string url = base + "/.well-known/openid-configuration";
  MESH_ASSIGN(auto r, http_get_json(url, ca_file));
  if (r.status != 200) return unavailable(url + ": HTTP " + std::to_string(r.status));
  return Discovery::from_json(r.body, issuer);
}

Status Issuer::fetch_locked(int64_t now) {
  fetched_at_ = now;
  if (!disc_) {
    MESH_ASSIGN(disc_, discover(issuer_, ca_file_));
  }
  MESH_ASSIGN(auto r, http_get_json(disc_->jwks_uri, ca_file_));
  if (r.status != 200) return unavailable(disc_->jwks_uri + ": HTTP " + std::to_string(r.status));
  MESH_ASSIGN(keys_, parse_jwks(r.body));
  fetched_ = true;
  log_.info("oidc: " + std::to_string(keys_.size()) + " signing keys from " + disc_->jwks_uri);
  return Status::ok();
}

Result<Discovery> Issuer::discovery() {
  std::lock_guard lk(mu_);
  if (!disc_) {
    MESH_ASSIGN(disc_, discover(issuer_, ca_file_));
  }
  return *disc_;
}

Status Issuer::refresh(int64_t now) {
  std::lock_guard lk(mu_);
  return fetch_locked(now);
}

Result<Identity> Issuer::verify(std::string_view token, int64_t now,
                                const std::optional<std::string>& nonce) {
  MESH_ASSIGN(Jwt t, parse_jwt(token));
  Expect e{issuer_, client_id_, now, 60, nonce, groups_claim_};
  // Reject other issuers before any fetch: a stranger's token must not make
  // us refetch our JWKS.
  if (str_field(t.payload, "iss") != issuer_) return check_claims(t, e).status();
  Jwk key;
  {
    std::lock_guard lk(mu_);
    const Jwk* k = fetched_ ? find_key(keys_, t) : nullptr;
    // An unknown kid may be a key the issuer rotated in: refetch, but at
    // most once per kJwksRefetchSeconds, so tokens with made-up kids cannot
    // make us hammer the IdP.
    if (!k && (!fetched_ || now - fetched_at_ >= kJwksRefetchSeconds)) {
      if (Status s = fetch_locked(now); !s) {
        log_.warn("oidc: cannot fetch the issuer's keys: " + s.message());
        return Status(Exit::Unavailable, "cannot fetch the identity provider's keys: " + s.message());
      }
      k = find_key(keys_, t);
    }
    if (!k) return no_permission("token: signing key id '" + t.kid + "' is not in the issuer's JWKS");
    key = *k;
  }
  MESH_TRY(verify_signature(t, key));
  return check_claims(t, e);
}

}  // namespace mesh::coord::oidc
