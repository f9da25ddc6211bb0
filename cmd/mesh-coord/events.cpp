#include <nlohmann/json.hpp>

#include "common.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_events(Context& ctx, int argc, char** argv) {
  CLI::App app("Print the audit log: one JSON event per line (--json: one document)");
  AdminTarget t;
  int64_t after = 0, limit = 1000;
  std::string action;
  add_admin_options(app, t);
  app.add_option("--after", after, "only events with seq greater than N")->capture_default_str();
  app.add_option("--limit", limit, "at most N events")->capture_default_str();
  app.add_option("--action", action, "only this action or family (peer, peer.delete, auth.failed...)");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto tok = admin_token(ctx, t);
  if (!tok) return report(ctx, tok.status());
  if (action.find_first_not_of("abcdefghijklmnopqrstuvwxyz.-_") != std::string::npos)
    return report(ctx, usage_error("--action: letters, '.', '-' and '_' only"));
  Client cli(t.servers, t.ca_file, ctx.log);
  auto r = cli.admin("GET",
                     "/v1/admin/events?after=" + std::to_string(after) + "&limit=" +
                         std::to_string(limit) + (action.empty() ? "" : "&action=" + action),
                     *tok, "");
  if (!r) return report(ctx, r.status());
  if (t.json) return print_json(ctx, *r);
  for (const auto& e : (*r)["events"]) ctx.out << dump_json(e) << "\n";
  ctx.out << std::flush;
  return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::coord
