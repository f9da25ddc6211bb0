#include <nlohmann/json.hpp>

#include "common.h"
#include "core/file.h"
#include "netmap/endpoints.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_announce(Context& ctx, int argc, char** argv) {
  CLI::App app("Publish this node's endpoint candidates (endpoints JSON, man/mesh-endpoints.5)");
  PeerTarget t;
  std::string file = "-";
  add_peer_options(app, t);
  app.add_option("-f,--file", file, "endpoints document ('-': stdin)")->capture_default_str();
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  auto text = file == "-" ? read_stream(ctx.in, 65536) : read_file(file, 65536);
  if (!text) return report(ctx, text.status());
  std::string source = file == "-" ? "<stdin>" : file;
  auto j = parse_json(*text, source);
  if (!j) return report(ctx, j.status());
  auto doc = parse_endpoints(*j, source);
  if (!doc) return report(ctx, doc.status());
  if (doc->public_key && *doc->public_key != c->node.public_key())
    return report(ctx, data_error(source + ": public_key: not this node's key"));
  Client cli(c->servers, c->ca_file, ctx.log);
  auto r = cli.peer("POST", "/v1/endpoints", c->node, c->coordinator, dump_json(*j), 30);
  if (!r) return report(ctx, r.status());
  auto out = parse_json(r->body, "coordinator response");
  if (!out) return report(ctx, out.status());
  return print_json(ctx, *out);
}

}  // namespace mesh::coord
