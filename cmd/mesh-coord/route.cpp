#include <charconv>
#include <nlohmann/json.hpp>

#include "common.h"
#include "coord/routes.h"
#include "verbs.h"

namespace mesh::coord {
namespace {

// "NAME" or "NAME:METRIC" from --router / --router-group.
Result<Json> router_arg(const std::string& flag, const std::string& kind, const std::string& text) {
  Json j = Json::object();
  std::string name = text;
  auto colon = text.rfind(':');
  if (colon != std::string::npos) {
    name = text.substr(0, colon);
    std::string m = text.substr(colon + 1);
    unsigned v = 0;
    auto [p, ec] = std::from_chars(m.data(), m.data() + m.size(), v);
    if (m.empty() || ec != std::errc() || p != m.data() + m.size() || v > 65535)
      return usage_error(flag + " " + text + ": metric must be 0-65535");
    j["metric"] = v;
  }
  j[kind] = name;
  return j;
}

std::string join(const Json& a, const char* sep = ",") {
  std::string out;
  for (const auto& x : a) out += (out.empty() ? "" : sep) + x.get<std::string>();
  return out;
}

std::string routers_text(const Json& routers) {
  std::string out;
  for (const auto& r : routers) {
    std::string who = r.contains("peer") ? r["peer"].get<std::string>()
                                         : "group:" + r["group"].get<std::string>();
    out += (out.empty() ? "" : ",") + who + ":" + std::to_string(r["metric"].get<int>());
  }
  return out;
}

}  // namespace

int cmd_route(Context& ctx, int argc, char** argv) {
  CLI::App app("Manage routes: networks behind routing peers and exit nodes (admin)");
  app.require_subcommand(1);
  AdminTarget t;
  std::string name, description;
  std::vector<std::string> networks, routers, groups;
  bool masq = false, no_masq = false, has_description = false;
  auto* list = app.add_subcommand("list", "list routes (admin-defined and from the policy file)");
  add_admin_options(*list, t);
  auto* show = app.add_subcommand("show", "show one route, its live routers and its clients");
  add_admin_options(*show, t);
  show->add_option("NAME", name, "route name")->required();
  auto* del = app.add_subcommand("delete", "delete a route");
  add_admin_options(*del, t);
  del->add_option("NAME", name, "route name")->required();
  auto* create = app.add_subcommand("create", "define a route");
  auto* update = app.add_subcommand("update", "change a route (given fields replace the old)");
  for (auto* sc : {create, update}) {
    add_admin_options(*sc, t);
    sc->add_option("NAME", name, "route name")->required();
    sc->add_option("--network", networks, "CIDR routed (repeatable; 0.0.0.0/0, ::/0: exit node)");
    sc->add_option("--router", routers, "routing peer NAME[:METRIC] (repeatable; metric 100)");
    sc->add_option("--router-group", groups, "every peer of GROUP[:METRIC] routes (repeatable)");
    sc->add_flag("--masquerade", masq, "routers masquerade clients' traffic (the default)");
    sc->add_flag("--no-masquerade", no_masq, "routers forward with clients' overlay addresses");
    sc->add_option("--description", description, "free text (at most 256 characters)");
  }
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  Json body{{"name", name}};
  bool edit = create->parsed() || update->parsed();
  if (edit) {
    if (masq && no_masq) return report(ctx, usage_error("--masquerade and --no-masquerade conflict"));
    has_description = (create->parsed() ? create : update)->count("--description") > 0;
    if (!networks.empty()) body["networks"] = networks;
    Json rs = Json::array();
    for (const auto& r : routers) {
      auto j = router_arg("--router", "peer", r);
      if (!j) return report(ctx, j.status());
      rs.push_back(*j);
    }
    for (const auto& g : groups) {
      auto j = router_arg("--router-group", "group", g);
      if (!j) return report(ctx, j.status());
      rs.push_back(*j);
    }
    if (!rs.empty()) body["routers"] = rs;
    if (masq || no_masq) body["masquerade"] = masq;
    if (has_description) body["description"] = description;
    if (create->parsed()) {
      if (networks.empty()) return report(ctx, usage_error("create: at least one --network is required"));
      if (rs.empty()) return report(ctx, usage_error("create: --router or --router-group is required"));
      // Validate locally first: precise errors without a round trip.
      auto r = parse_route(JsonView(body, "command line"), true);
      if (!r) return report(ctx, Status(Exit::Usage, r.status().message()));
    } else if (body.size() == 1) {
      return report(ctx, usage_error("update: nothing to change"));
    }
  }
  auto tok = admin_token(ctx, t);
  if (!tok) return report(ctx, tok.status());
  Client cli(t.servers, t.ca_file, ctx.log);
  if (list->parsed()) {
    auto r = cli.admin("GET", "/v1/admin/routes", *tok, "");
    if (!r) return report(ctx, r.status());
    if (t.json || !ctx.stdout_tty) return print_json(ctx, *r);
    ctx.out << "NAME                 NETWORKS                      MASQ  SOURCE  ROUTERS\n";
    for (const auto& rt : (*r)["routes"]) {
      char line[1024];
      snprintf(line, sizeof line, "%-20s %-29s %-5s %-7s %s\n", rt["name"].get<std::string>().c_str(),
               join(rt["networks"]).c_str(), rt["masquerade"].get<bool>() ? "yes" : "no",
               rt["source"].get<std::string>().c_str(), routers_text(rt["routers"]).c_str());
      ctx.out << line;
    }
    return 0;
  }
  const char* op = show->parsed() ? "show" : del->parsed() ? "delete" : create->parsed() ? "create" : "update";
  auto r = cli.admin("POST", std::string("/v1/admin/routes/") + op, *tok, dump_json(body));
  if (!r) return report(ctx, r.status());
  if (t.json || !ctx.stdout_tty || del->parsed()) return print_json(ctx, *r);
  const Json& j = *r;
  ctx.out << "name:        " << j["name"].get<std::string>() << "\n"
          << "networks:    " << join(j["networks"], " ") << (j["exit_node"].get<bool>() ? " (exit node)" : "") << "\n"
          << "routers:     " << routers_text(j["routers"]) << "\n"
          << "active:      " << routers_text(j["active_routers"]) << "\n"
          << "masquerade:  " << (j["masquerade"].get<bool>() ? "yes" : "no") << "\n"
          << "source:      " << j["source"].get<std::string>() << "\n";
  if (!j["description"].get<std::string>().empty())
    ctx.out << "description: " << j["description"].get<std::string>() << "\n";
  if (j.contains("clients")) ctx.out << "clients:     " << join(j["clients"], " ") << "\n";
  return 0;
}

}  // namespace mesh::coord
