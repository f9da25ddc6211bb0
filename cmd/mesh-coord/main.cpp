// mesh-coord: the coordinator and its client verbs. See mesh-coord(8).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::coord;
  static constexpr std::array<mesh::Verb, 16> kVerbs{{
      {"serve", cmd_serve, "run the coordinator (HTTP+JSON API, SQLite or PostgreSQL state)"},
      {"join", cmd_join, "enrol this node's WireGuard key with a setup key"},
      {"login", cmd_login, "enrol this node (or renew its login) by logging in at the identity provider"},
      {"map", cmd_map, "print this node's current network map"},
      {"watch", cmd_watch, "stream this node's network map (JSON lines) as it changes"},
      {"announce", cmd_announce, "publish this node's endpoint candidates (endpoints JSON on stdin)"},
      {"punch", cmd_punch, "ask peers to probe towards this node now (coordinated hole punching)"},
      {"rotate-key", cmd_rotate_key, "replace this node's WireGuard key pair, keeping its identity"},
      {"refresh", cmd_refresh, "fetch this node's registration again (a new coordinator key)"},
      {"setup-key", cmd_setup_key, "admin: create, list or revoke setup keys"},
      {"peer", cmd_peer, "admin: list, show, rename, regroup, disable, enable or delete peers"},
      {"user", cmd_user, "admin: list, show, disable, enable or delete users (login)"},
      {"policy", cmd_policy, "admin: set, get, check or plan the access policy"},
      {"route", cmd_route, "admin: create, list, show, update or delete routes and exit nodes"},
      {"events", cmd_events, "admin: print the audit log (JSON lines)"},
      {"migrate", cmd_migrate, "copy the coordinator's state to another store (SQLite to PostgreSQL)"},
  }};
  return mesh::run_program("mesh-coord", kVerbs, argc, argv);
}
