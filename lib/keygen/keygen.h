// mesh-keygen's behaviour: WireGuard-compatible keys and random tokens.
#pragma once

#include <string>

#include "core/cli.h"
#include "core/key.h"

namespace mesh::keygen {

// Where a secret goes: stdout (path empty) or a file written atomically
// with mode 0600 that is never overwritten unless `force`.
struct SecretSink {
  std::string path;
  bool force = false;
};

// Writes `line` (a secret plus "\n") to the sink. Writing to stdout that is a
// regular file readable by group/others logs a warning (the secret would
// leak), as wg(8) does.
Status emit_secret(Context& ctx, const SecretSink& sink, std::string line);

// Reads a private key from `text` (stdin contents) and returns the public key.
// Empty input, bad base64, wrong length and trailing garbage are DataErr.
Result<PublicKey> public_from_text(std::string_view text);

// Token of `bytes` random bytes, URL-safe base64 without padding.
Result<std::string> make_token(int bytes);

}  // namespace mesh::keygen
