#include <nlohmann/json.hpp>

#include <ctime>

#include "core/cli11.h"
#include "core/file.h"
#include "core/json.h"
#include "core/key.h"
#include "turn/auth.h"
#include "verbs.h"

namespace mesh::relay {

int cmd_password(Context& ctx, int argc, char** argv) {
  CLI::App app("Mint a coturn-compatible REST-API TURN credential from a shared secret file");
  std::string secret_file, name;
  int64_t ttl = 86400, now = 0;
  bool json = false;
  app.add_option("--auth-secret-file", secret_file, "shared secret file (the first secret signs)")
      ->required();
  app.add_option("--name", name, "NAME part of the username EXPIRY:NAME");
  app.add_option("--ttl", ttl, "seconds the credential is valid (default 86400)");
  app.add_option("--now", now, "unix time to count from (default: the clock)");
  app.add_flag("--json", json, "print {\"username\",\"password\",\"expires_at\"}");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto text = read_file(secret_file, 1u << 20);
  if (!text) return report(ctx, text.status());
  auto secrets = turn::Credentials::parse_secrets(*text, secret_file);
  wipe(*text);
  if (!secrets) return report(ctx, secrets.status());
  if (now == 0) now = static_cast<int64_t>(std::time(nullptr));
  int64_t exp = now + ttl;
  std::string user = std::to_string(exp) + (name.empty() ? "" : ":" + name);
  std::string pw = turn::rest_password(secrets->front(), user);
  for (auto& s : *secrets) wipe(s);
  if (json)
    ctx.out << dump_json(Json{{"username", user}, {"password", pw}, {"expires_at", exp}}) << "\n";
  else
    ctx.out << user << "\n" << pw << "\n";
  wipe(pw);
  return ctx.out.flush() ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::relay
