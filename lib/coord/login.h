// The node's side of a login (`mesh-coord login`; man/mesh-coord.8, Users
// and login): the device flow run by the node (RFC 8628), the device flow
// run by a coordinator that holds the client secret (the node polls the
// coordinator), and the browser login with PKCE and a loopback redirect
// (RFC 7636, RFC 8252). What the person must do goes through `prompt`.
#pragma once

#include <functional>
#include <string>

#include "coord/client.h"
#include "coord/oauth.h"
#include "coord/oidc.h"
#include "core/json.h"
#include "core/key.h"
#include "core/status.h"

namespace mesh::coord {

struct LoginIo {
  // Tells the person what to do: `text` for them (stderr), `doc` for
  // scripts (a JSON line on stdout).
  std::function<Status(const std::string& text, const Json& doc)> prompt;
  int timeout_s = 600;   // how long to wait for the person (and at most the code's lifetime)
  int64_t poll_ms = 0;   // 0: the provider's interval (RFC 8628 3.5); else 50-60000 ms
};

// Polls the token endpoint itself (a public client, or the secret given to
// login) until the person approved: the ID token. TempFailure when the
// code was not approved in time, NoPerm when it was denied.
Result<std::string> node_device_flow(const oidc::Discovery& disc, const oauth::ClientAuth& client,
                                     const std::string& scope, const std::string& ca_file,
                                     const LoginIo& io);

// One POST /v1/login with a device handle: the registration, or `*pending`.
using HandlePoll = std::function<Result<Json>(const std::string& handle, bool* pending)>;
// Starts the device flow at the coordinator (POST /v1/login/device) and
// polls it with `poll` until the coordinator enrolled the node.
Result<Json> coordinator_device_flow(Client& cli, const SecretKey& node, const PublicKey& coord,
                                     const std::string& scope, const LoginIo& io,
                                     const HandlePoll& poll);

// A browser login: the authorization URL for the person, one redirect to
// 127.0.0.1 with the code and this login's state. Returns what the code
// exchange needs (oauth::exchange_code, or the coordinator's).
struct CodeGrant {
  std::string code, verifier, redirect_uri, nonce;
};
Result<CodeGrant> browser_flow(const oidc::Discovery& disc, const std::string& client_id,
                               const std::string& scope, const LoginIo& io);

}  // namespace mesh::coord
