#include "coord/client.h"

#include <httplib.h>

#include <ifaddrs.h>
#include <netdb.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "coord/auth.h"
#include "core/base64.h"
#include "core/net.h"

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
                              const std::string& body, int read_timeout_s,
                              const std::string& content_type) {
  last_status_ = 0;
  last_connected_ = false;
  const std::string& url = server();
  try {
    httplib::Client cli(url);
    if (!cli.is_valid()) return usage_error("invalid server URL '" + url + "'");
    if (!ca_file_.empty()) cli.set_ca_cert_path(ca_file_.c_str());
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(read_timeout_s, 0);
    cli.set_write_timeout(10, 0);
    httplib::Headers h;
    for (const auto& [k, v] : headers) h.emplace(k, v);
    httplib::Result res(nullptr, httplib::Error::Unknown);
    if (method == "GET") res = cli.Get(target, h);
    else if (method == "POST") res = cli.Post(target, h, body, content_type.c_str());
    else if (method == "PUT") res = cli.Put(target, h, body, content_type.c_str());
    else if (method == "DELETE") res = cli.Delete(target, h, body, content_type.c_str());
    else return internal_error("unsupported method " + method);
    if (!res) {
      // Only these mean the request never left: anything later (a read or
      // write error) may have reached the server.
      auto e = res.error();
      last_connected_ = e != httplib::Error::Connection && e != httplib::Error::ConnectionTimeout &&
                        e != httplib::Error::SSLConnection;
      return unavailable("cannot reach the coordinator at " + url + ": " +
                         httplib::to_string(e));
    }
    last_connected_ = true;
    Response r{res->status, res->body};
    last_status_ = res->status;
    r.body = res->body;
    if (res->has_header(kHdrAuth)) last_mac_ = res->get_header_value(kHdrAuth);
    else last_mac_.clear();
    last_sealed_ = res->get_header_value(kHdrSeal) == "1";
    return r;
  } catch (const std::exception& e) {
    last_connected_ = true;  // unknown: assume it may have been sent
    return unavailable("request to " + url + " failed: " + e.what());
  }
}

Result<Response> Client::with_failover(Retry retry,
                                       const std::function<Result<Response>()>& attempt) {
  std::string tried;
  for (size_t i = 0;; ++i) {
    auto r = attempt();
    bool answered = last_status_ != 0;
    bool overloaded = last_status_ == 502 || last_status_ == 503 || last_status_ == 504;
    bool move = i + 1 < servers_.size() &&
                ((retry == Retry::Always && (!answered || overloaded)) ||
                 (retry == Retry::IfNotConnected && !answered && !last_connected_));
    if (!move) {
      if (r || answered || tried.empty()) return r;
      return Status(r.status().code(), "no coordinator answered: " + tried + "; " +
                                           r.status().message());
    }
    std::string why = r ? "HTTP " + std::to_string(last_status_) : r.status().message();
    tried += (tried.empty() ? "" : "; ") + why;
    const std::string& from = server();
    current_ = (current_ + 1) % servers_.size();
    log_.warn("coordinator " + from + " failed (" + why + "); trying " + server());
  }
}

Result<SetupKeyText> parse_setup_key(std::string_view text) {
  SetupKeyText k;
  size_t dot = text.find('.');
  k.secret = std::string(text.substr(0, dot));
  if (k.secret.empty()) return data_error("setup key: empty");
  if (dot == std::string_view::npos) return k;
  auto raw = base64url_decode(text.substr(dot + 1));
  if (!raw || raw->size() != kKeyLen)
    return data_error("setup key: the part after '.' is not a coordinator key");
  PublicKey pk;
  std::copy(raw->begin(), raw->end(), pk.bytes.begin());
  k.coordinator = pk;
  return k;
}

std::string format_setup_key(std::string_view secret, const PublicKey& coordinator) {
  return std::string(secret) + "." + base64url_encode(coordinator.bytes);
}

// The addresses of this host's interfaces (all namespaces' views are the
// caller's own: a coordinator in the same namespace counts as local).
static std::set<IpAddr> local_addresses() {
  std::set<IpAddr> out;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) return out;
  for (ifaddrs* i = ifa; i; i = i->ifa_next)
    if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6))
      out.insert(SockAddr::from_sockaddr(i->ifa_addr).ip);
  ::freeifaddrs(ifa);
  return out;
}

bool plain_http_to_other_host(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  std::string host = url.substr(scheme.size());
  host = host.substr(0, host.find('/'));
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.find(']') - 1);
  else host = host.substr(0, host.find(':'));
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return true;
  std::set<IpAddr> local = local_addresses();
  bool other = false;
  for (addrinfo* a = res; a; a = a->ai_next) {
    IpAddr ip = SockAddr::from_sockaddr(a->ai_addr).ip;
    if (!ip.is_loopback() && !local.count(ip)) other = true;
  }
  ::freeaddrinfo(res);
  return other;
}

