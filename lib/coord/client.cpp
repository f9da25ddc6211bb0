#include "coord/client.h"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "coord/auth.h"
#include "core/base64.h"

namespace mesh::coord {

Status http_error(const Response& r) {
  Exit code = Exit::DataErr;
  if (r.status == 401 || r.status == 403) code = Exit::NoPerm;
  else if (r.status == 429 || r.status == 408) code = Exit::TempFail;
  else if (r.status >= 500) code = Exit::Unavailable;
  std::string msg = "HTTP " + std::to_string(r.status);
  auto j = parse_json(r.body, "response");
  if (j && j->is_object() && j->contains("error") && (*j)["error"].is_object()) {
    const Json& e = (*j)["error"];
    if (e.contains("message") && e["message"].is_string()) msg = e["message"].get<std::string>();
  }
  return Status(code, "coordinator refused: " + msg);
}

Result<Response> Client::send(const std::string& method, const std::string& target,
                              const std::vector<std::pair<std::string, std::string>>& headers,
                              const std::string& body, int read_timeout_s) {
  last_status_ = 0;
  try {
    httplib::Client cli(server_);
    if (!cli.is_valid()) return usage_error("invalid server URL '" + server_ + "'");
    if (!ca_file_.empty()) cli.set_ca_cert_path(ca_file_.c_str());
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(read_timeout_s, 0);
    cli.set_write_timeout(10, 0);
    httplib::Headers h;
    for (const auto& [k, v] : headers) h.emplace(k, v);
    httplib::Result res(nullptr, httplib::Error::Unknown);
    if (method == "GET") res = cli.Get(target, h);
    else if (method == "POST") res = cli.Post(target, h, body, "application/json");
    else if (method == "PUT") res = cli.Put(target, h, body, "application/json");
    else if (method == "DELETE") res = cli.Delete(target, h, body, "application/json");
    else return internal_error("unsupported method " + method);
    if (!res)
      return unavailable("cannot reach the coordinator at " + server_ + ": " +
                         httplib::to_string(res.error()));
    Response r{res->status, res->body};
    last_status_ = res->status;
    r.body = res->body;
    if (res->has_header(kHdrAuth)) last_mac_ = res->get_header_value(kHdrAuth);
    else last_mac_.clear();
    return r;
  } catch (const std::exception& e) {
    return unavailable("request to " + server_ + " failed: " + e.what());
  }
}

Result<PublicKey> Client::coordinator_key() {
  MESH_ASSIGN(auto r, send("GET", "/v1/info", {}, "", 10));
  if (r.status != 200) return http_error(r);
  MESH_ASSIGN(auto j, parse_json(r.body, "coordinator /v1/info"));
  JsonView v(j, "coordinator /v1/info");
  MESH_ASSIGN(auto k, v.get_string("coordinator_public_key"));
  return PublicKey::from_base64(k);
}

Result<Response> Client::peer(const std::string& method, const std::string& target,
                              const SecretKey& node, const PublicKey& coord,
                              const std::string& body, int read_timeout_s) {
  PublicKey me = node.public_key();
  auto keys = derive_session_keys(node, coord, me, coord);
  if (!keys) return keys.status().with_context("coordinator key");
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  uint8_t nb[16];
  random_bytes(nb, sizeof nb);
  std::string nonce = base64url_encode(nb);
  std::string mac = request_mac(keys->request, method, target, now, nonce, body);
  std::vector<std::pair<std::string, std::string>> h{{kHdrKey, me.to_base64()},
                                                     {kHdrTime, std::to_string(now)},
                                                     {kHdrNonce, nonce},
                                                     {kHdrAuth, mac}};
  // At debug level the exact signed request is logged (it is single-use:
  // the nonce makes a replay fail), which is how the tests capture one.
  log_.debug("request " + method + " " + server_ + target + " " + kHdrKey + ": " + me.to_base64() +
             " " + kHdrTime + ": " + std::to_string(now) + " " + kHdrNonce + ": " + nonce + " " +
             kHdrAuth + ": " + mac);
  MESH_ASSIGN(auto r, send(method, target, h, body, read_timeout_s));
  bool authentic = !last_mac_.empty() &&
                   mac_equal(last_mac_, response_mac(keys->response, r.status, nonce, r.body));
  if (r.status >= 200 && r.status < 300) {
    if (!authentic)
      return no_permission("response from " + server_ +
                           " is not authenticated by the coordinator key (wrong "
                           "--coordinator-key, or tampered with in transit)");
    return r;
  }
  Status s = http_error(r);
  if (!authentic) return Status(s.code(), s.message() + " (unauthenticated response)");
  return s;
}

Result<Json> Client::admin(const std::string& method, const std::string& target,
                           const std::string& token, const std::string& body) {
  MESH_ASSIGN(auto r, send(method, target, {{"Authorization", "Bearer " + token}}, body, 60));
  if (r.status < 200 || r.status >= 300) return http_error(r);
  return parse_json(r.body, "coordinator response");
}

}  // namespace mesh::coord
