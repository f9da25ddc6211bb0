// A fast writer for the network map's JSON text: byte-for-byte what
// dump_json(netmap_to_json(m)) produces (keys in sorted order, compact),
// without building an nlohmann tree. The coordinator sends thousands of
// maps in a burst (a policy change with 1,000 watchers), where the tree
// dominated the cost. tests/unit/coord_test.cpp checks equality; any string
// needing escapes falls back to netmap_to_json itself.
#pragma once

#include <string>

#include "netmap/netmap.h"

namespace mesh::coord {

std::string netmap_json_text(const NetMap& m);

// One peers[] entry as netmap_json_text writes it; false (and `out`
// unspecified) when a string would need escaping.
bool peer_json_text(const MapPeer& p, std::string& out);
// `"routes":[...]` as the last member of a peers[] entry writes it; false
// as above.
bool peer_routes_json_text(const std::vector<PeerRoute>& routes, std::string& out);
// A firewall rule's text up to and including `"sources":[`; false as above.
bool rule_head_json_text(const FirewallRule& r, std::string& out);

}  // namespace mesh::coord
