// `mesh-coord login`: enrol (or renew) this node with a login at the
// coordinator's OpenID provider instead of a setup key. Runs the OAuth 2.0
// Device Authorization Grant (RFC 8628) against the provider itself; the
// coordinator only verifies the resulting ID token.
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "common.h"
#include "coord/oidc.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {
namespace {

constexpr const char* kDeviceGrant = "urn:ietf:params:oauth:grant-type:device_code";

std::string str(const Json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : "";
}

// RFC 8628 3.4-3.5: poll the token endpoint until the user has approved.
Result<std::string> device_flow(Context& ctx, const std::string& issuer, const std::string& client,
                                const std::string& secret, const std::string& scope,
                                const std::string& ca_file, int timeout_s) {
  MESH_ASSIGN(auto disc, oidc::discover(issuer, ca_file));
  if (disc.device_authorization_endpoint.empty())
    return unavailable("the identity provider " + issuer +
                       " does not offer the device flow (no device_authorization_endpoint)");
  std::vector<std::pair<std::string, std::string>> auth{{"client_id", client}, {"scope", scope}};
  if (!secret.empty()) auth.emplace_back("client_secret", secret);
  MESH_ASSIGN(auto da, oidc::http_post_form(disc.device_authorization_endpoint, auth, ca_file));
  if (da.status != 200)
    return unavailable("device authorization refused by the identity provider: " +
                       str(da.body, "error") + " " + str(da.body, "error_description"));
  std::string device_code = str(da.body, "device_code");
  std::string user_code = str(da.body, "user_code");
  std::string uri = str(da.body, "verification_uri");
  std::string uri_complete = str(da.body, "verification_uri_complete");
  if (device_code.empty() || user_code.empty() || uri.empty())
    return unavailable("device authorization: the identity provider's answer lacks device_code, "
                       "user_code or verification_uri");
  int interval = da.body.value("interval", 5);
  int expires_in = da.body.value("expires_in", 600);
  ctx.log.warn("to log in, open " + uri + " and enter the code " + user_code +
               (uri_complete.empty() ? "" : " (or open " + uri_complete + ")"));
  Json prompt{{"verification_uri", uri}, {"user_code", user_code}, {"expires_in", expires_in}};
  if (!uri_complete.empty()) prompt["verification_uri_complete"] = uri_complete;
  if (!write_line(ctx, dump_json(prompt) + "\n"))
    return io_error("cannot write to standard output");
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::seconds(std::min(expires_in, timeout_s > 0 ? timeout_s : expires_in));
  // RFC 8628 3.5: at most one poll per interval (5 s by default), but
  // MESH_LOGIN_POLL_MS overrides it for tests against a local provider.
  int64_t poll_ms = std::clamp(interval, 1, 60) * int64_t{1000};
  if (const char* ms = ctx.env ? ctx.env("MESH_LOGIN_POLL_MS") : nullptr; ms && *ms)
    poll_ms = std::clamp<int64_t>(std::atoll(ms), 50, 60000);
  std::vector<std::pair<std::string, std::string>> poll{
      {"grant_type", kDeviceGrant}, {"device_code", device_code}, {"client_id", client}};
  if (!secret.empty()) poll.emplace_back("client_secret", secret);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
    if (std::chrono::steady_clock::now() > deadline)
      return temp_failure("login timed out: the code " + user_code + " was not approved in time");
    MESH_ASSIGN(auto t, oidc::http_post_form(disc.token_endpoint, poll, ca_file));
    if (t.status == 200) {
      std::string id_token = str(t.body, "id_token");
      if (id_token.empty())
        return unavailable("the identity provider issued no ID token (is 'openid' in the scope?)");
      return id_token;
    }
    std::string err = str(t.body, "error");
    if (err == "authorization_pending") continue;
    if (err == "slow_down") {
      poll_ms += 5000;
      continue;
    }
    if (err == "access_denied") return no_permission("login denied at the identity provider");
    if (err == "expired_token")
      return temp_failure("login timed out: the code " + user_code + " expired");
    return unavailable("token request refused by the identity provider: " + err + " " +
                       str(t.body, "error_description"));
  }
}

}  // namespace

