#include <nlohmann/json.hpp>

#include "common.h"
#include "coord/policy.h"
#include "core/file.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_policy(Context& ctx, int argc, char** argv) {
  CLI::App app("Manage the access policy (admin, man/mesh-policy.5)");
  app.require_subcommand(1);
  AdminTarget t;
  std::string file, from, to, port = "any";
  auto* set = app.add_subcommand("set", "validate, test and install a policy file");
  add_admin_options(*set, t);
  set->add_option("FILE", file, "policy JSON ('-': stdin)")->required();
  auto* get = app.add_subcommand("get", "print the policy in effect");
  add_admin_options(*get, t);
  auto* check = app.add_subcommand("check", "may --from reach --to on --port? (exit 0 allow, 1 deny)");
  add_admin_options(*check, t);
  check->add_option("--from", from, "source: peer name, group:NAME, user:EMAIL or group:idp:NAME")->required();
  check->add_option("--to", to,
                    "destination: peer name, group:NAME, user:EMAIL, group:idp:NAME or route:NAME")
      ->required();
  check->add_option("--port", port, "PORT/tcp, PORT/udp, icmp or any")->capture_default_str();
  auto* plan = app.add_subcommand("plan", "access a new policy would grant and revoke");
  add_admin_options(*plan, t);
  plan->add_option("FILE", file, "policy JSON ('-': stdin)")->required();
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;

  std::string body;
  if (set->parsed() || plan->parsed()) {
    // Validate locally first: precise errors without a round trip.
    auto text = read_file(file, 16u << 20);
    if (!text) return report(ctx, text.status());
    std::string source = file == "-" ? "<stdin>" : file;
    auto j = parse_json(*text, source);
    if (!j) return report(ctx, j.status());
    auto p = parse_policy(*j, source);
    if (!p) return report(ctx, p.status());
    body = dump_json(*j);
  }
  if (check->parsed()) {
    auto s = Service::parse(port);
    if (!s) return report(ctx, usage_error("--port: " + s.status().message()));
  }
  auto tok = admin_token(ctx, t);
  if (!tok) return report(ctx, tok.status());
  Client cli(t.servers, t.ca_file, ctx.log);
  if (set->parsed()) {
    auto r = cli.admin("PUT", "/v1/admin/policy", *tok, body);
    if (!r) return report(ctx, r.status());
    return print_json(ctx, *r);
  }
  if (get->parsed()) {
    auto r = cli.admin("GET", "/v1/admin/policy", *tok, "");
    if (!r) return report(ctx, r.status());
    return print_json(ctx, *r);
  }
  if (check->parsed()) {
    auto r = cli.admin("POST", "/v1/admin/policy/check", *tok,
                       dump_json(Json{{"from", from}, {"to", to}, {"port", port}}));
    if (!r) return report(ctx, r.status());
    bool allow = (*r)["verdict"] == "allow";
    if (t.json || !ctx.stdout_tty) {
      if (int rc = print_json(ctx, *r); rc) return rc;
    } else {
      ctx.out << (allow ? "allow" : "deny") << " (" << (*r)["rule"].get<std::string>() << ")\n";
    }
    return allow ? 0 : to_int(Exit::Failure);
  }
  auto r = cli.admin("POST", "/v1/admin/policy/plan", *tok, body);
  if (!r) return report(ctx, r.status());
  if (t.json || !ctx.stdout_tty) return print_json(ctx, *r);
  for (const char* k : {"gained", "lost"})
    for (const auto& e : (*r)[k])
      ctx.out << (std::string(k) == "gained" ? "+ " : "- ") << e["src"].get<std::string>() << " -> "
              << e["dst"].get<std::string>() << " " << e["service"].get<std::string>() << "\n";
  ctx.out << "tests: " << (*r)["tests"].get<std::string>() << "\n";
  return 0;
}

}  // namespace mesh::coord
