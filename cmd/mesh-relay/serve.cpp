#include <iostream>
#include <thread>

#include "core/cli11.h"
#include "relay/server.h"
#include "verbs.h"

namespace mesh::relay {

namespace {
template <typename T>
Status parse_list(const std::vector<std::string>& in, std::vector<T>* out, const char* flag) {
  for (const auto& s : in) {
    auto r = T::parse(s);
    if (!r) return usage_error(std::string(flag) + ": " + r.status().message());
    out->push_back(*r);
  }
  return Status::ok();
}
}  // namespace

int cmd_serve(Context& ctx, int argc, char** argv) {
  CLI::App app("Run the TURN (RFC 8656) and STUN relay server");
  ServeOptions o;
  std::vector<std::string> listen, tls_listen, relay_ip, allow, deny;
  std::string alt, ports, metrics;
  int64_t max_bps = static_cast<int64_t>(o.turn.max_bps);
  bool no_self_relay = false, verbose = false;
  app.add_option("--listen", listen, "UDP (and with --tcp, TCP) listen ADDR:PORT; port 0 picks one")
      ->required();
  app.add_flag("--tcp", o.tcp, "also accept TURN over TCP on the --listen addresses");
  app.add_option("--tls-listen", tls_listen, "accept TURN over TLS on ADDR:PORT");
  app.add_option("--tls-cert", o.tls_cert, "TLS certificate chain (PEM)");
  app.add_option("--tls-key", o.tls_key, "TLS private key (PEM)");
  app.add_option("--alt-listen", alt,
                 "RFC 5780 alternate ADDR:PORT (another IP and port) for NAT behaviour discovery");
  app.add_option("--relay-ip", relay_ip,
                 "address relayed sockets bind to and announce (default: the --listen addresses)");
  app.add_option("--relay-ports", ports, "relayed port range LOW-HIGH (default 49152-65535)");
  app.add_option("--users-file", o.users_file, "static users: USER:PASSWORD or USER:0xKEY lines");
  app.add_option("--auth-secret-file", o.secret_file,
                 "REST-API shared secrets, one per line (coturn static-auth-secret)");
  app.add_option("--realm", o.realm, "authentication realm (default mesh)");
  app.add_option("--allow-peer", allow, "peer CIDR always allowed (overrides the denied ranges)");
  app.add_option("--deny-peer", deny, "peer CIDR refused, in addition to the default ranges");
  app.add_flag("--allow-loopback-peers", o.turn.allow_loopback,
               "allow loopback peers on any port (opens the host's loopback services; tests only)");
  app.add_flag("--no-self-relay", no_self_relay,
               "refuse peers on our own relay addresses (relaying between allocations)");
  app.add_option("--max-allocations", o.turn.max_allocations,
                 "total allocations (default 10000, 0 = unlimited)");
  app.add_option("--user-quota", o.turn.user_quota, "allocations per user (default 10, 0 = unlimited)");
  app.add_option("--max-bps", max_bps,
                 "bytes per second per allocation (default 12500000, 0 = unlimited)");
  app.add_option("--max-lifetime", o.turn.max_lifetime, "maximum allocation lifetime in seconds");
  app.add_option("--nonce-lifetime", o.turn.nonce_lifetime, "seconds before a nonce is stale (438)");
  app.add_option("--permission-lifetime", o.turn.permission_lifetime,
                 "permission lifetime in seconds (RFC: 300)");
  app.add_option("--channel-lifetime", o.turn.channel_lifetime,
                 "channel binding lifetime in seconds (RFC: 600)");
  app.add_option("--max-connections", o.max_connections,
                 "TCP/TLS connections at once; more are closed at accept (default 1024)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--handshake-timeout", o.handshake_timeout_s,
                 "seconds for a TCP/TLS connection to send its first TURN message (default 10)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--idle-timeout", o.idle_timeout_s,
                 "seconds a TCP/TLS connection without an allocation may stay silent (default 120)")
      ->check(CLI::Range(1, 86400));
  app.add_option("--threads", o.threads, "worker threads (default: CPUs, at most 8)");
  app.add_option("--socket-buffer", o.socket_buffer, "socket buffer bytes (default 4194304)");
  app.add_option("--coalesce-us", o.coalesce_us,
                 "while data flows, sleep US before waiting for more (batching; default 200, 0: off)")
      ->check(CLI::Range(0, 10000));
  auto* sf = app.add_option("--stats-file", o.stats_file, "write JSON statistics to FILE every second");
  app.add_option("--metrics", metrics, "serve /metrics (Prometheus) and /stats (JSON) on ADDR:PORT");
  app.add_option("--software", o.turn.software, "SOFTWARE attribute value");
  app.add_option("--revocations", o.revocations_urls,
                 "follow a mesh-coord's revoked relay credentials at http(s)://HOST:PORT "
                 "(repeat for replicas)")
      ->allow_extra_args(false);
  app.add_flag("-v,--verbose", verbose, "log informational messages");
  (void)sf;
  o.threads = static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (verbose) ctx.log.set_level(LogLevel::Info);

  std::vector<SockAddr> la;
  if (Status s = parse_list(listen, &o.listen, "--listen"); !s) return report(ctx, s);
  if (Status s = parse_list(tls_listen, &o.tls_listen, "--tls-listen"); !s) return report(ctx, s);
  if (Status s = parse_list(relay_ip, &o.turn.relay_ips, "--relay-ip"); !s) return report(ctx, s);
  if (Status s = parse_list(allow, &o.turn.allow_peers, "--allow-peer"); !s) return report(ctx, s);
  o.turn.deny_peers = turn::default_denied_peers();
  if (Status s = parse_list(deny, &o.turn.deny_peers, "--deny-peer"); !s) return report(ctx, s);
  if (!alt.empty()) {
    auto a = SockAddr::parse(alt);
    if (!a) return report(ctx, usage_error("--alt-listen: " + a.status().message()));
    o.alt_listen = *a;
  }
  if (!metrics.empty()) {
    auto a = SockAddr::parse(metrics);
    if (!a) return report(ctx, usage_error("--metrics: " + a.status().message()));
    o.metrics = *a;
  }
  if (!ports.empty()) {
    auto r = PortRange::parse(ports);
    if (!r) return report(ctx, usage_error("--relay-ports: " + r.status().message()));
    o.turn.relay_ports = *r;
  }
  if (max_bps < 0) return report(ctx, usage_error("--max-bps must not be negative"));
  o.turn.max_bps = static_cast<uint64_t>(max_bps);
  o.turn.self_relay = !no_self_relay;
  if (o.turn.max_lifetime < o.turn.default_lifetime) o.turn.default_lifetime = o.turn.max_lifetime;
  if (o.users_file.empty() && o.secret_file.empty())
    return report(ctx, usage_error("give --users-file and/or --auth-secret-file (never an open relay)"));
  if (!o.revocations_urls.empty() && o.secret_file.empty())
    return report(ctx, usage_error("--revocations needs --auth-secret-file (the secret mesh-coord signs with)"));
  o.on_listening = [&ctx](const std::string& line) {
    ctx.out << "listening " << line << "\n";
    ctx.out.flush();
  };
  return report(ctx, serve(o, ctx.log));
}

}  // namespace mesh::relay
