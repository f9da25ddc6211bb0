#include <nlohmann/json.hpp>

#include "common.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_punch(Context& ctx, int argc, char** argv) {
  CLI::App app("Ask peers, through the coordinator, to probe towards this node now (call me maybe)");
  PeerTarget t;
  std::vector<std::string> peers;
  add_peer_options(app, t);
  app.add_option("--peer", peers, "public key (base64) of a peer to ask (repeatable, 1-64)")
      ->required();
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (peers.size() > 64) return report(ctx, usage_error("--peer: at most 64 peers per request"));
  Json keys = Json::array();
  for (const auto& p : peers) {
    auto k = PublicKey::from_base64(p);
    if (!k) return report(ctx, k.status().with_context("--peer " + p));
    keys.push_back(k->to_base64());
  }
  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  Client cli(c->servers, c->ca_file, ctx.log);
  auto r = cli.peer("POST", "/v1/punch", c->node, c->coordinator, dump_json(Json{{"peers", keys}}), 30);
  if (!r) return report(ctx, r.status());
  auto out = parse_json(r->body, "coordinator response");
  if (!out) return report(ctx, out.status());
  return print_json(ctx, *out);
}

}  // namespace mesh::coord
