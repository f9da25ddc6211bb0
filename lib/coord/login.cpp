#include "coord/login.h"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

namespace mesh::coord {
namespace {

Status show_device_prompt(const LoginIo& io, const Json& p) {
  std::string uri_complete = oidc::str_field(p, "verification_uri_complete");
  return io.prompt("to log in, open " + oidc::str_field(p, "verification_uri") + " and enter the code " +
                       oidc::str_field(p, "user_code") +
                       (uri_complete.empty() ? "" : " (or open " + uri_complete + ")"),
                   p);
}

// RFC 8628 3.5: at most one poll per interval (5 s by default), unless
// the caller sets the pace (tests against a local provider).
int64_t poll_ms(const LoginIo& io, int interval) {
  if (io.poll_ms > 0) return std::clamp<int64_t>(io.poll_ms, 50, 60000);
  return std::clamp(interval, 1, 60) * int64_t{1000};
}

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_for(int expires_in, const LoginIo& io) {
  return Clock::now() + std::chrono::seconds(std::min(expires_in, io.timeout_s > 0 ? io.timeout_s : expires_in));
}

Status timed_out(const std::string& user_code) {
  return temp_failure("login timed out: the code " + user_code + " was not approved in time");
}

}  // namespace

Result<std::string> node_device_flow(const oidc::Discovery& disc, const oauth::ClientAuth& client,
                                     const std::string& scope, const std::string& ca_file,
                                     const LoginIo& io) {
  MESH_ASSIGN(auto da, oauth::start_device(disc, client, scope, ca_file));
  MESH_TRY(show_device_prompt(io, da.prompt()));
  auto deadline = deadline_for(da.expires_in, io);
  int64_t wait_ms = poll_ms(io, da.interval);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    if (Clock::now() > deadline) return timed_out(da.user_code);
    MESH_ASSIGN(auto p, oauth::poll_device(disc, client, da.device_code, ca_file));
    if (!p.id_token.empty()) return p.id_token;
    if (p.slow_down) wait_ms += 5000;
  }
}

Result<Json> coordinator_device_flow(Client& cli, const SecretKey& node, const PublicKey& coord,
                                     const std::string& scope, const LoginIo& io,
                                     const HandlePoll& poll) {
  MESH_ASSIGN(auto r, cli.peer("POST", "/v1/login/device", node, coord,
                               dump_json(Json{{"scope", scope}}), 30));
  MESH_ASSIGN(auto da, parse_json(r.body, "coordinator response"));
  std::string handle = oidc::str_field(da, "device_handle");
  if (handle.empty()) return unavailable("the coordinator's device login answer has no device_handle");
  Json prompt = da;
  prompt.erase("device_handle");
  prompt.erase("interval");
  MESH_TRY(show_device_prompt(io, prompt));
  auto deadline = deadline_for(da.value("expires_in", 600), io);
  int64_t wait_ms = poll_ms(io, da.value("interval", 5));
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    if (Clock::now() > deadline) return timed_out(oidc::str_field(da, "user_code"));
    bool pending = false;
    MESH_ASSIGN(auto reg, poll(handle, &pending));
    if (!pending) return reg;
  }
}

Result<CodeGrant> browser_flow(const oidc::Discovery& disc, const std::string& client_id,
                               const std::string& scope, const LoginIo& io) {
  if (disc.authorization_endpoint.empty())
    return unavailable("the identity provider " + disc.issuer + " has no authorization_endpoint");
  MESH_ASSIGN(auto rx, oauth::LoopbackReceiver::start());
  CodeGrant g;
  g.verifier = oauth::pkce_verifier();
  g.nonce = random_token(16);
  g.redirect_uri = rx->redirect_uri();
  std::string state = random_token(16);
  std::string url = oauth::authorization_url(
      disc.authorization_endpoint,
      {client_id, g.redirect_uri, scope, state, g.nonce, oauth::pkce_challenge(g.verifier)});
  MESH_TRY(io.prompt("to log in, open " + url + " in a browser on this machine",
                       Json{{"authorization_url", url}, {"redirect_uri", g.redirect_uri}}));
  MESH_ASSIGN(auto red, rx->wait(std::chrono::seconds(io.timeout_s > 0 ? io.timeout_s : 600)));
  MESH_ASSIGN(g.code, oauth::check_redirect(red, state));
  return g;
}

}  // namespace mesh::coord
