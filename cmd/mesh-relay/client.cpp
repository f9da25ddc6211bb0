#include <nlohmann/json.hpp>

#include "core/cli11.h"
#include "core/file.h"
#include "core/json.h"
#include "core/key.h"
#include "relay/client.h"
#include "verbs.h"

namespace mesh::relay {

int cmd_client(Context& ctx, int argc, char** argv) {
  CLI::App app("Carry WireGuard peers through a TURN relay (mesh-relay or coturn)");
  ClientOptions o;
  std::string key_file, local_ip, map = "-";
  bool verbose = false, events = false;
  app.add_option("map", map, "network map file (re-read on change and SIGHUP), or - for JSON lines on stdin");
  app.add_option("--key", key_file, "this node's WireGuard private key file (checks the map's self)");
  app.add_option("--endpoints-out", o.endpoints_out, "write the endpoints document to FILE (atomically)");
  app.add_option("--peers-from", o.peers_from,
                 "relay only the peers this endpoints document (mesh-punch) marks relay-needed");
  app.add_option("--wg-port", o.wg_port, "WireGuard listen port (default: the map's self.listen_port)");
  app.add_option("--local-ip", local_ip, "address of the local peer ports (default 127.0.0.1)");
  app.add_option("--keepalive", o.keepalive_s, "seconds between allocation refreshes (default 25)")
      ->check(CLI::Range(1, 300));
  app.add_option("--socket-buffer", o.socket_buffer, "socket buffer bytes (default 4194304)");
  app.add_option("--tls-ca", o.tls_ca, "CA certificates (PEM) for a TLS TURN server (default: the system's)");
  bool no_verify = false;
  app.add_flag("--tls-no-verify", no_verify, "do not check a TLS TURN server's certificate");
  app.add_flag("--events", events,
               "print a short event line per new endpoints document instead of the document");
  app.add_flag("-v,--verbose", verbose, "log informational messages");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (events && o.endpoints_out.empty())
    return report(ctx, usage_error("--events needs --endpoints-out (the document goes there)"));
  if (verbose) ctx.log.set_level(LogLevel::Info);
  o.tls_verify = !no_verify;
  o.map_path = map;
  if (!key_file.empty()) {
    std::string warning;
    auto k = read_private_key_file(key_file, &warning);
    if (!k) return report(ctx, k.status().with_context(key_file));
    if (!warning.empty()) ctx.log.warn(warning);
    o.self_key = k->public_key();
    o.self_key_file = key_file;
  }
  if (!local_ip.empty()) {
    auto ip = IpAddr::parse(local_ip);
    if (!ip) return report(ctx, usage_error("--local-ip: " + ip.status().message()));
    o.local_ip = *ip;
  }
  o.on_endpoints = [&ctx, events](const EndpointsDoc& d, const std::string& line) {
    if (!events) {
      ctx.out << line << "\n";
      ctx.out.flush();
      return;
    }
    // A short line instead of the document, for a FIFO shared with other
    // event sources.
    Json ev{{"event", "relay"}, {"relayed", nullptr}, {"peers", d.peers.size()}};
    for (const auto& c : d.candidates)
      if (c.kind == "relay") ev["relayed"] = c.endpoint.to_string();
    (void)write_line(ctx, dump_json(ev) + "\n");
  };
  return report(ctx, run_client(o, ctx.log));
}

int cmd_check(Context& ctx, int argc, char** argv) {
  CLI::App app("Allocate on a TURN server once and report the result (a health check)");
  std::string server, username, password_file, peer;
  int timeout = 5;
  double hold = 0;
  bool json = false;
  app.add_option("--server", server, "TURN server HOST:PORT (UDP)")->required();
  app.add_option("--username", username, "username (none: an unauthenticated Allocate, expect 401)");
  app.add_option("--password-file", password_file, "file holding the password");
  app.add_option("--peer", peer, "also bind a channel toward ADDR:PORT (checks the peer policy)");
  app.add_option("--timeout", timeout, "seconds to wait for answers (default 5)");
  app.add_option("--hold", hold, "keep the allocation SECONDS before releasing it");
  app.add_flag("--json", json, "print one JSON document");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  std::string password;
  if (!password_file.empty()) {
    auto t = read_file(password_file, 4096);
    if (!t) return report(ctx, t.status());
    password = std::string(trim_key_text(*t));
    wipe(*t);
  }
  std::optional<SockAddr> p;
  if (!peer.empty()) {
    auto a = SockAddr::parse(peer);
    if (!a) return report(ctx, usage_error("--peer: " + a.status().message()));
    p = *a;
  }
  auto r = check_allocate(server, username, password, p, timeout * 1000, static_cast<int>(hold * 1000));
  wipe(password);
  if (!r) return report(ctx, r.status());
  Json j{{"ok", r->ok}};
  if (r->ok) {
    j["relayed"] = r->relayed.to_string();
    j["mapped"] = r->mapped.to_string();
    j["lifetime"] = r->lifetime;
  } else {
    j["error_code"] = r->error_code;
    j["reason"] = r->reason;
  }
  if (!r->software.empty()) j["software"] = r->software;
  if (json) {
    ctx.out << dump_json(j) << "\n";
  } else if (r->ok) {
    ctx.out << "relayed " << r->relayed.to_string() << " mapped " << r->mapped.to_string()
            << " lifetime " << r->lifetime << "\n";
  } else {
    ctx.out << "error " << r->error_code << " " << r->reason << "\n";
  }
  ctx.out.flush();
  if (r->ok) return 0;
  if (r->error_code == 401 || r->error_code == 441 || r->error_code == 403) return to_int(Exit::NoPerm);
  if (r->error_code == 486 || r->error_code == 508) return to_int(Exit::TempFail);
  return to_int(Exit::Unavailable);
}

}  // namespace mesh::relay
