#include <nlohmann/json.hpp>

#include "common.h"
#include "core/file.h"
#include "netmap/netmap.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_map(Context& ctx, int argc, char** argv) {
  CLI::App app("Print this node's current network map (man/mesh-netmap.5)");
  PeerTarget t;
  std::string output;
  add_peer_options(app, t);
  app.add_option("-o,--output", output, "write the map to FILE atomically (mode 0600)");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  Client cli(c->servers, c->ca_file, ctx.log);
  auto r = cli.peer("GET", "/v1/map", c->node, c->coordinator, "", 30);
  if (!r) return report(ctx, r.status());
  auto j = parse_json(r->body, "coordinator map");
  if (!j) return report(ctx, j.status());
  auto m = parse_netmap(*j, "coordinator map");
  if (!m) return report(ctx, m.status());
  if (Status s = check_map_overlay(*j); !s) return report(ctx, s);
  if (!output.empty())
    return report(ctx, write_file_atomic(output, dump_json(*j, true) + "\n", 0600));
  return print_json(ctx, *j);
}

}  // namespace mesh::coord
