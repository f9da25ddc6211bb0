// Relay credential revocations (man/mesh-coord.8, "GET /v1/relay/revoked").
//
// A peer's TURN credentials are REST usernames "EXPIRY:NAME@ID" (one
// subject per enrolment). When the peer is deleted, the credentials it
// holds stay valid on the relay until EXPIRY; the coordinator therefore
// publishes the subject with the latest EXPIRY it handed out, and relays
// that follow the list (mesh-relay serve --revocations) refuse the subject
// and end its allocations. Entries are dropped once that EXPIRY has passed:
// the relay refuses such credentials anyway.
//
// The endpoint is authenticated with keys derived from the relay secret,
// the one thing the coordinator and the relays share: the request carries
// a MAC over its time and parameters, the response a MAC over the request
// time and its body (so a stale or forged answer is refused).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

// The credential subject (quota name) of peer `id` named `name`.
std::string relay_subject(std::string_view name, uint32_t id);

struct Revocation {
  int64_t seq = 0;
  std::string subject;
  int64_t until = 0;  // unix seconds: the last EXPIRY handed out for it
};

// The outstanding revocations, in sequence order. Not thread-safe.
class RevocationList {
 public:
  // Adds one (or moves `until` later for a known subject) with a new seq.
  void add(const std::string& subject, int64_t until);
  // Drops entries whose credentials have all expired. True if any went.
  bool prune(int64_t now);
  int64_t seq() const { return seq_; }
  // The answer to ?after=SEQ: {"seq", "full", "revoked": [{seq, subject,
  // until}]}. full (the whole list, to replace the relay's) when after is 0
  // or beyond our seq (our state was reset).
  Json since(int64_t after) const;

  // Persisted form ({"seq", "entries"}), kept in the store's meta table.
  Json to_json() const;
  static Result<RevocationList> from_json(const Json& j);

 private:
  int64_t seq_ = 0;
  std::deque<Revocation> entries_;
};

// Header names and the MACs of the endpoint (hex HMAC-SHA256 under a key
// derived from the relay secret).
inline constexpr const char* kRevocationAuthHeader = "X-Mesh-Relay-Auth";  // "TS:MAC"
inline constexpr const char* kRevocationMacHeader = "X-Mesh-Relay-Mac";    // response MAC
inline constexpr int64_t kRevocationSkew = 300;                            // seconds

std::string revocation_request_mac(std::string_view secret, int64_t ts, int64_t after, int wait);
std::string revocation_response_mac(std::string_view secret, int64_t ts, std::string_view body);

// Checks a request's X-Mesh-Relay-Auth value at `now`. Unauthenticated
// (NoPerm) when malformed, too old or too new, or wrong.
Status check_revocation_request(std::string_view secret, std::string_view header, int64_t now,
                                int64_t after, int wait, int64_t* ts);

}  // namespace mesh::coord
