// The client side of the coordinator API, used by the mesh-coord verbs:
// signed peer requests with verified responses (coord/auth.h) and admin
// requests with a bearer token. HTTP errors become Status with the exit
// codes of man/mesh-coord.8 (unreachable 69, 401/403 77, 408/429 75,
// other 4xx 65, 5xx 69) and the server's message (which names the bad field).
#pragma once

#include <optional>
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

class Client {
 public:
  // `server`: http://HOST:PORT or https://HOST:PORT. `ca_file`: CA bundle
  // for https (empty: system store).
  Client(std::string server, std::string ca_file, const Log& log)
      : server_(std::move(server)), ca_file_(std::move(ca_file)), log_(log) {}

  // GET /v1/info (unauthenticated): the coordinator's public key.
  Result<PublicKey> coordinator_key();

  // A request signed with the node key; the response MAC is verified with
  // the coordinator key. Error statuses become a failed Status.
  Result<Response> peer(const std::string& method, const std::string& target,
                        const SecretKey& node, const PublicKey& coord, const std::string& body,
                        int read_timeout_s = 30);

  // An admin request; body "" sends none. Returns the parsed JSON body.
  Result<Json> admin(const std::string& method, const std::string& target,
                     const std::string& token, const std::string& body);

  const std::string& server() const { return server_; }
  // HTTP status of the last response; 0 when the last request got none.
  int last_status() const { return last_status_; }

 private:
  Result<Response> send(const std::string& method, const std::string& target,
                        const std::vector<std::pair<std::string, std::string>>& headers,
                        const std::string& body, int read_timeout_s);
  std::string server_, ca_file_;
  const Log& log_;
  std::string last_mac_;  // X-Mesh-Auth of the last response
  int last_status_ = 0;
};

// Turns an HTTP error response into a Status (exit code from the status,
// message from the JSON error document when there is one).
Status http_error(const Response& r);

}  // namespace mesh::coord
