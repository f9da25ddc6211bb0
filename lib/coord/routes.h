// Routes (issue 19): networks behind routing peers (subnet routes, with
// several routers for high availability) and exit nodes (0.0.0.0/0, ::/0).
// A route is defined either by `mesh-coord route create` (persisted as a
// "route" record) or in the policy file's "routes" section, never both
// under one name. Who may use a route is decided by policy rules whose dst
// names it (`route:NAME`) or covers one of its networks (a CIDR); see
// mesh-policy(5). The model compiles routes into its maps (Model::*route*
// members, defined in routes.cpp); the map fields are in mesh-netmap(5).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh::coord {

inline constexpr int kDefaultRouteMetric = 100;

// One routing peer, or every peer of a group, with its metric (lower is
// preferred by clients).
struct RouteRouter {
  std::string peer;   // a peer name, or
  std::string group;  // a group name (exactly one of the two is set)
  int metric = kDefaultRouteMetric;
  bool operator==(const RouteRouter&) const = default;
};

struct Route {
  std::string name;
  std::vector<Prefix> networks;  // canonical, distinct, at least one
  std::vector<RouteRouter> routers;
  bool masquerade = true;
  std::string description;
  bool from_policy = false;  // defined in the policy file (not persisted in the record)

  // Every network is a default route (0.0.0.0/0, ::/0).
  bool exit_node() const;
  bool operator==(const Route&) const = default;
};

// The JSON form (records, the admin API, the policy file's routes section):
// {"networks": [CIDR...], "routers": [{"peer"|"group": NAME, "metric": N}],
//  "masquerade": bool, "description": TEXT} plus "name" where
// `name_in_body`. Validates everything that needs no other state: names,
// CIDRs (canonical form required: 198.51.100.0/24, not .1/24), duplicate
// networks or routers, metrics 0-65535, an exit node without masquerade.
Result<Route> parse_route(const JsonView& v, bool name_in_body, const std::string& name = "");
Json route_to_json(const Route& r);  // with "name"; "source" is added by callers

// Checks a route against the rest: its networks must not collide with the
// overlay (route_overlaps_overlay) nor repeat a network of another route in
// `others` (a different name).
Status check_route(const Route& r, const std::vector<Prefix>& overlay,
                   const std::vector<const Route*>& others);

// Which destinations of `r` a rule's dst selector CIDR `sel` grants, as
// (index into r.networks, destination): the network itself when `sel`
// contains it, `sel` when it lies inside the network; a default route (exit
// node) network only to a selector that is itself a default route. Empty:
// none.
std::vector<std::pair<size_t, Prefix>> cidr_grants(const Prefix& sel, const Route& r);

// A route as compiled into the model (see Model::compile_routes).
struct CompiledRoute {
  const Route* route = nullptr;  // into Model::routes_ or the policy's routes
  // Live routing peers (not disabled), sorted by id; a peer that is a router
  // twice (by name and by group) keeps its lowest metric.
  std::vector<std::pair<uint32_t, int>> routers;
  struct Grant {
    uint32_t rule = 0;                  // policy rule index
    std::vector<uint8_t> networks;      // indexes into route->networks the rule grants
    std::vector<Prefix> destinations;   // what the router forwards to
  };
  std::vector<Grant> grants;
  uint64_t content_hash = 0;  // name, networks, masquerade, routers and metrics
};

}  // namespace mesh::coord
