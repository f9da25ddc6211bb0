// The admin operations on routes (`mesh-coord route`, /v1/admin/routes/*)
// as pure functions over the model, so the server only locks, persists and
// publishes. See coord/routes.h for the route itself.
#pragma once

#include <string>

#include "coord/model.h"
#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

struct RouteOpResult {
  Changes changes;        // maps the operation changed (create/update/delete)
  bool write = false;     // the store must change: put `record`, or erase
  bool erase = false;
  std::string name;       // the route
  std::string record;     // its persisted JSON (put)
  Json detail;            // audit event detail
  Json response;          // the API's answer
};

// op: "list", "show", "create", "update" or "delete"; body as mesh-coord(8)
// documents it. Validates everything before changing the model; errors are
// DataErr (bad input, conflicts) or NoInput (no such route).
Result<RouteOpResult> route_op(Model& m, const std::string& op, const Json& body, int64_t now);

// A route as the admin API shows it: its definition, "source" ("admin" or
// "policy"), "exit_node", and the live routers with their metrics.
Json route_view(const Model& m, const Route& r);

// The policy file's routes against the model's: no name defined by both,
// no network overlapping the overlay or repeating another route's.
Status check_policy_routes(const Model& m, const Policy& p);

// Routes as they are stored ("route" records), by name.
Result<std::map<std::string, Route>> routes_from_records(
    const std::vector<std::pair<std::string, Json>>& records);

}  // namespace mesh::coord
