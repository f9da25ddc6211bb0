// Flags and plumbing shared by the client verbs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "coord/client.h"
#include "core/cli11.h"
#include "core/json.h"
#include "core/key.h"

namespace mesh::coord {

// How a peer verb finds and authenticates to the coordinator.
struct PeerTarget {
  std::string registration;     // saved output of `join`
  std::vector<std::string> servers;  // or --server (repeatable) + --coordinator-key
  std::string coordinator_key;
  std::string key_file;         // the node's WireGuard private key
  std::string ca_file;
};
void add_peer_options(CLI::App& app, PeerTarget& t);

struct PeerConn {
  std::vector<std::string> servers;  // tried in order (Client's failover)
  PublicKey coordinator;
  SecretKey node;
  std::string ca_file;
};
Result<PeerConn> resolve_peer(Context& ctx, const PeerTarget& t);

// The coordinator URLs a registration names: "servers" (replicas, in order)
// or the single "server" of registrations made before replicas.
Result<std::vector<std::string>> registration_servers(const Json& reg, const std::string& what);

struct AdminTarget {
  std::vector<std::string> servers;
  std::string token_file;
  std::string ca_file;
  bool insecure = false;
  bool json = false;
};
void add_admin_options(CLI::App& app, AdminTarget& t);
// The token from --admin-token-file or MESH_ADMIN_TOKEN (never argv).
Result<std::string> admin_token(Context& ctx, const AdminTarget& t);

// Which coordinator key an enrolment (join, login) trusts: --coordinator-key
// (checked against the setup key's pin), the pin, else /v1/info's, only over
// https or to this host unless `insecure` (join.cpp).
Result<PublicKey> join_coordinator_key(Client& cli, const std::string& flag,
                                       const std::optional<PublicKey>& pinned, bool insecure);

// Enrols this node (POST `target`: /v1/join or /v1/login) with `body`
// (its secret: the setup key or ID token) plus the optional name and hint;
// wipes the request text. Returns the registration with the coordinator
// URLs every later verb and mesh-up fail over along (mesh-coord(8)).
// With `pending`: true when the coordinator answered 202 (a login still
// waiting for its person), and the answer is returned as it is.
Result<Json> enrol(Client& cli, const std::string& target, const SecretKey& node,
                   const PublicKey& coord, Json body, const std::string& name,
                   const std::string& name_hint, bool* pending = nullptr);

// One JSON document on stdout: indented on a terminal, one line otherwise.
int print_json(Context& ctx, const Json& j);

}  // namespace mesh::coord
