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
  std::string ipv4_prefix;  // empty: stored value or 100.64.0.0/10
  std::string ipv6_prefix;  // empty: stored value or a random fdXX:XXXX:XXXX::/48
  std::vector<std::string> stun;
  std::vector<TurnConfig> turn;
  std::string relay_secret_file;
  int64_t credential_lifetime = 86400;
  int keepalive = 25;
  std::string dns_domain;   // empty: stored value or "mesh"
  std::string tls_cert, tls_key;
  bool public_metrics = false;
  size_t max_body = 1u << 20;
  size_t max_threads = 4096;   // concurrent connections (long-polls hold one each)
  int janitor_interval = 5;    // seconds between ephemeral/credential sweeps
  int auth_failures_per_minute = 10;
};

// Runs until SIGINT/SIGTERM (or *stop becomes true). Prints exactly one line
// "listening on http://ADDR:PORT" (https with TLS) to `out` once listening.
Status serve(const ServeOptions& opt, std::ostream& out, Log& log,
             const std::atomic<bool>* stop = nullptr);

}  // namespace mesh::coord
