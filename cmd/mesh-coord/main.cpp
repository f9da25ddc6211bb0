// mesh-coord: the coordinator and its client verbs. See mesh-coord(8).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::coord;
  static constexpr std::array<mesh::Verb, 11> kVerbs{{
      {"serve", cmd_serve, "run the coordinator (HTTP+JSON API, SQLite or PostgreSQL state)"},
      {"join", cmd_join, "enrol this node's WireGuard key with a setup key"},
      {"map", cmd_map, "print this node's current network map"},
      {"watch", cmd_watch, "stream this node's network map (JSON lines) as it changes"},
      {"announce", cmd_announce, "publish this node's endpoint candidates (endpoints JSON on stdin)"},
      {"punch", cmd_punch, "ask peers to probe towards this node now (coordinated hole punching)"},
      {"setup-key", cmd_setup_key, "admin: create, list or revoke setup keys"},
      {"peer", cmd_peer, "admin: list, show, rename, regroup, disable, enable or delete peers"},
      {"policy", cmd_policy, "admin: set, get, check or plan the access policy"},
      {"events", cmd_events, "admin: print the audit log (JSON lines)"},
      {"migrate", cmd_migrate, "copy the coordinator's state to another store (SQLite to PostgreSQL)"},
  }};
  return mesh::run_program("mesh-coord", kVerbs, argc, argv);
}
