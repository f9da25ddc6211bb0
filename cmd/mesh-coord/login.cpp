// `mesh-coord login`: enrol (or renew) this node with a login at the
// coordinator's OpenID provider instead of a setup key. Runs the OAuth 2.0
// Device Authorization Grant (RFC 8628), or with --browser the
// Authorization Code Grant with PKCE and a loopback redirect (RFC 7636,
// RFC 8252). With a public client the node makes the token requests; when
// the coordinator holds the client secret (serve --oidc-client-secret-file)
// the coordinator makes them and the node never sees the secret.
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common.h"
#include "coord/login.h"
#include "coord/oauth.h"
#include "coord/oidc.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {
namespace {

// What a person must do, on stderr for them and as one JSON line on stdout
// for scripts.
LoginIo login_io(Context& ctx, int timeout_s) {
  LoginIo io;
  io.prompt = [&ctx](const std::string& text, const Json& doc) -> Status {
    ctx.log.warn(text);
    if (!write_line(ctx, dump_json(doc) + "\n")) return io_error("cannot write to standard output");
    return Status::ok();
  };
  io.timeout_s = timeout_s;
  // For tests against a local provider (mesh-coord(8), ENVIRONMENT).
  if (const char* ms = ctx.env ? ctx.env("MESH_LOGIN_POLL_MS") : nullptr; ms && *ms)
    io.poll_ms = std::atoll(ms);
  return io;
}

int print_registration(Context& ctx, const Json& reg) {
  if (!write_line(ctx, dump_json(reg) + "\n")) return report(ctx, io_error("cannot write to standard output"));
  return 0;
}

}  // namespace

int cmd_login(Context& ctx, int argc, char** argv) {
  CLI::App app("Enrol this node (or renew its login) by logging in at the identity provider");
  std::vector<std::string> servers;
  std::string key_file, name, name_hint, coord_key, ca_file, token_file, secret_file, idp_ca_file,
      token_out;
  std::string scope = "openid email profile groups";
  int timeout_s = 600;
  bool browser = false;
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
  auto* token_opt = app.add_option("--id-token-file", token_file,
                 "enrol with this ID token ('-': stdin) instead of running the device flow");
  app.add_flag("--browser", browser,
               "log in with a browser on this machine (authorization code with PKCE, redirect to "
               "127.0.0.1) instead of the device flow")
      ->excludes(token_opt);
  app.add_option("--client-secret-file", secret_file,
                 "client secret for identity providers that require one (unless the coordinator "
                 "holds it)");
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

  // What the coordinator sends: the ID token (the node ran the flow), or the
  // code grant or device handle the coordinator completes with its secret.
  Json body;
  if (!token_file.empty()) {
    auto t = read_file(token_file, 65536);
    if (!t) return report(ctx, t.status());
    body["id_token"] = std::string(trim_key_text(*t));
    wipe(*t);
    if (body["id_token"].get_ref<const std::string&>().empty())
      return report(ctx, data_error(token_file + ": empty ID token"));
  } else {
    // The first replica that answers tells where to log in.
    auto info = oidc::http_get_json(servers.front() + "/v1/info", ca_file);
    for (size_t i = 1; !info && i < servers.size(); ++i)
      info = oidc::http_get_json(servers[i] + "/v1/info", ca_file);
    if (!info) return report(ctx, info.status());
    const Json& o = info->body.is_object() && info->body.contains("oidc") ? info->body["oidc"] : Json();
    oauth::ClientAuth client{oidc::str_field(o, "client_id"), ""};
    std::string issuer = oidc::str_field(o, "issuer");
    if (issuer.empty() || client.client_id.empty())
      return report(ctx, Status(Exit::Unavailable, "the coordinator at " + cli.server() +
                                                       " does not offer login (serve --oidc-issuer)"));
    if (!secret_file.empty()) {
      auto s = read_file(secret_file, 4096);
      if (!s) return report(ctx, s.status());
      client.secret = std::string(trim_key_text(*s));
      wipe(*s);
    }
    // The coordinator makes the token requests when it holds the secret and
    // this node was given none.
    bool via_coordinator = o.value("confidential", false) && client.secret.empty();
    if (via_coordinator && !token_out.empty())
      return report(ctx, usage_error("the coordinator holds the client secret: --id-token-out needs "
                                     "--client-secret-file (or log in with --key)"));
    if (via_coordinator && !browser) {
      auto reg = coordinator_device_flow(
          cli, *node, *coord, scope, login_io(ctx, timeout_s),
          [&](const std::string& handle, bool* pending) {
            return enrol(cli, "/v1/login", *node, *coord, Json{{"device_handle", handle}}, name,
                         name_hint, pending);
          });
      if (!reg) return report(ctx, reg.status());
      return print_registration(ctx, *reg);
    }
    auto disc = oidc::discover(issuer, idp_ca_file);
    if (!disc) return report(ctx, disc.status());
    Result<std::string> token = std::string();
    if (browser) {
      auto g = browser_flow(*disc, client.client_id, scope, login_io(ctx, timeout_s));
      if (!g) return report(ctx, g.status());
      body["nonce"] = g->nonce;
      if (via_coordinator) {
        body["code"] = g->code;
        body["code_verifier"] = g->verifier;
        body["redirect_uri"] = g->redirect_uri;
      } else {
        token = oauth::exchange_code(*disc, client, g->code, g->verifier, g->redirect_uri, idp_ca_file);
        if (token)
          if (Status n = oauth::check_nonce(*token, g->nonce); !n) {
            wipe(*token);
            return report(ctx, n);
          }
      }
    } else {
      token = node_device_flow(*disc, client, scope, idp_ca_file, login_io(ctx, timeout_s));
    }
    if (!token) return report(ctx, token.status());
    if (!token->empty()) body["id_token"] = std::move(*token);
  }
  if (!token_out.empty()) {
    std::string token = body["id_token"];
    body.clear();
    Status s = write_file_atomic(token_out, token + "\n", 0600, Overwrite::Yes);
    wipe(token);
    return report(ctx, s);
  }
  auto reg = enrol(cli, "/v1/login", *node, *coord, std::move(body), name, name_hint);
  if (!reg) return report(ctx, reg.status());
  return print_registration(ctx, *reg);
}

}  // namespace mesh::coord
