// Replicas on a shared store (PostgreSQL): applying another replica's
// committed change (coord/store.h, Change) to this replica's in-memory state
// incrementally, so that it serves the same maps with the same serials.
#pragma once

#include <vector>

#include "coord/model.h"
#include "coord/revoked.h"
#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

// A setup key from its stored record (with "hash").
Result<SetupKey> setup_key_from_record(const Json& j);

struct ApplyResult {
  bool maps_changed = false;   // some map's serial moved: wake the watchers
  bool revocations = false;    // the relay revocation list changed
  size_t peers = 0;            // peers added, changed or removed
  // Whose watchers can have news: the peers given new serials, changed or
  // removed; or everyone, for a change of anything else (policy, routes,
  // users, settings, setup keys, revocations).
  std::vector<uint32_t> woken;
  bool everyone = false;
};

// Applies one Change's `what` (coord/store.h) to the model, the setup keys
// and the revocation list. Peers are added, updated (membership re-indexed,
// only affected maps recomputed) or removed through the model's incremental
// mutations; then the serials and counters the writer assigned are adopted,
// so every replica serves a map with the writer's serial. Idempotent:
// applying a change twice leaves the same state.
Result<ApplyResult> apply_change(Model& model, std::vector<SetupKey>& keys, RevocationList& revoked,
                                 const Json& what, int64_t now);

}  // namespace mesh::coord
