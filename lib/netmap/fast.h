// A fast path for reading a network map straight from its text, without
// building a JSON document first: a 5,000-peer map is read by every
// mesh-apply run, and the DOM (nlohmann) plus the walk over it cost more
// than everything else the run does.
//
// The contract that keeps it safe: parse_netmap_fast() either declines
// (std::nullopt) or returns exactly the NetMap that parse_json() followed by
// parse_netmap() returns for the same text and options. It declines on
// anything it does not fully understand or that is invalid (escapes in
// strings, fractions and exponents, null members, duplicate members, deep
// nesting, any validation failure), so errors, their messages and their exit
// codes always come from the one validator, parse_netmap().
// tests/fuzz/netmap_fuzz.cpp checks the contract differentially.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "netmap/netmap.h"

namespace mesh {

// Called with each peer as soon as it is read: valid on its own, but not
// yet checked against the others (duplicates) or the rest of the map, so
// whatever it starts must be undone unless the whole parse succeeds.
using PeerHook = std::function<void(const MapPeer&)>;

std::optional<NetMap> parse_netmap_fast(std::string_view text, ParseOptions opt = {},
                                        const PeerHook& on_peer = {});

// parse_netmap_fast(), else parse_json() + parse_netmap(): same results and
// the same errors as the latter, usually much sooner.
Result<NetMap> parse_netmap_text(std::string_view text, const std::string& source,
                                 ParseOptions opt = {}, const PeerHook& on_peer = {});

// A guess at the map's self.listen_port, for work that starts before the
// map is parsed: the number after the last "listen_port" member name in the
// text (mesh-coord writes "self" after "peers", and only self has one).
// nullopt when there is none or its value is not a plain integer of at most
// 65535. Only a guess: whatever it starts must be checked against the parse.
std::optional<uint16_t> guess_listen_port(std::string_view text);

}  // namespace mesh
