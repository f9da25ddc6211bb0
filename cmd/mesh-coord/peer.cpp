#include <nlohmann/json.hpp>

#include "common.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_peer(Context& ctx, int argc, char** argv) {
  CLI::App app("Manage peers (admin). PEER is a name, public key or id.");
  app.require_subcommand(1);
  AdminTarget t;
  std::string ref, new_name;
  std::vector<std::string> groups;
  auto* list = app.add_subcommand("list", "list peers");
  add_admin_options(*list, t);
  std::vector<std::pair<CLI::App*, std::string>> ops;
  for (const char* op : {"show", "rename", "set-groups", "disable", "enable", "delete"}) {
    std::string desc = std::string(op) == "show"         ? "show one peer and whom it sees"
                       : std::string(op) == "rename"     ? "rename a peer"
                       : std::string(op) == "set-groups" ? "replace a peer's groups"
                       : std::string(op) == "disable"    ? "remove a peer from every map (reversible)"
                       : std::string(op) == "enable"     ? "re-enable a disabled peer"
                                                         : "delete a peer for good";
    auto* sc = app.add_subcommand(op, desc);
    add_admin_options(*sc, t);
    sc->add_option("PEER", ref, "peer name, public key or id")->required();
    if (std::string(op) == "rename") sc->add_option("NEW_NAME", new_name, "new name")->required();
    if (std::string(op) == "set-groups") sc->add_option("GROUP", groups, "groups (none: no groups)");
    ops.emplace_back(sc, op);
  }
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto tok = admin_token(ctx, t);
  if (!tok) return report(ctx, tok.status());
  Client cli(t.servers, t.ca_file, ctx.log);
  if (list->parsed()) {
    auto r = cli.admin("GET", "/v1/admin/peers", *tok, "");
    if (!r) return report(ctx, r.status());
    if (t.json || !ctx.stdout_tty) return print_json(ctx, *r);
    ctx.out << "ID    NAME                 ADDRESSES                          STATE     GROUPS\n";
    for (const auto& p : (*r)["peers"]) {
      std::string gs, addrs;
      for (const auto& g : p["groups"]) gs += (gs.empty() ? "" : ",") + g.get<std::string>();
      for (const auto& a : p["addresses"]) addrs += (addrs.empty() ? "" : " ") + a.get<std::string>();
      char line[512];
      snprintf(line, sizeof line, "%-5lld %-20s %-34s %-9s %s\n",
               static_cast<long long>(p["id"].get<int64_t>()), p["name"].get<std::string>().c_str(),
               addrs.c_str(), p["disabled"].get<bool>() ? "disabled" : "enabled", gs.c_str());
      ctx.out << line;
    }
    return 0;
  }
  for (auto& [sc, op] : ops) {
    if (!sc->parsed()) continue;
    Json body{{"peer", ref}};
    if (op == "rename") body["name"] = new_name;
    if (op == "set-groups") body["groups"] = groups;
    auto r = cli.admin("POST", "/v1/admin/peers/" + op, *tok, dump_json(body));
    if (!r) return report(ctx, r.status());
    return print_json(ctx, *r);
  }
  return report(ctx, usage_error("no subcommand"));
}

}  // namespace mesh::coord
