// Request and response authentication between a peer and the coordinator
// (man/mesh-coord.8, AUTHENTICATION). Both sides derive the same keys from
// the X25519 shared secret of the peer's WireGuard key and the coordinator's
// key, so a peer proves possession of its private key on every request and
// the coordinator proves its identity on every response, even over plain HTTP.
//
//   ss    = X25519(own private, other public)
//   K_req = BLAKE2b-256(key=ss, "mesh-coord v1 request"  || peer_pub || coord_pub)
//   K_res = BLAKE2b-256(key=ss, "mesh-coord v1 response" || peer_pub || coord_pub)
//   request MAC  = HMAC-SHA256(K_req, "MESH-REQ-V1\n" METHOD "\n" TARGET "\n"
//                              TIME "\n" NONCE "\n" hex(SHA256(body)))
//   response MAC = HMAC-SHA256(K_res, "MESH-RES-V1\n" STATUS "\n" NONCE "\n"
//                              hex(SHA256(body)))
//   K_seal_req, K_seal_res: the same, labels "mesh-coord v1 seal request"
//                           and "mesh-coord v1 seal response"
// Headers: X-Mesh-Key (peer public key), X-Mesh-Time (unix seconds),
// X-Mesh-Nonce (16 random bytes, base64url), X-Mesh-Auth (base64 MAC),
// X-Mesh-Seal: 1. Bodies are sealed so setup keys and relay passwords
// never cross plain HTTP readable: non-empty request and response bodies
// are 24 random bytes || XChaCha20-Poly1305(K_seal_*,
// that nonce, body, associated data = the X-Mesh-Nonce value); the MACs
// cover the sealed bytes.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <optional>
#include <unordered_map>

#include "core/key.h"
#include "core/status.h"

namespace mesh::coord {

inline constexpr const char* kHdrKey = "X-Mesh-Key";
inline constexpr const char* kHdrTime = "X-Mesh-Time";
inline constexpr const char* kHdrNonce = "X-Mesh-Nonce";
inline constexpr const char* kHdrAuth = "X-Mesh-Auth";
inline constexpr const char* kHdrSeal = "X-Mesh-Seal";
inline constexpr int64_t kMaxSkewSeconds = 60;

struct SessionKeys {
  SecretKey request;
  SecretKey response;
  SecretKey seal_request;
  SecretKey seal_response;
};

// Derives both MAC keys. `own` is either side's private key, `other` the
// other side's public key; peer_pub/coord_pub fix the order of the labels.
Result<SessionKeys> derive_session_keys(const SecretKey& own, const PublicKey& other,
                                        const PublicKey& peer_pub, const PublicKey& coord_pub);

std::string sha256_hex(std::string_view data);

// MACs as base64 text (the header value).
std::string request_mac(const SecretKey& k, std::string_view method, std::string_view target,
                        int64_t time, std::string_view nonce, std::string_view body);
std::string response_mac(const SecretKey& k, int status, std::string_view nonce,
                         std::string_view body);

// Body sealing (see above). `ad` is the request's X-Mesh-Nonce. open_body
// fails (NoPerm) on anything seal_body with the same key and ad did not make.
std::string seal_body(const SecretKey& k, std::string_view ad, std::string_view plain);
Result<std::string> open_body(const SecretKey& k, std::string_view ad, std::string_view sealed);

// Constant-time check of a base64 MAC header against the expected value.
bool mac_equal(std::string_view got, std::string_view expected);

// Remembers nonces for twice the allowed skew so a captured request cannot
// be replayed. Bounded: when `max_entries` live nonces are held, new ones
// are refused (TempFail) rather than forgetting old ones early.
class NonceCache {
 public:
  explicit NonceCache(size_t max_entries = 1u << 20) : max_(max_entries) {}
  // Ok when fresh (and remembers it); NoPerm "replayed" when seen before.
  Status check_and_insert(std::string_view nonce, int64_t now);
  size_t size() const;

 private:
  void prune(int64_t now);
  size_t max_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, int64_t> seen_;  // nonce -> expiry
  std::deque<std::pair<int64_t, std::string>> order_;
};

// Session keys of peers, so a request does not pay an X25519 each time.
// Bounded with least-recently-used eviction: a full cache drops its coldest
// entry, never the keys of every active peer at once.
class SessionKeyCache {
 public:
  explicit SessionKeyCache(size_t max_entries = 200000) : max_(max_entries) {}
  std::optional<SessionKeys> get(const PublicKey& k);  // marks k recently used
  void put(const PublicKey& k, const SessionKeys& keys);
  size_t size() const;

 private:
  using Lru = std::list<std::pair<PublicKey, SessionKeys>>;  // most recent first
  size_t max_;
  mutable std::mutex mu_;
  Lru lru_;
  std::map<PublicKey, Lru::iterator> index_;
};

// Reads the X-Mesh-Time header: a decimal integer (std::stoll: leading
// white space and a sign allowed) with nothing after it. DataErr otherwise.
Result<int64_t> parse_time_header(std::string_view text);

// Validates the time header against `now` (NoPerm when stale).
Status check_time(int64_t request_time, int64_t now);

}  // namespace mesh::coord
