// `mesh-coord refresh`: fetch this node's registration again (GET /v1/self)
// and update the registration file. During a coordinator key rotation's
// overlap this is how a node pinned to the previous key learns the new one:
// the answer is authenticated by the key the node trusts (man/mesh-coord.8,
// Coordinator key rotation).
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_refresh(Context& ctx, int argc, char** argv) {
  CLI::App app("Fetch this node's registration again (learns a new coordinator key)");
  PeerTarget t;
  std::string state;
  app.add_option("--state", state, "mesh-up state directory: DIR/node.key, DIR/registration.json");
  app.add_option("--registration", t.registration,
                 "registration JSON saved from 'mesh-coord join' (updated in place)");
  app.add_option("--key", t.key_file, "this node's WireGuard private key file");
  app.add_option("--ca-file", t.ca_file, "CA certificates for an https coordinator");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (!state.empty()) {
    if (!t.key_file.empty() || !t.registration.empty())
      return report(ctx, usage_error("--state names the key and registration files: "
                                     "give it without --key and --registration"));
    t.key_file = state + "/node.key";
    t.registration = state + "/registration.json";
  }
  if (t.key_file.empty() || t.registration.empty())
    return report(ctx, usage_error("give --state DIR, or --registration FILE and --key FILE"));
  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  auto reg = read_json_file(t.registration);
  if (!reg) return report(ctx, reg.status());
  Client cli(c->servers, c->ca_file, ctx.log);
  auto r = cli.peer("GET", "/v1/self", c->node, c->coordinator, "", 30);
  if (!r) return report(ctx, r.status());
  auto j = parse_json(r->body, "coordinator response");
  if (!j) return report(ctx, j.status());
  JsonView v(*j, "coordinator response");
  auto key = v.get_string("public_key");
  auto coord = key ? v.get_string("coordinator_public_key") : Result<std::string>(key.status());
  if (!coord) return report(ctx, coord.status());
  if (*key != c->node.public_key().to_base64())
    return report(ctx, data_error("coordinator response: public_key: not this node's key"));
  auto next = PublicKey::from_base64(*coord);
  if (!next) return report(ctx, next.status().with_context("coordinator_public_key"));
  bool changed = *next != c->coordinator;
  Json updated = *reg;
  for (const auto& [k, val] : j->items()) updated[k] = val;
  if (updated != *reg)
    if (Status s = write_file_atomic(t.registration, dump_json(updated) + "\n", 0600); !s)
      return report(ctx, s);
  if (changed)
    ctx.log.info("the coordinator key is now " + *coord + " (was " + c->coordinator.to_base64() + ")");
  updated["coordinator_key_changed"] = changed;
  return print_json(ctx, updated);
}

}  // namespace mesh::coord