Status check_map_overlay(const Json& map) {
  std::vector<Prefix> overlay;
  if (map.contains("self") && map["self"].contains("addresses"))
    for (const auto& a : map["self"]["addresses"])
      if (a.is_string())
        if (auto p = Prefix::parse(a.get<std::string>())) overlay.push_back(p->canonical());
  if (!map.contains("peers") || !map["peers"].is_array()) return Status::ok();
  for (const auto& p : map["peers"]) {
    if (!p.is_object() || !p.contains("allowed_ips") || !p["allowed_ips"].is_array()) continue;
    for (const auto& a : p["allowed_ips"]) {
      auto ip = a.is_string() ? Prefix::parse(a.get<std::string>()) : Result<Prefix>(data_error(""));
      bool inside = false;
      for (const auto& o : overlay) inside = inside || (ip && o.contains(*ip));
      if (!inside)
        return Status(Exit::NoPerm, "map refused: peer '" + p.value("name", std::string("?")) +
                                        "' is given allowed IP " + a.dump() +
                                        ", outside the overlay prefixes of self.addresses");
    }
  }
  return Status::ok();
}

Result<PublicKey> Client::coordinator_key() {
  MESH_ASSIGN(auto r, with_failover(Retry::Always, [&] {
                return send("GET", "/v1/info", {}, "", 10, "");
              }));
  if (r.status != 200) return http_error(r);
  MESH_ASSIGN(auto j, parse_json(r.body, "coordinator /v1/info"));
  JsonView v(j, "coordinator /v1/info");
  MESH_ASSIGN(auto k, v.get_string("coordinator_public_key"));
  return PublicKey::from_base64(k);
}

std::string Client::new_nonce() {
  uint8_t nb[16];
  random_bytes(nb, sizeof nb);
  return base64url_encode(nb);
}

Result<Response> Client::peer(const std::string& method, const std::string& target,
                              const SecretKey& node, const PublicKey& coord,
                              const std::string& body, int read_timeout_s) {
  // Each attempt is signed afresh (its own time and nonce).
  return with_failover(Retry::Always, [&] {
    return peer_once(method, target, node, coord, body, new_nonce(), read_timeout_s);
  });
}

Result<Response> Client::peer(const std::string& method, const std::string& target,
                              const SecretKey& node, const PublicKey& coord,
                              const std::string& body, const std::string& nonce,
                              int read_timeout_s) {
  return with_failover(Retry::Always, [&] {
    return peer_once(method, target, node, coord, body, nonce, read_timeout_s);
  });
}

Result<Response> Client::peer_once(const std::string& method, const std::string& target,
                                   const SecretKey& node, const PublicKey& coord,
                                   const std::string& body, const std::string& nonce,
                                   int read_timeout_s) {
  const std::string& url = server();
  PublicKey me = node.public_key();
  auto keys = derive_session_keys(node, coord, me, coord);
  if (!keys) return keys.status().with_context("coordinator key");
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  std::string wire = body.empty() ? body : seal_body(keys->seal_request, nonce, body);
  std::string mac = request_mac(keys->request, method, target, now, nonce, wire);
  std::vector<std::pair<std::string, std::string>> h{{kHdrKey, me.to_base64()},
                                                     {kHdrTime, std::to_string(now)},
                                                     {kHdrNonce, nonce},
                                                     {kHdrAuth, mac},
                                                     {kHdrSeal, "1"}};
  // At debug level the exact signed request is logged (it is single-use:
  // the nonce makes a replay fail), which is how the tests capture one.
  log_.debug("request " + method + " " + url + target + " " + kHdrKey + ": " + me.to_base64() +
             " " + kHdrTime + ": " + std::to_string(now) + " " + kHdrNonce + ": " + nonce + " " +
             kHdrAuth + ": " + mac + " " + kHdrSeal + ": 1" +
             (wire.empty() ? "" : " body: " + base64_encode(std::span(
                                                  reinterpret_cast<const uint8_t*>(wire.data()),
                                                  wire.size()))));
  MESH_ASSIGN(auto r, send(method, target, h, wire, read_timeout_s, "application/octet-stream"));
  bool authentic = !last_mac_.empty() &&
                   mac_equal(last_mac_, response_mac(keys->response, r.status, nonce, r.body));
  if (authentic && last_sealed_ && !r.body.empty()) {
    MESH_ASSIGN(r.body, open_body(keys->seal_response, nonce, r.body));
  }
  if (r.status >= 200 && r.status < 300) {
    if (!authentic)
      return no_permission("response from " + url +
                           " is not authenticated by the coordinator key (wrong "
                           "--coordinator-key, or tampered with in transit)");
    // A sealed request always gets a sealed answer: an unsealed one would
    // have carried the map's relay passwords in clear.
    if (!last_sealed_)
      return no_permission("response from " + url + " is not sealed (coordinator too old?)");
    return r;
  }
  Status s = http_error(r);
  if (!authentic) return Status(s.code(), s.message() + " (unauthenticated response)");
  return s;
}

Result<Json> Client::admin(const std::string& method, const std::string& target,
                           const std::string& token, const std::string& body) {
  MESH_ASSIGN(auto r, with_failover(Retry::IfNotConnected, [&] {
                return send(method, target, {{"Authorization", "Bearer " + token}}, body, 60,
                            "application/json");
              }));
  if (r.status < 200 || r.status >= 300) return http_error(r);
  return parse_json(r.body, "coordinator response");
}

}  // namespace mesh::coord
