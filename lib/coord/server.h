// `mesh-coord serve`: the coordinator's HTTP+JSON API (man/mesh-coord.8,
// HTTP API). Peer endpoints are authenticated by coord/auth.h, admin
// endpoints by a bearer token; every mutation is one store transaction
// followed by an in-memory incremental recompute and a push to the
// long-polling watchers of the maps that changed.
#pragma once

#include <atomic>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "coord/model.h"
#include "core/log.h"
#include "core/status.h"

namespace mesh::coord {

struct ServeOptions {
  std::string listen = "127.0.0.1:0";  // ADDR:PORT, port 0 picks one
  std::string state_dir;
  // Empty: SQLite in STATE/coord.db. "postgres://..." or a libpq DSN:
  // PostgreSQL, shareable by replicas (coord/store.h).
  std::string store;
  std::string ipv4_prefix;  // empty: stored value or 100.64.0.0/10
  std::string ipv6_prefix;  // empty: stored value or a random fdXX:XXXX:XXXX::/48
  std::vector<std::string> stun;
  std::vector<TurnConfig> turn;
  std::string relay_secret_file;
  int64_t credential_lifetime = 3600;
  int keepalive = 25;
  std::string dns_domain;   // empty: stored value or "mesh"
  std::string tls_cert, tls_key;
  bool public_metrics = false;
  size_t max_body = 1u << 20;
  size_t max_threads = 4096;   // concurrent connections (long-polls hold one each)
  int janitor_interval = 5;    // seconds between ephemeral/credential sweeps
  int auth_failures_per_minute = 10;
  // Abuse limits (man/mesh-coord.8, LIMITS; coord/limits.h, coord/httpguard.h).
  size_t max_connections_per_source = 0;  // 0: a quarter of max_threads (at least 1)
  size_t max_queue = 1024;       // connections waiting for a thread (plain HTTP)
  int request_timeout = 10;      // seconds for a whole request, idle wait included
  size_t max_watches_per_peer = 4;
  size_t max_nonces = 1u << 20;  // peers' nonces remembered for replay protection
  int announces_per_minute = 20; // per peer
  int64_t audit_max_age = 90 * 86400;  // seconds; 0: no age limit
  int64_t audit_max_events = 1000000;  // 0: no count limit
  // Login at an OpenID provider (coord/oidc.h, coord/users.h); an empty
  // issuer disables login.
  std::string oidc_issuer, oidc_client_id, oidc_ca_file;
  std::string oidc_groups_claim = "groups";
  std::string oidc_admin_group;  // its members may use admin verbs with their login
  // The client secret of a confidential client (coord/oauth.h): the
  // coordinator runs the logins' token requests itself; empty: a public client.
  std::string oidc_client_secret_file;
  int64_t login_expiry = 86400;  // seconds; 0: logins never expire
  // Coordinator key rotation (coord/rotate.h): the previous key, accepted
  // until previous_key_until (unix seconds).
  std::string previous_key_file;
  int64_t previous_key_until = 0;
};

// Runs until SIGINT/SIGTERM (or *stop becomes true). Prints exactly one line
// "listening on http://ADDR:PORT" (https with TLS) to `out` once listening.
Status serve(const ServeOptions& opt, std::ostream& out, Log& log,
             const std::atomic<bool>* stop = nullptr);

}  // namespace mesh::coord
