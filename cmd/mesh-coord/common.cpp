#include "common.h"

#include <nlohmann/json.hpp>

#include "core/file.h"

namespace mesh::coord {

void add_peer_options(CLI::App& app, PeerTarget& t) {
  app.add_option("--registration", t.registration,
                 "registration JSON saved from 'mesh-coord join' (server URL and coordinator key)");
  app.add_option("--server", t.servers,
                 "coordinator URL, repeated for replicas (overrides the registration's)")
      ->allow_extra_args(false);
  app.add_option("--coordinator-key", t.coordinator_key,
                 "coordinator public key (base64), when not using --registration");
  app.add_option("--key", t.key_file, "this node's WireGuard private key file")->required();
  app.add_option("--ca-file", t.ca_file, "CA certificates for an https coordinator");
}

Result<std::vector<std::string>> registration_servers(const Json& reg, const std::string& what) {
  if (reg.is_object() && reg.contains("servers")) {
    const Json& s = reg["servers"];
    std::vector<std::string> out;
    if (s.is_array())
      for (const auto& u : s)
        if (u.is_string() && !u.get<std::string>().empty()) out.push_back(u.get<std::string>());
    if (out.empty() || !s.is_array() || out.size() != s.size())
      return data_error(what + ": servers: expected a non-empty array of URLs");
    return out;
  }
  JsonView v(reg, what);
  MESH_ASSIGN(auto one, v.get_string("server"));
  return std::vector<std::string>{one};
}

Result<PeerConn> resolve_peer(Context& ctx, const PeerTarget& t) {
  PeerConn c;
  c.ca_file = t.ca_file;
  std::string coord = t.coordinator_key;
  c.servers = t.servers;
  if (!t.registration.empty()) {
    MESH_ASSIGN(auto j, read_json_file(t.registration));
    JsonView v(j, t.registration);
    if (c.servers.empty()) { MESH_ASSIGN(c.servers, registration_servers(j, t.registration)); }
    if (coord.empty()) { MESH_ASSIGN(coord, v.get_string("coordinator_public_key")); }
  }
  if (c.servers.empty()) return usage_error("give --registration FILE or --server URL");
  if (coord.empty()) return usage_error("give --registration FILE or --coordinator-key KEY");
  auto k = PublicKey::from_base64(coord);
  if (!k) return k.status().with_context("coordinator key");
  c.coordinator = *k;
  std::string warning;
  auto node = read_private_key_file(t.key_file, &warning);
  if (!node) return node.status();
  if (!warning.empty()) ctx.log.warn(warning);
  c.node = *node;
  return c;
}

void add_admin_options(CLI::App& app, AdminTarget& t) {
  app.add_option("--server", t.servers, "coordinator URL, repeated for replicas (tried in order)")
      ->required()
      ->allow_extra_args(false);
  app.add_option("--admin-token-file", t.token_file,
                 "file holding the admin token (default: $MESH_ADMIN_TOKEN)");
  app.add_option("--ca-file", t.ca_file, "CA certificates for an https coordinator");
  app.add_flag("--insecure", t.insecure,
               "send the admin token over plain http to another host (readable on the way)");
  app.add_flag("--json", t.json, "machine output: one JSON document");
}

Result<std::string> admin_token(Context& ctx, const AdminTarget& t) {
  // The token is a bearer secret: over plain http it must not leave the host.
  for (const auto& url : t.servers)
    if (!t.insecure && plain_http_to_other_host(url))
      return usage_error("refusing to send the admin token in clear to " + url +
                         ": use https, run the verb on the coordinator's host, or --insecure");
  if (!t.token_file.empty()) {
    MESH_ASSIGN(auto text, read_file(t.token_file, 4096));
    std::string tok(trim_key_text(text));
    wipe(text);
    if (tok.empty()) return data_error(t.token_file + ": empty admin token");
    return tok;
  }
  const char* env = ctx.env ? ctx.env("MESH_ADMIN_TOKEN") : nullptr;
  if (env && *env) return std::string(env);
  return usage_error("no admin token: give --admin-token-file FILE or set MESH_ADMIN_TOKEN");
}

Result<Json> enrol(Client& cli, const std::string& target, const SecretKey& node,
                   const PublicKey& coord, Json body, const std::string& name,
                   const std::string& name_hint, bool* pending) {
  if (!name.empty()) body["name"] = name;
  if (!name_hint.empty()) body["name_hint"] = name_hint;
  std::string text = dump_json(body);
  auto r = cli.peer("POST", target, node, coord, text, 30);
  wipe(text);
  if (!r) return r.status();
  MESH_ASSIGN(auto reg, parse_json(r->body, "coordinator response"));
  if (pending) *pending = r->status == 202;
  if (r->status == 202) return reg;
  reg["server"] = cli.servers().front();
  reg["servers"] = cli.servers();
  return reg;
}

int print_json(Context& ctx, const Json& j) {
  ctx.out << dump_json(j, ctx.stdout_tty) << "\n" << std::flush;
  if (!ctx.out) return report(ctx, io_error("cannot write to standard output"));
  return 0;
}

}  // namespace mesh::coord
