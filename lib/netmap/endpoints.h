// The endpoints document (man/mesh-endpoints.5): what mesh-punch found and
// mesh-relay set up. `candidates` are this node's own ways in (announced to
// the coordinator with `mesh-coord announce`); `peers` says, per peer, which
// endpoint WireGuard should use (consumed by `mesh-apply --endpoints`).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "netmap/netmap.h"

namespace mesh {

struct PeerPath {
  PublicKey public_key;
  std::string name;                 // informational
  // "direct": a punched path; "relayed": a local mesh-relay port;
  // "relay-needed": no direct path was found and no relay is set up yet.
  std::string status = "direct";
  std::optional<SockAddr> endpoint;  // required unless status is relay-needed
  std::string kind;                  // candidate kind used: host, srflx, prflx, relay
  double rtt_ms = -1;                // < 0: unknown
};

struct NatInfo {
  std::string mapping;    // "endpoint-independent", "address-dependent",
                          // "address-and-port-dependent", "none" (no NAT), "unknown"
  std::string filtering;  // same vocabulary, "unknown" when untested
};

// What one STUN server reported (mesh-punch stun): the server as given, the
// mapped (server-reflexive) address it saw, its RFC 5780 OTHER-ADDRESS, and
// the round-trip time; `error` says why `mapped` is missing.
struct StunResult {
  std::string server;
  std::optional<SockAddr> mapped;
  std::optional<SockAddr> other_address;
  double rtt_ms = -1;
  std::string error;
};

struct EndpointsDoc {
  int version = 1;
  int64_t generated_at = 0;
  std::optional<PublicKey> public_key;  // the node that wrote it
  std::vector<Candidate> candidates;
  std::optional<NatInfo> nat;
  std::vector<PeerPath> peers;
  std::vector<StunResult> stun;  // optional: per-server STUN results

  const PeerPath* find(const PublicKey& k) const;
};

Result<EndpointsDoc> parse_endpoints(const Json& j, const std::string& source,
                                     ParseOptions opt = {});
Result<EndpointsDoc> read_endpoints_file(const std::string& path, ParseOptions opt = {});
Json endpoints_to_json(const EndpointsDoc& d);

// Later documents override earlier ones per peer; candidates are merged
// (deduplicated, order kept). Used when punch and relay output both exist.
EndpointsDoc merge_endpoints(const std::vector<EndpointsDoc>& docs);

}  // namespace mesh
