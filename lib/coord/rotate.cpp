#include "coord/rotate.h"

#include <sodium.h>

#include <ctime>

#include <nlohmann/json.hpp>

#include "core/base64.h"

namespace mesh::coord {

Result<RotateRequest> parse_rotate_request(const Json& j) {
  JsonView v(j, "request");
  MESH_TRY(v.check_keys({"public_key", "proof"}));
  RotateRequest r;
  MESH_ASSIGN(auto f, v.field("public_key"));
  MESH_ASSIGN(auto key, f.as_string());
  auto pk = PublicKey::from_base64(key);
  if (!pk) return f.error(pk.status().message());
  if (pk->is_zero()) return f.error("the all-zero key");
  r.public_key = *pk;
  MESH_ASSIGN(auto pf, v.field("proof"));
  MESH_ASSIGN(r.proof, pf.as_string());
  if (r.proof.empty() || r.proof.size() > 64) return pf.error("expected a base64 MAC");
  return r;
}

Json rotate_request_json(const RotateRequest& r) {
  return Json{{"public_key", r.public_key.to_base64()}, {"proof", r.proof}};
}

static std::string proof_message(const PublicKey& old_pub, const PublicKey& new_pub,
                                 std::string_view nonce) {
  std::string msg = "MESH-ROTATE-V1\n";
  msg.append(old_pub.to_base64()).append("\n").append(new_pub.to_base64()).append("\n");
  msg.append(nonce);
  return msg;
}

static std::string hmac_b64(const SecretKey& k, const std::string& msg) {
  std::array<uint8_t, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, k.bytes().data(), k.bytes().size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  crypto_auth_hmacsha256_final(&st, mac.data());
  sodium_memzero(&st, sizeof st);
  return base64_encode(mac);
}

Result<std::string> rotation_proof(const SecretKey& fresh, const PublicKey& coord,
                                   const PublicKey& old_pub, std::string_view nonce) {
  PublicKey new_pub = fresh.public_key();
  auto keys = derive_session_keys(fresh, coord, new_pub, coord);
  if (!keys) return keys.status().with_context("new key");
  return hmac_b64(keys->request, proof_message(old_pub, new_pub, nonce));
}

Status check_rotation_proof(const SecretKey& coord_key, const PublicKey& coord_pub,
                            const PublicKey& old_pub, const PublicKey& new_pub,
                            std::string_view nonce, std::string_view proof) {
  auto keys = derive_session_keys(coord_key, new_pub, new_pub, coord_pub);
  if (!keys) return data_error("request: public_key: not a usable key (" + keys.status().message() + ")");
  if (!mac_equal(proof, hmac_b64(keys->request, proof_message(old_pub, new_pub, nonce))))
    return no_permission("request: proof: does not prove possession of the new key's private key");
  return Status::ok();
}

Result<int64_t> parse_until(std::string_view text) {
  std::string t(text);
  if (!t.empty() && t.size() <= 12 && t.find_first_not_of("0123456789") == std::string::npos)
    return static_cast<int64_t>(std::stoll(t));
  std::tm tm{};
  const char* end = t.size() == 20 ? ::strptime(t.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm) : nullptr;
  if (!end || *end != '\0')
    return usage_error("'" + t + "': expected unix seconds or YYYY-MM-DDTHH:MM:SSZ (UTC)");
  return static_cast<int64_t>(::timegm(&tm));
}

}  // namespace mesh::coord
