// Routes through peers (issue 19), the parts beside the plan:
//  - the router side's forwarding sysctls, saved before mesh-apply first
//    changes them (DIR/IF.sysctl) and put back when no longer wanted or by
//    `down`;
//  - the route table a client's HA watcher follows (DIR/IF.routes, JSON):
//    every routed network with its candidate routers and metrics, written
//    by each apply;
//  - the HA choice itself (HaState), pure and driven by observations and a
//    clock the caller passes in, so tests replay failures without waiting;
//  - the watcher (`mesh-apply routes --watch`), which samples the device
//    in-process every few hundred milliseconds and moves a network's
//    allowed IP only when its choice changes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "apply/backend.h"
#include "apply/plan.h"
#include "core/json.h"
#include "core/log.h"

namespace mesh::apply {

// /proc/sys path of a sysctl key ("net.ipv4.ip_forward").
std::string sysctl_path(const std::string& key);
// Current values of `keys` (missing ones are left out: no IPv6, say).
std::map<std::string, std::string> read_sysctls(const std::vector<std::string>& keys,
                                                const std::string& proc_sys = "/proc/sys");

std::string saved_sysctls_path(const std::string& dir, const std::string& interface);
// "KEY=VALUE" lines; empty when there is no file.
std::map<std::string, std::string> load_saved_sysctls(const std::string& dir, const std::string& interface);
std::string format_saved_sysctls(const std::map<std::string, std::string>& saved);
std::map<std::string, std::string> parse_saved_sysctls(std::string_view text);

// Carries out the plan's sysctl part: saves the old value of each key it
// enables (once: an older save wins), sets it to 1, puts back restored
// ones and forgets them. The saved file is gone once nothing is saved.
Status apply_sysctls(const std::string& dir, const std::string& interface, const Plan& plan,
                     const Current& cur, const std::string& proc_sys = "/proc/sys");
// `down`: puts every saved value back. Sets *restored to the keys.
Status restore_all_sysctls(const std::string& dir, const std::string& interface,
                           std::vector<std::string>* restored, const std::string& proc_sys = "/proc/sys");

// The route table for the watcher.
struct RouteCandidate {
  PublicKey public_key;
  std::string name;
  int metric = 0;
  bool operator==(const RouteCandidate&) const = default;
};
struct RoutedNetwork {
  Prefix network;
  std::vector<RouteCandidate> routers;  // by metric, then key
  bool operator==(const RoutedNetwork&) const = default;
};
// From the desired peers' routes (default routes excepted). Sorted by network.
std::vector<RoutedNetwork> route_table(const Desired& want);
Json route_table_json(const std::vector<RoutedNetwork>& table);
Result<std::vector<RoutedNetwork>> parse_route_table(const Json& j, const std::string& source);
std::string route_table_path(const std::string& dir, const std::string& interface);
// Writes DIR/IF.routes (or removes it when the table is empty).
Status store_route_table(const std::string& dir, const std::string& interface,
                         const std::vector<RoutedNetwork>& table);

// HA liveness and choice. A router is alive when it has a handshake less
// than 180 s old (WireGuard's REJECT_AFTER_TIME) and its received-bytes
// counter grew within the last dead_after_ms (routers send a keepalive
// every kRouteKeepalive seconds). A network stays on its current router
// while that is alive and no better one has been alive for hold_down_ms;
// when it dies it moves at once to the lowest-metric live router; with no
// live router it stays where it is.
struct HaTiming {
  int64_t dead_after_ms = 2000;
  int64_t hold_down_ms = 3000;
};

class HaState {
 public:
  explicit HaState(HaTiming t) : t_(t) {}
  // One sample of a peer: its counters now (`wall_sec`: unix time, for the
  // handshake age; `now_ms`: a monotonic clock).
  void observe(const PublicKey& k, uint64_t rx_bytes, int64_t last_handshake_sec, int64_t wall_sec,
               int64_t now_ms);
  bool alive(const PublicKey& k, int64_t now_ms) const;
  // The router for `net` given the one holding it now (none: the first
  // choice, lowest metric alive, else lowest metric).
  PublicKey choose(const RoutedNetwork& net, const std::optional<PublicKey>& holder, int64_t now_ms) const;

 private:
  struct Peer {
    uint64_t rx = 0;
    int64_t rx_changed_ms = 0;  // last time rx grew (first sample: then)
    int64_t alive_since_ms = -1;  // -1: dead
    bool handshake_recent = false;
  };
  HaTiming t_;
  std::map<PublicKey, Peer> peers_;
};

struct WatchOptions {
  std::string interface;
  std::string backend = "auto";
  int interval_ms = 250;
  HaTiming timing;
  int64_t max_ticks = 0;  // 0: until the interface goes away (tests bound it)
};

// `mesh-apply routes`: the route table with each network's router on the
// device and each router's liveness signals (one JSON document).
Result<std::string> run_routes_show(const std::string& interface, const std::string& backend,
                                    const BackendEnv& env);
// `mesh-apply routes --watch`: one JSON line per move on `out`. Returns
// when the interface is gone (or after max_ticks).
Status run_routes_watch(const WatchOptions& opt, const BackendEnv& env, std::ostream& out, const Log& log);

}  // namespace mesh::apply
