// `mesh-coord migrate`: copies a coordinator's whole state from one store
// to another (SQLite to PostgreSQL when a deployment moves to replicas), in
// one transaction on the target: it holds everything or nothing.
#pragma once

#include <string>

#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

struct MigrateOptions {
  std::string from;  // "sqlite:DIR" (DIR/coord.db) or a store spec (coord/store.h)
  std::string to;    // "postgres://...", a libpq DSN, or "sqlite:DIR"
  bool force = false;  // replace a target that already holds state
};

// What was copied: {"from", "to", "meta", "peers", "setup_keys", "records",
// "events"} (counts). Errors: Usage (bad spec), NoInput (no source
// database), CantCreate (the target holds state and force is off),
// Unavailable (cannot connect), IoErr (a read or write failed).
Result<Json> migrate_store(const MigrateOptions& opt);

}  // namespace mesh::coord
