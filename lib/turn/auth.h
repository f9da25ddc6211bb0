// TURN long-term credentials (RFC 8489 section 9.2) for mesh-relay:
//  - a users file: one "USER:PASSWORD" per line, or "USER:0xKEY" where KEY is
//    the 32-hex-digit MD5(USER:REALM:PASSWORD) that coturn's `turnadmin -k`
//    prints (so the plaintext password need not be stored); '#' comments and
//    blank lines are ignored;
//  - coturn-compatible REST-API ephemeral credentials: username
//    "EXPIRY[:NAME]" (EXPIRY in unix seconds), password
//    base64(HMAC-SHA1(SECRET, username)); several secrets (one per line in
//    the secret file) verify, so a secret can be rotated without downtime;
//  - stateless nonces: hex(expiry) + truncated HMAC under a per-process key
//    over the expiry and the client's transport address, so any worker
//    thread can check any nonce without shared state, and a nonce is good
//    only from the address it was given to.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace mesh::turn {

using LongTermKey = std::array<uint8_t, 16>;

// An immutable set of credentials; the server swaps in a new one on SIGHUP.
class Credentials {
 public:
  Credentials() = default;
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;
  ~Credentials();

  // Parses a users file's text for `realm`. DataErr names the line.
  static Result<std::map<std::string, LongTermKey>> parse_users(std::string_view text,
                                                               std::string_view realm,
                                                               std::string_view source);
  // Parses a secret file's text: one secret per non-empty, non-comment line.
  static Result<std::vector<std::string>> parse_secrets(std::string_view text,
                                                        std::string_view source);

  // Loads either or both files ("" = not used). At least one must be given.
  static Result<std::unique_ptr<Credentials>> load(const std::string& users_file,
                                                   const std::string& secret_file,
                                                   const std::string& realm);

  const std::string& realm() const { return realm_; }
  bool empty() const { return users_.empty() && secrets_.empty(); }
  size_t user_count() const { return users_.size(); }
  size_t secret_count() const { return secrets_.size(); }

  enum class Lookup { Ok, Unknown, Expired };
  // Candidate keys for `username` at unix time `now`. A static user wins over
  // REST; for REST every configured secret yields one candidate key.
  // `quota_name` receives the name quotas are counted under (the static
  // user name, or NAME of "EXPIRY:NAME").
  Lookup keys_for(std::string_view username, int64_t now, std::vector<LongTermKey>* keys,
                  std::string* quota_name) const;

  // A static user (users file) of that name: never a REST credential.
  bool has_user(std::string_view username) const { return users_.find(username) != users_.end(); }

  void set_realm(std::string r) { realm_ = std::move(r); }
  void add_user(const std::string& user, const LongTermKey& k) { users_[user] = k; }
  void add_secret(std::string s) { secrets_.push_back(std::move(s)); }

 private:
  std::string realm_;
  std::map<std::string, LongTermKey, std::less<>> users_;
  std::vector<std::string> secrets_;
};

// base64(HMAC-SHA1(secret, username)): the REST-API password (coturn's
// --use-auth-secret / --static-auth-secret).
std::string rest_password(std::string_view secret, std::string_view username);

// "EXPIRY" or "EXPIRY:NAME" -> expiry and name ("" when absent). False when
// the username is not of that form.
bool parse_rest_username(std::string_view username, int64_t* expiry, std::string_view* name);

// Stateless nonces (RFC 8489 section 9.2: the server chooses the format).
class NonceMint {
 public:
  NonceMint();  // random key
  explicit NonceMint(const std::array<uint8_t, 32>& key) : key_(key) {}
  // A nonce valid until now + lifetime seconds for the client `bound_to`
  // (its transport address, serialized by the caller). 24 characters: the
  // 401 that carries it answers unauthenticated requests, so it is short.
  std::string make(int64_t now, int64_t lifetime, std::span<const uint8_t> bound_to = {}) const;
  // Invalid: not ours, or made for another client (the client then gets
  // 438 with a nonce of its own, as for an expired one).
  enum class Check { Valid, Stale, Invalid };
  Check check(std::string_view nonce, int64_t now, std::span<const uint8_t> bound_to = {}) const;

 private:
  std::array<uint8_t, 32> key_{};
};

}  // namespace mesh::turn
