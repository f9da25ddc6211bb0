// The client side of the coordinator API, used by the mesh-coord verbs:
// signed peer requests with verified responses (coord/auth.h) and admin
// requests with a bearer token. HTTP errors become Status with the exit
// codes of man/mesh-coord.8 (unreachable 69, 401/403 77, 408/429 75,
// other 4xx 65, 5xx 69) and the server's message (which names the bad field).
#pragma once

#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>
#include <string>

#include "core/json.h"
#include "core/key.h"
#include "core/log.h"
#include "core/status.h"

namespace mesh::coord {

struct Response {
  int status = 0;
  std::string body;
};

// Failover: with several coordinator URLs (replicas of one deployment,
// man/mesh-coord.8 "Replicas"), a request that gets no answer from one
// (unreachable, reset, timed out) or a 502/503/504 is sent again to the next,
// each URL at most once per request. The client stays on the URL that last
// answered. Admin requests, which are not all idempotent, move on only when
// the connection was never made. Peer requests may always move on: a join
// repeated with the same node key gets the same registration.
class Client {
 public:
  // `servers`: one or more http://HOST:PORT or https://HOST:PORT, tried in
  // order. `ca_file`: CA bundle for https (empty: system store).
  Client(std::vector<std::string> servers, std::string ca_file, const Log& log)
      : servers_(std::move(servers)), ca_file_(std::move(ca_file)), log_(log) {}
  Client(std::string server, std::string ca_file, const Log& log)
      : Client(std::vector<std::string>{std::move(server)}, std::move(ca_file), log) {}

  // GET /v1/info (unauthenticated): the coordinator's public key.
  Result<PublicKey> coordinator_key();

  // A request signed with the node key; the response MAC is verified with
  // the coordinator key. Error statuses become a failed Status.
  Result<Response> peer(const std::string& method, const std::string& target,
                        const SecretKey& node, const PublicKey& coord, const std::string& body,
                        int read_timeout_s = 30);
  // As peer(), with the request's X-Mesh-Nonce chosen by the caller, for a
  // body bound to this one request (a key rotation's proof, coord/rotate.h).
  Result<Response> peer(const std::string& method, const std::string& target,
                        const SecretKey& node, const PublicKey& coord, const std::string& body,
                        const std::string& nonce, int read_timeout_s);
  // A fresh request nonce: 16 random bytes, base64url.
  static std::string new_nonce();

  // An admin request; body "" sends none. Returns the parsed JSON body.
  Result<Json> admin(const std::string& method, const std::string& target,
                     const std::string& token, const std::string& body);

  // The URL in use: the one that answered last (the first at start).
  const std::string& server() const { return servers_[current_]; }
  const std::vector<std::string>& servers() const { return servers_; }
  // HTTP status of the last response; 0 when the last request got none.
  int last_status() const { return last_status_; }

 private:
  enum class Retry { Never, IfNotConnected, Always };
  // One request to server(), moving on to the next URL as `retry` allows.
  // `attempt` sends to the current URL (it is called again for the next).
  Result<Response> with_failover(Retry retry, const std::function<Result<Response>()>& attempt);
  Result<Response> send(const std::string& method, const std::string& target,
                        const std::vector<std::pair<std::string, std::string>>& headers,
                        const std::string& body, int read_timeout_s,
                        const std::string& content_type);
  Result<Response> peer_once(const std::string& method, const std::string& target,
                             const SecretKey& node, const PublicKey& coord,
                             const std::string& body, const std::string& nonce,
                             int read_timeout_s);
  std::vector<std::string> servers_;
  size_t current_ = 0;
  bool last_connected_ = false;  // the last send made a connection
  std::string ca_file_;
  const Log& log_;
  std::string last_mac_;  // X-Mesh-Auth of the last response
  bool last_sealed_ = false;  // it carried X-Mesh-Seal: 1
  int last_status_ = 0;
};

// A setup key as `setup-key create` prints it: SECRET.COORD, where COORD is
// the coordinator's public key (base64url, no padding), so a join over plain
// HTTP is pinned to the right coordinator. A bare SECRET (keys made before
// keys carried it) has no pin.
struct SetupKeyText {
  std::string secret;
  std::optional<PublicKey> coordinator;
};
Result<SetupKeyText> parse_setup_key(std::string_view text);
std::string format_setup_key(std::string_view secret, const PublicKey& coordinator);

// True when `url` is http:// to a host that is not this one (neither a
// loopback address nor an address of a local interface): there, secrets
// that are not sealed (the admin token) would cross the network readable.
bool plain_http_to_other_host(const std::string& url);

// A map from the coordinator may give a peer allowed IPs only inside the
// overlay prefixes (the map's self.addresses): anything else would let a
// forged or compromised map route this node's other traffic into the mesh.
Status check_map_overlay(const Json& map);

// Turns an HTTP error response into a Status (exit code from the status,
// message from the JSON error document when there is one).
Status http_error(const Response& r);

}  // namespace mesh::coord
