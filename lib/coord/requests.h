// The JSON request bodies `mesh-coord serve` accepts (man/mesh-coord.8,
// HTTP API), parsed and validated as pure functions: the handlers in
// server.cpp call these and then do the rest (authentication, the model, the
// store). Kept apart so that every byte a client controls goes through code
// that unit tests and tests/fuzz/coord_request_fuzz.cpp reach without a
// server. Errors are DataErr with the JSON path ("request: name: ..."), which
// the server answers with 400 and the path as the error's field.
// /v1/announce takes an endpoints document (netmap/endpoints.h) and the
// policy endpoints a policy (coord/policy.h): they have their own parsers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coord/model.h"
#include "coord/policy.h"
#include "core/json.h"
#include "core/key.h"
#include "core/status.h"

namespace mesh::coord {

// POST /v1/join: {"setup_key": "...", "name"?: "...", "name_hint"?: "..."}.
// `name` (insisted on) and `name_hint` (preferred) are empty when not given.
struct JoinRequest {
  std::string setup_key;
  std::string name;
  std::string name_hint;
};
Result<JoinRequest> parse_join_request(const Json& j);

// POST /v1/login: one of {"id_token": JWT, "nonce"?} (the node ran the
// flow), {"device_handle": H} (a device flow the coordinator runs, started
// at /v1/login/device) or {"code", "code_verifier", "redirect_uri", "nonce"}
// (a browser login whose code the coordinator exchanges with its secret),
// plus "name"? and "name_hint"?. The ID token is in enrol.setup_key.
struct LoginRequest {
  JoinRequest enrol;
  std::string device_handle, code, code_verifier, redirect_uri, nonce;
};
Result<LoginRequest> parse_login_request(const Json& j);

// POST /v1/punch: {"peers": [KEY, ...]}, 1 to max_targets keys, duplicates
// dropped (order kept).
Result<std::vector<PublicKey>> parse_punch_request(const Json& j, size_t max_targets);

// POST /v1/admin/setup-keys: the key's settings (name, reusable,
// usage_limit, expires_at = now + expires_in, ephemeral, ephemeral_timeout,
// groups, tags, peer_name); id, hash and created_at are left for the server to fill.
Result<SetupKey> parse_setup_key_request(const Json& j, int64_t now);

// POST /v1/admin/setup-keys/revoke: {"key": NAME-OR-ID}.
Result<std::string> parse_revoke_request(const Json& j);

// POST /v1/admin/peers/OP: {"peer": NAME-OR-KEY} plus "name" for rename and
// "groups" for set-groups (deduplicated, order kept).
struct PeerOpRequest {
  std::string peer;
  std::string name;
  std::vector<std::string> groups;
};
Result<PeerOpRequest> parse_peer_op_request(const Json& j, std::string_view op);

// POST /v1/admin/policy/check: {"from", "to", "port"?: SERVICE}, port
// defaulting to "any".
struct PolicyCheckRequest {
  std::string from, to;
  Service service;
};
Result<PolicyCheckRequest> parse_policy_check_request(const Json& j);

// A duration: whole seconds, or "30s", "15m", "12h", "7d".
Result<int64_t> parse_duration(const JsonView& v);

}  // namespace mesh::coord
