#include <nlohmann/json.hpp>

#include "common.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_setup_key(Context& ctx, int argc, char** argv) {
  CLI::App app("Manage setup keys (admin)");
  app.require_subcommand(1);
  AdminTarget t;
  std::string name, expires_in, eph_timeout, output, ref, peer_name;
  bool reusable = false, ephemeral = false;
  int64_t usage_limit = -1;
  std::vector<std::string> groups, tags;
  auto* create = app.add_subcommand("create", "create a setup key; prints it once");
  add_admin_options(*create, t);
  create->add_option("--name", name, "key name (unique)")->required();
  create->add_flag("--reusable", reusable, "may enrol several peers (default: one-off)");
  create->add_option("--usage-limit", usage_limit, "peers a reusable key may enrol (0: unlimited)");
  create->add_option("--expires-in", expires_in, "lifetime: SECONDS or 30m, 12h, 7d");
  create->add_flag("--ephemeral", ephemeral, "peers enrolled with it are deleted when inactive");
  create->add_option("--ephemeral-timeout", eph_timeout,
                     "inactivity before an ephemeral peer is deleted (default 600)");
  create->add_option("--group", groups, "group given to peers enrolled with it (repeatable)");
  create->add_option("--tag", tags, "tag given to peers enrolled with it (repeatable)");
  create->add_option("--peer-name", peer_name,
                     "bind the key to this peer name: the only name it enrols, and the way to "
                     "enrol a name the policy grants by");
  create->add_option("-o,--output", output,
                     "write the key to FILE (mode 0600) instead of printing it");
  auto* list = app.add_subcommand("list", "list setup keys (never the keys themselves)");
  add_admin_options(*list, t);
  auto* revoke = app.add_subcommand("revoke", "revoke a setup key by name or id");
  add_admin_options(*revoke, t);
  revoke->add_option("KEY", ref, "setup key name or id")->required();
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  auto tok = admin_token(ctx, t);
  if (!tok) return report(ctx, tok.status());
  Client cli(t.servers, t.ca_file, ctx.log);
  if (create->parsed()) {
    Json body{{"name", name}, {"reusable", reusable}, {"ephemeral", ephemeral}};
    if (usage_limit >= 0) body["usage_limit"] = usage_limit;
    if (!expires_in.empty()) body["expires_in"] = expires_in;
    if (!eph_timeout.empty()) body["ephemeral_timeout"] = eph_timeout;
    body["groups"] = groups;
    body["tags"] = tags;
    if (!peer_name.empty()) body["peer_name"] = peer_name;
    auto r = cli.admin("POST", "/v1/admin/setup-keys", *tok, dump_json(body));
    if (!r) return report(ctx, r.status());
    if (!output.empty()) {
      std::string key = (*r)["key"].get<std::string>() + "\n";
      Status s = write_file_atomic(output, key, 0600, Overwrite::No);
      wipe(key);
      if (!s) return report(ctx, s);
      r->erase("key");
      (*r)["key_file"] = output;
    } else if (ctx.stdout_fd_world_readable_file) {
      ctx.log.warn("writing a setup key to a file that group or others can read (use -o FILE)");
    }
    return print_json(ctx, *r);
  }
  if (list->parsed()) {
    auto r = cli.admin("GET", "/v1/admin/setup-keys", *tok, "");
    if (!r) return report(ctx, r.status());
    if (t.json || !ctx.stdout_tty) return print_json(ctx, *r);
    ctx.out << "ID  NAME                 USED/LIMIT  STATE     GROUPS\n";
    for (const auto& k : (*r)["setup_keys"]) {
      std::string groups_s;
      for (const auto& g : k["groups"]) groups_s += (groups_s.empty() ? "" : ",") + g.get<std::string>();
      char line[256];
      snprintf(line, sizeof line, "%-3lld %-20s %4lld/%-6s %-9s %s\n",
               static_cast<long long>(k["id"].get<int64_t>()), k["name"].get<std::string>().c_str(),
               static_cast<long long>(k["used"].get<int64_t>()),
               k["usage_limit"].get<int64_t>() == 0 ? "inf"
                                                    : std::to_string(k["usage_limit"].get<int64_t>()).c_str(),
               k["usable"].get<bool>() ? "usable" : (k["revoked"].get<bool>() ? "revoked" : "spent"),
               groups_s.c_str());
      ctx.out << line;
    }
    return 0;
  }
  auto r = cli.admin("POST", "/v1/admin/setup-keys/revoke", *tok, dump_json(Json{{"key", ref}}));
  if (!r) return report(ctx, r.status());
  return print_json(ctx, *r);
}

}  // namespace mesh::coord
