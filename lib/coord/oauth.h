// OAuth 2.0 flows of a login (man/mesh-coord.8, LOGIN) against the
// coordinator's OpenID provider: the Device Authorization Grant (RFC 8628)
// and the Authorization Code Grant with PKCE (RFC 7636) and a loopback
// redirect for native apps (RFC 8252). `mesh-coord login` runs them with a
// public client; the coordinator runs the token requests itself when it
// holds the client secret (serve --oidc-client-secret-file), so the secret
// never reaches a node.
//
// The URL, query, PKCE and handle bookkeeping are pure functions (unit
// tests: tests/unit/coord_oauth_test.cpp); the requests use oidc.h's HTTP.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "coord/oidc.h"
#include "core/json.h"
#include "core/key.h"
#include "core/status.h"

namespace mesh::coord::oauth {

// A client as the token endpoint sees it: a public client (no secret,
// RFC 6749 2.1) sends its id; a confidential one adds its secret in the form
// (client_secret_post, OpenID Connect Core 9).
// The secret is wiped when the ClientAuth goes.
struct ClientAuth {
  std::string client_id, secret;
  ~ClientAuth() { wipe(secret); }
};

// RFC 7636 4.1: a verifier of 32 random bytes, base64url (43 characters).
std::string pkce_verifier();
// RFC 7636 4.2, S256: BASE64URL(SHA256(ASCII(verifier))).
std::string pkce_challenge(std::string_view verifier);

// RFC 3986 percent-encoding of everything but the unreserved characters,
// and its inverse ('+' is a space in a query, HTML 4 forms);
// DataErr for a bad escape.
std::string percent_encode(std::string_view s);
Result<std::string> percent_decode(std::string_view s);

// The authorization request (RFC 6749 4.1.1 with RFC 7636 4.3 and the
// OpenID nonce): ENDPOINT?response_type=code&client_id=..&redirect_uri=..
// &scope=..&state=..&nonce=..&code_challenge=..&code_challenge_method=S256.
struct AuthRequest {
  std::string client_id, redirect_uri, scope, state, nonce, challenge;
};
std::string authorization_url(const std::string& endpoint, const AuthRequest& r);

// The query of the redirect back to the app (RFC 6749 4.1.2 and 4.1.2.1).
struct Redirect {
  std::string code, state, error, error_description;
};
Result<Redirect> parse_redirect_query(std::string_view query);
// The redirect's code when its state is `state` (RFC 6749 10.12: anything
// else may be a forged redirect): NoPerm for another or no state, or for
// the provider's error ("access_denied": the person said no); DataErr when
// there is no code.
Result<std::string> check_redirect(const Redirect& r, const std::string& state);

// http://127.0.0.1:PORT/PATH or http://[::1]:PORT/PATH (RFC 8252 7.3).
bool loopback_redirect_uri(std::string_view uri);

// The provider's answer to a device authorization request (RFC 8628 3.2).
struct DeviceAuth {
  std::string device_code, user_code, verification_uri, verification_uri_complete;
  int interval = 5, expires_in = 600;
  // What a person needs: verification_uri(_complete), user_code, expires_in.
  Json prompt() const;
};
Result<DeviceAuth> start_device(const oidc::Discovery& d, const ClientAuth& c,
                                const std::string& scope, const std::string& ca_file);

// One token request of a device flow (RFC 8628 3.4-3.5): the ID token, or
// pending (slow_down: the provider asks for 5 s more between polls).
// access_denied is NoPerm, expired_token TempFailure, other refusals
// Unavailable.
struct Poll {
  std::string id_token;  // empty while pending
  bool slow_down = false;
};
Result<Poll> poll_device(const oidc::Discovery& d, const ClientAuth& c,
                         const std::string& device_code, const std::string& ca_file);

// The authorization code exchanged for the ID token (RFC 6749 4.1.3 with
// the PKCE verifier, RFC 7636 4.5).
Result<std::string> exchange_code(const oidc::Discovery& d, const ClientAuth& c,
                                  const std::string& code, const std::string& verifier,
                                  const std::string& redirect_uri, const std::string& ca_file);

// NoPerm unless the (unverified) token's "nonce" claim is `nonce`: a node
// checks the token it got before handing it on; the coordinator verifies
// signature and nonce again.
Status check_nonce(std::string_view id_token, const std::string& nonce);

// The loopback end of a browser login (RFC 8252 7.3): an HTTP server on
// 127.0.0.1, port chosen by the kernel, that takes one redirect to
// /callback and answers every later request 410.
class LoopbackReceiver {
 public:
  static Result<std::unique_ptr<LoopbackReceiver>> start();
  ~LoopbackReceiver();
  LoopbackReceiver(const LoopbackReceiver&) = delete;
  LoopbackReceiver& operator=(const LoopbackReceiver&) = delete;
  // http://127.0.0.1:PORT/callback
  const std::string& redirect_uri() const { return redirect_uri_; }
  // The redirect's query, parsed; TempFailure ("login timed out") when none
  // came within `timeout`.
  Result<Redirect> wait(std::chrono::milliseconds timeout);

  struct Impl;

 private:
  explicit LoopbackReceiver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string redirect_uri_;
};

// Device flows the coordinator runs for nodes (POST /v1/login/device): each
// pending one named by an opaque random handle, bound to the node key that
// started it, kept until the provider's expiry (at most kMaxDeviceSeconds).
// Bounded: one per node key (a new one replaces it), `per_source` per
// client address, `total` in all.
struct PendingLogin {
  PublicKey node;
  std::string source;
  DeviceAuth auth;
  int64_t expires_at = 0, next_poll_at = 0;
};

inline constexpr int64_t kMaxDeviceSeconds = 900;

class PendingLogins {
 public:
  PendingLogins(size_t total, size_t per_source) : total_(total), per_source_(per_source) {}
  // TempFailure when `node` may not start another login from `source`
  // now (its own pending one does not count: a new one replaces it).
  Status room_for(const PublicKey& node, const std::string& source, int64_t now);
  // A new handle for `auth`, as room_for allows.
  Result<std::string> add(const PublicKey& node, const std::string& source, DeviceAuth auth,
                          int64_t now);
  // The pending login of `handle` when it is `node`'s and not expired;
  // nullptr otherwise (another node's handle looks like an unknown one).
  PendingLogin* find(const std::string& handle, const PublicKey& node, int64_t now);
  void erase(const std::string& handle) { by_handle_.erase(handle); }
  void prune(int64_t now);
  size_t size() const { return by_handle_.size(); }

 private:
  size_t total_, per_source_;
  std::map<std::string, PendingLogin> by_handle_;
};

}  // namespace mesh::coord::oauth
