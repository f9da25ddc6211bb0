#include <nlohmann/json.hpp>

#include "common.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {

// Which coordinator key a join trusts: the one the setup key carries, or
// --coordinator-key (they must agree), or else the one /v1/info reports,
// which a man in the middle could replace: only over https or to this host,
// unless --insecure.
Result<PublicKey> join_coordinator_key(Client& cli, const std::string& flag,
                                              const std::optional<PublicKey>& pinned,
                                              bool insecure) {
  if (!flag.empty()) {
    auto k = PublicKey::from_base64(flag);
    if (!k) return k.status().with_context("--coordinator-key");
    if (pinned && *pinned != *k)
      return data_error("--coordinator-key " + flag + " is not the coordinator key the setup key "
                        "carries (" + pinned->to_base64() + ")");
    return *k;
  }
  if (pinned) return *pinned;
  for (const auto& url : cli.servers())
    if (plain_http_to_other_host(url) && !insecure)
      return usage_error("refusing to learn the coordinator key over plain http from " + url +
                         " (a man in the middle could answer): use a setup key "
                         "that carries it, --coordinator-key, https, or --insecure");
  return cli.coordinator_key();
}

int cmd_join(Context& ctx, int argc, char** argv) {
  CLI::App app("Enrol this node with a setup key; prints the registration JSON");
  std::vector<std::string> servers;
  std::string setup_key_file, key_file, name, name_hint, coord_key, ca_file;
  app.add_option("--server", servers,
                 "coordinator URL (http://HOST:PORT), repeated for replicas (tried in order)")
      ->required()
      ->allow_extra_args(false);
  app.add_option("--setup-key-file", setup_key_file, "file holding the setup key ('-': stdin)")
      ->required();
  app.add_option("--key", key_file, "this node's WireGuard private key file")->required();
  auto* name_opt = app.add_option("--name", name, "peer name (default: the setup key's, else peer-ID)");
  app.add_option("--name-hint", name_hint,
                 "preferred name when free (else NAME-ID, then peer-ID); a bound key ignores it")
      ->excludes(name_opt);
  app.add_option("--coordinator-key", coord_key,
                 "expected coordinator public key (default: trust the one the server reports)");
  app.add_option("--ca-file", ca_file, "CA certificates for an https coordinator");
  bool insecure = false;
  app.add_flag("--insecure", insecure,
               "over plain http to another host, trust the coordinator key the server reports");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  std::string warning;
  auto node = read_private_key_file(key_file, &warning);
  if (!node) return report(ctx, node.status());
  if (!warning.empty()) ctx.log.warn(warning);
  auto sk_text = read_file(setup_key_file, 4096);
  if (!sk_text) return report(ctx, sk_text.status());
  auto sk = parse_setup_key(trim_key_text(*sk_text));
  wipe(*sk_text);
  if (!sk) return report(ctx, sk.status().with_context(setup_key_file));

  Client cli(servers, ca_file, ctx.log);
  auto coord = join_coordinator_key(cli, coord_key, sk->coordinator, insecure);
  if (!coord) {
    wipe(sk->secret);
    return report(ctx, coord.status());
  }
  Json body{{"setup_key", sk->secret}};
  wipe(sk->secret);
  auto reg = enrol(cli, "/v1/join", *node, *coord, std::move(body), name, name_hint);
  if (!reg) return report(ctx, reg.status());
  return print_json(ctx, *reg);
}

}  // namespace mesh::coord