int cmd_login(Context& ctx, int argc, char** argv) {
  CLI::App app("Enrol this node (or renew its login) by logging in at the identity provider");
  std::vector<std::string> servers;
  std::string key_file, name, name_hint, coord_key, ca_file, token_file, secret_file, idp_ca_file,
      token_out;
  std::string scope = "openid email profile groups";
  int timeout_s = 600;
  app.add_option("--server", servers,
                 "coordinator URL (http://HOST:PORT), repeated for replicas (tried in order)")
      ->required()
      ->allow_extra_args(false);
  auto* key_opt = app.add_option("--key", key_file, "this node's WireGuard private key file");
  app.add_option("--id-token-out", token_out,
                 "do not enrol: write the ID token to this file (0600), a bearer for admin verbs")
      ->excludes(key_opt);
  auto* name_opt = app.add_option("--name", name, "peer name (default: peer-ID)");
  app.add_option("--name-hint", name_hint, "preferred name when free (else NAME-ID, then peer-ID)")
      ->excludes(name_opt);
  app.add_option("--coordinator-key", coord_key,
                 "expected coordinator public key (default: trust the one the server reports)");
  app.add_option("--ca-file", ca_file, "CA certificates for an https coordinator");
  app.add_option("--idp-ca-file", idp_ca_file, "CA certificates for an https identity provider");
  app.add_option("--id-token-file", token_file,
                 "enrol with this ID token ('-': stdin) instead of running the device flow");
  app.add_option("--client-secret-file", secret_file,
                 "client secret for identity providers that require one for the device flow");
  app.add_option("--scope", scope, "scopes asked for")->capture_default_str();
  app.add_option("--timeout", timeout_s, "seconds to wait for the login to be approved")
      ->capture_default_str();
  bool insecure = false;
  app.add_flag("--insecure", insecure,
               "over plain http to another host, trust the coordinator key the server reports");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (key_file.empty() && token_out.empty())
    return report(ctx, usage_error("give --key (enrol this node) or --id-token-out FILE"));
  if (!token_out.empty() && !token_file.empty())
    return report(ctx, usage_error("--id-token-out runs the device flow: it excludes --id-token-file"));

  Client cli(servers, ca_file, ctx.log);
  std::optional<SecretKey> node;
  std::optional<PublicKey> coord;
  if (!key_file.empty()) {
    std::string warning;
    auto k = read_private_key_file(key_file, &warning);
    if (!k) return report(ctx, k.status());
    if (!warning.empty()) ctx.log.warn(warning);
    node = *k;
    auto c = join_coordinator_key(cli, coord_key, std::nullopt, insecure);
    if (!c) return report(ctx, c.status());
    coord = *c;
  }

  std::string token;
  if (!token_file.empty()) {
    auto t = read_file(token_file, 65536);
    if (!t) return report(ctx, t.status());
    token = std::string(trim_key_text(*t));
    wipe(*t);
    if (token.empty()) return report(ctx, data_error(token_file + ": empty ID token"));
  } else {
    // The first replica that answers tells where to log in.
    auto info = oidc::http_get_json(servers.front() + "/v1/info", ca_file);
    for (size_t i = 1; !info && i < servers.size(); ++i)
      info = oidc::http_get_json(servers[i] + "/v1/info", ca_file);
    if (!info) return report(ctx, info.status());
    const Json& o = info->body.is_object() && info->body.contains("oidc") ? info->body["oidc"] : Json();
    std::string issuer = str(o, "issuer"), client = str(o, "client_id");
    if (issuer.empty() || client.empty())
      return report(ctx, Status(Exit::Unavailable, "the coordinator at " + cli.server() +
                                                       " does not offer login (serve --oidc-issuer)"));
    std::string secret;
    if (!secret_file.empty()) {
      auto s = read_file(secret_file, 4096);
      if (!s) return report(ctx, s.status());
      secret = std::string(trim_key_text(*s));
      wipe(*s);
    }
    auto t = device_flow(ctx, issuer, client, secret, scope, idp_ca_file, timeout_s);
    wipe(secret);
    if (!t) return report(ctx, t.status());
    token = std::move(*t);
  }
  if (!token_out.empty()) {
    Status s = write_file_atomic(token_out, token + "\n", 0600, Overwrite::Yes);
    wipe(token);
    return report(ctx, s);
  }
  Json body{{"id_token", token}};
  wipe(token);
  auto reg = enrol(cli, "/v1/login", *node, *coord, std::move(body), name, name_hint);
  if (!reg) return report(ctx, reg.status());
  if (!write_line(ctx, dump_json(*reg) + "\n"))
    return report(ctx, io_error("cannot write to standard output"));
  return 0;
}

}  // namespace mesh::coord
