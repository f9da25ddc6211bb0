#include "coord/rotate.h"
#include "coord/server.h"
#include "coord/users.h"
#include "core/cli11.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_serve(Context& ctx, int argc, char** argv) {
  CLI::App app("Run the coordinator");
  ServeOptions o;
  std::vector<std::string> turns;
  bool verbose = false;
  app.add_option("--listen", o.listen, "ADDR:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--state", o.state_dir, "state directory (database, keys, admin.token)")->required();
  app.add_option("--store", o.store,
                 "database: postgres://... or a libpq DSN for PostgreSQL, shared by replicas "
                 "(default: SQLite in STATE/coord.db)");
  app.add_option("--ipv4-prefix", o.ipv4_prefix, "IPv4 overlay prefix (default 100.64.0.0/10)");
  app.add_option("--ipv6-prefix", o.ipv6_prefix, "IPv6 overlay prefix (default: random ULA /48)");
  app.add_option("--stun", o.stun, "STUN server HOST:PORT given to peers (repeatable)");
  app.add_option("--turn", turns, "TURN server HOST:PORT[,udp|tcp|tls] (repeatable)");
  app.add_option("--relay-secret-file", o.relay_secret_file,
                 "file with the TURN REST shared secret (coturn static-auth-secret)");
  app.add_option("--credential-lifetime", o.credential_lifetime,
                 "TURN credential lifetime in seconds (default 3600; re-minted at half-life)")
      ->capture_default_str();
  app.add_option("--keepalive", o.keepalive, "persistent keepalive given to peers (seconds)")
      ->capture_default_str();
  app.add_option("--dns-domain", o.dns_domain,
                 "domain of the peers' DNS names, NAME.DOMAIN (default: the stored one, else mesh)");
  app.add_option("--tls-cert", o.tls_cert, "serve HTTPS with this certificate (PEM)");
  app.add_option("--tls-key", o.tls_key, "private key for --tls-cert (PEM)");
  app.add_flag("--public-metrics", o.public_metrics, "serve /metrics without the admin token");
  app.add_option("--max-body", o.max_body, "largest request body in bytes")->capture_default_str();
  app.add_option("--max-connections", o.max_threads, "concurrent connections (watchers included)")
      ->capture_default_str();
  app.add_option("--max-connections-per-source", o.max_connections_per_source,
                 "concurrent connections per IPv4 address or IPv6 /64 (0: a quarter of "
                 "--max-connections)")
      ->capture_default_str();
  app.add_option("--max-queue", o.max_queue,
                 "connections waiting for a free slot; beyond, 503 at once")
      ->capture_default_str();
  app.add_option("--request-timeout", o.request_timeout,
                 "seconds a whole request (idle wait, headers, body) may take; then 408")
      ->capture_default_str();
  app.add_option("--max-watches-per-peer", o.max_watches_per_peer,
                 "concurrent long-polls (watch) per peer; beyond, 429")
      ->capture_default_str();
  app.add_option("--max-nonces", o.max_nonces,
                 "peer request nonces remembered for replay protection; beyond, 429")
      ->capture_default_str();
  app.add_option("--announces-per-minute", o.announces_per_minute,
                 "endpoint announces per peer per minute; beyond, 429 (0: no limit)")
      ->capture_default_str();
  app.add_option("--audit-max-age", o.audit_max_age,
                 "seconds audit events are kept (0: no age limit)")
      ->capture_default_str();
  app.add_option("--audit-max-events", o.audit_max_events,
                 "audit events kept, the newest (0: no count limit)")
      ->capture_default_str();
  app.add_option("--janitor-interval", o.janitor_interval,
                 "seconds between ephemeral-peer and credential sweeps")
      ->capture_default_str();
  app.add_option("--auth-failures-per-minute", o.auth_failures_per_minute,
                 "failed authentications per source address per minute before 429")
      ->capture_default_str();
  std::string until;
  std::string login_expiry = "24h";
  app.add_option("--oidc-issuer", o.oidc_issuer,
                 "enable login: the OpenID provider's issuer URL (discovery, JWKS)");
  app.add_option("--oidc-client-id", o.oidc_client_id,
                 "the client id nodes log in with (the ID tokens' audience)");
  app.add_option("--oidc-groups-claim", o.oidc_groups_claim,
                 "ID token claim holding the user's IdP groups")->capture_default_str();
  app.add_option("--oidc-admin-group", o.oidc_admin_group,
                 "IdP group whose users may use the admin verbs with their login");
  app.add_option("--oidc-ca-file", o.oidc_ca_file, "CA certificates for an https issuer");
  app.add_option("--oidc-client-secret-file", o.oidc_client_secret_file,
                 "the client's secret (confidential client): the coordinator runs the logins' "
                 "token requests; nodes never see it");
  app.add_option("--login-expiry", login_expiry,
                 "how long a login keeps its peers in the mesh: N[s|m|h|d], 0 never")
      ->capture_default_str();
  app.add_option("--previous-coordinator-key", o.previous_key_file,
                 "the coordinator's previous private key, still accepted until --previous-key-until");
  app.add_option("--previous-key-until", until,
                 "end of the previous key's overlap: unix seconds or YYYY-MM-DDTHH:MM:SSZ");
  app.add_flag("-v,--verbose", verbose, "log informational messages");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (verbose) ctx.log.set_level(LogLevel::Info);
  if (o.oidc_issuer.empty() != o.oidc_client_id.empty())
    return report(ctx, usage_error("--oidc-issuer and --oidc-client-id go together"));
  if (o.oidc_issuer.empty() && !o.oidc_admin_group.empty())
    return report(ctx, usage_error("--oidc-admin-group needs --oidc-issuer"));
  if (o.oidc_issuer.empty() && !o.oidc_client_secret_file.empty())
    return report(ctx, usage_error("--oidc-client-secret-file needs --oidc-issuer"));
  if (!o.oidc_issuer.empty() && o.oidc_issuer.rfind("https://", 0) != 0 &&
      o.oidc_issuer.rfind("http://", 0) != 0)
    return report(ctx, usage_error("--oidc-issuer " + o.oidc_issuer + ": expected an http(s) URL"));
  if (auto d = parse_duration_text(login_expiry); !d)
    return report(ctx, usage_error("--login-expiry: " + d.status().message()));
  else
    o.login_expiry = *d;
  if (o.previous_key_file.empty() != until.empty())
    return report(ctx, usage_error("--previous-coordinator-key and --previous-key-until go together"));
  if (!until.empty()) {
    auto u = parse_until(until);
    if (!u) return report(ctx, u.status().with_context("--previous-key-until"));
    o.previous_key_until = *u;
  }
  for (const auto& t : turns) {
    TurnConfig tc;
    auto comma = t.find(',');
    tc.server = t.substr(0, comma);
    if (comma != std::string::npos) tc.transport = t.substr(comma + 1);
    auto colon = tc.server.rfind(':');
    if (tc.server.empty() || colon == std::string::npos || colon + 1 == tc.server.size() ||
        tc.server.find_first_not_of("0123456789", colon + 1) != std::string::npos)
      return report(ctx, usage_error("--turn " + t + ": expected HOST:PORT[,udp|tcp|tls]"));
    if (tc.transport != "udp" && tc.transport != "tcp" && tc.transport != "tls")
      return report(ctx, usage_error("--turn " + t + ": transport must be udp, tcp or tls"));
    o.turn.push_back(tc);
  }
  // Both ends' keepalive at or below WireGuard's 5 s handshake retry keeps
  // two crossing first handshakes crossing at every retry (the keepalive,
  // restarted by the peer's initiation, fires before the jittered retry).
  if (o.keepalive != 0 && (o.keepalive < 10 || o.keepalive > 3600))
    return report(ctx, usage_error("--keepalive " + std::to_string(o.keepalive) +
                                   ": expected 0 (off) or 10 to 3600 seconds"));
  if (!o.dns_domain.empty()) {
    // DNS names are case-insensitive (RFC 4343): keep one spelling; a
    // fully qualified form's final dot is implied.
    for (char& c : o.dns_domain)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (o.dns_domain.size() > 1 && o.dns_domain.back() == '.') o.dns_domain.pop_back();
    if (!valid_dns_domain(o.dns_domain))
      return report(ctx, usage_error("--dns-domain " + o.dns_domain +
                                     ": expected a DNS name: labels of 1-63 letters, digits and '-' "
                                     "(not first or last) joined by '.', at most 253 characters"));
  }
  for (const auto& s : o.stun) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
      return report(ctx, usage_error("--stun " + s + ": expected HOST:PORT"));
  }
  return report(ctx, serve(o, ctx.out, ctx.log));
}

}  // namespace mesh::coord
