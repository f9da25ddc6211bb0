#include <nlohmann/json.hpp>

#include "common.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_join(Context& ctx, int argc, char** argv) {
  CLI::App app("Enrol this node with a setup key; prints the registration JSON");
  std::string server, setup_key_file, key_file, name, name_hint, coord_key, ca_file;
  app.add_option("--server", server, "coordinator URL (http://HOST:PORT)")->required();
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
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  std::string warning;
  auto node = read_private_key_file(key_file, &warning);
  if (!node) return report(ctx, node.status());
  if (!warning.empty()) ctx.log.warn(warning);
  auto sk_text = read_file(setup_key_file, 4096);
  if (!sk_text) return report(ctx, sk_text.status());
  std::string setup_key(trim_key_text(*sk_text));
  wipe(*sk_text);
  if (setup_key.empty()) return report(ctx, data_error(setup_key_file + ": empty setup key"));

  Client cli(server, ca_file, ctx.log);
  PublicKey coord;
  if (!coord_key.empty()) {
    auto k = PublicKey::from_base64(coord_key);
    if (!k) return report(ctx, k.status().with_context("--coordinator-key"));
    coord = *k;
  } else {
    auto k = cli.coordinator_key();
    if (!k) return report(ctx, k.status());
    coord = *k;
  }
  Json body{{"setup_key", setup_key}};
  wipe(setup_key);
  if (!name.empty()) body["name"] = name;
  if (!name_hint.empty()) body["name_hint"] = name_hint;
  std::string text = dump_json(body);
  auto r = cli.peer("POST", "/v1/join", *node, coord, text, 30);
  wipe(text);
  if (!r) return report(ctx, r.status());
  auto reg = parse_json(r->body, "coordinator response");
  if (!reg) return report(ctx, reg.status());
  (*reg)["server"] = server;
  return print_json(ctx, *reg);
}

}  // namespace mesh::coord
