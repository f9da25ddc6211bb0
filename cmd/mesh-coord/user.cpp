#include <nlohmann/json.hpp>

#include "common.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_user(Context& ctx, int argc, char** argv) {
  CLI::App app("Manage users who enrol nodes by login (admin). USER is a subject or an email.");
  app.require_subcommand(1);
  AdminTarget t;
  std::string ref;
  auto* list = app.add_subcommand("list", "list users");
  add_admin_options(*list, t);
  std::vector<std::pair<CLI::App*, std::string>> ops;
  for (const char* op : {"show", "disable", "enable", "delete"}) {
    std::string o = op;
    std::string desc = o == "show"      ? "show one user and their peers"
                       : o == "disable" ? "cut all of a user's peers off at once (reversible)"
                       : o == "enable"  ? "re-enable a disabled user's peers"
                                        : "delete a user and all their peers for good";
    auto* sc = app.add_subcommand(op, desc);
    add_admin_options(*sc, t);
    sc->add_option("USER", ref, "the user's subject or email")->required();
    ops.emplace_back(sc, o);
  }
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto tok = admin_token(ctx, t);
  if (!tok) return report(ctx, tok.status());
  Client cli(t.servers, t.ca_file, ctx.log);
  if (list->parsed()) {
    auto r = cli.admin("GET", "/v1/admin/users", *tok, "");
    if (!r) return report(ctx, r.status());
    if (t.json || !ctx.stdout_tty) return print_json(ctx, *r);
    ctx.out << "EMAIL                          NAME                 STATE     PEERS GROUPS\n";
    for (const auto& u : (*r)["users"]) {
      std::string gs;
      for (const auto& g : u["groups"]) gs += (gs.empty() ? "" : ",") + g.get<std::string>();
      char line[512];
      snprintf(line, sizeof line, "%-30s %-20s %-9s %5lld %s\n", u["email"].get<std::string>().c_str(),
               u["name"].get<std::string>().c_str(), u["disabled"].get<bool>() ? "disabled" : "enabled",
               static_cast<long long>(u["peers"].get<int64_t>()), gs.c_str());
      ctx.out << line;
    }
    return 0;
  }
  for (auto& [sc, op] : ops) {
    if (!sc->parsed()) continue;
    auto r = cli.admin("POST", "/v1/admin/users/" + op, *tok, dump_json(Json{{"user", ref}}));
    if (!r) return report(ctx, r.status());
    return print_json(ctx, *r);
  }
  return report(ctx, usage_error("no subcommand"));
}

}  // namespace mesh::coord
