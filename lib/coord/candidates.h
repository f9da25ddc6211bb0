// Which announced endpoint candidates the coordinator accepts (man/mesh-coord.8,
// POST /v1/endpoints). Every candidate goes into the maps of the peers that
// see the announcer, and each of them probes it: an address no peer can
// reach through the network would only point their probes somewhere (a
// compromised peer could aim them at the coordinator's own host, at the
// overlay, at a cloud metadata service). Private LAN addresses stay
// accepted: they are how two peers on one LAN find each other.
#pragma once

#include <vector>

#include "core/net.h"
#include "core/status.h"
#include "netmap/netmap.h"

namespace mesh::coord {

// DataErr naming the candidate and why, when `c` is refused: port 0, an
// unspecified, loopback, link-local, multicast, broadcast or reserved
// address, an IPv4-mapped IPv6 address, or one inside `overlay` (the mesh
// prefixes).
Status check_candidate(const Candidate& c, const std::vector<Prefix>& overlay);

}  // namespace mesh::coord
