// Node key rotation (man/mesh-coord.8, KEY ROTATION): a peer replaces its
// WireGuard key pair without losing its id, name, addresses or groups.
//
// POST /v1/rotate-key is signed with the OLD key like every peer request
// (coord/auth.h), so only the holder of the enrolled key can rotate it. Its
// body names the new public key and proves possession of the new private
// key, so a peer cannot take over a key pair it does not hold:
//
//   K     = the request MAC key of the NEW key with the coordinator
//           (derive_session_keys(new private, coordinator public, new, coord))
//   proof = HMAC-SHA256(K, "MESH-ROTATE-V1\n" old_pub "\n" new_pub "\n" NONCE)
//
// where NONCE is the request's X-Mesh-Nonce: a proof is good for one
// request only, and the nonce cache refuses a replayed request.
#pragma once

#include <string>
#include <string_view>

#include "coord/auth.h"
#include "core/json.h"
#include "core/key.h"
#include "core/status.h"

namespace mesh::coord {

// POST /v1/rotate-key: {"public_key": NEW, "proof": BASE64}.
struct RotateRequest {
  PublicKey public_key;
  std::string proof;
};
Result<RotateRequest> parse_rotate_request(const Json& j);
Json rotate_request_json(const RotateRequest& r);

// The node side: the proof for rotating `old_pub` to `fresh` (the new
// private key) in the request carrying X-Mesh-Nonce `nonce`.
Result<std::string> rotation_proof(const SecretKey& fresh, const PublicKey& coord,
                                   const PublicKey& old_pub, std::string_view nonce);

// The coordinator side: Ok when `proof` proves possession of `new_pub`'s
// private key for this rotation; DataErr for a key that cannot be used
// (low order), NoPerm for a wrong proof.
Status check_rotation_proof(const SecretKey& coord_key, const PublicKey& coord_pub,
                            const PublicKey& old_pub, const PublicKey& new_pub,
                            std::string_view nonce, std::string_view proof);

// Coordinator key rotation (man/mesh-coord.8, Coordinator key rotation):
// `serve --previous-coordinator-key FILE --previous-key-until TIME` accepts
// requests made for the previous key until TIME, and answers them with it,
// so that nodes and setup keys pinned to it keep working while they learn the
// new key from answers the previous key authenticates (join's registration,
// GET /v1/self). TIME: unix seconds, or UTC as YYYY-MM-DDTHH:MM:SSZ.
Result<int64_t> parse_until(std::string_view text);

}  // namespace mesh::coord
