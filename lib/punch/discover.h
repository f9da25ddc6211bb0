// STUN discovery from port P: server-reflexive addresses and the NAT's
// mapping and filtering behaviour (RFC 8489 Binding, RFC 5780 tests).
//
// Mapping: Binding requests go to every server and, when a server is an RFC
// 5780 one, to its OTHER-ADDRESS (and to the other IP on the primary port).
// Every answered destination gives one observation (destination -> mapped
// address):
//   - a mapped address equal to a local address with port P: "none" (no NAT);
//   - the same mapped address for all destinations (at least two distinct
//     destinations): "endpoint-independent";
//   - two destinations on the same IP but different ports mapped differently:
//     "address-and-port-dependent"; otherwise different mappings for
//     different IPs: "address-dependent";
//   - fewer than two destinations answered: "unknown".
// Filtering (needs an RFC 5780 server) is tested from a separate ephemeral
// port that sends only to the first server's primary address (an answer
// proves nothing if we had sent to its source, and unsolicited answers must
// not leave router state on port P): a request with CHANGE-REQUEST
// (change IP and port) answered from another IP -> "endpoint-independent";
// else one with CHANGE-REQUEST (change port) answered from another port of
// the same IP -> "address-dependent"; both unanswered while the server
// answers plain requests -> "address-and-port-dependent"; else "unknown".
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "netmap/endpoints.h"
#include "punch/transport.h"

namespace mesh::punch {

using Clock = std::chrono::steady_clock;

struct DiscoverOptions {
  std::vector<std::string> servers;  // HOST:PORT as given (for the report)
  std::vector<SockAddr> addresses;   // resolved, same order
  std::chrono::milliseconds timeout{3000};  // total time bound
  std::chrono::milliseconds rto{200};       // initial retransmission timeout, doubled per retry
  std::chrono::milliseconds filter_wait{500};  // how long a CHANGE-REQUEST may stay unanswered
  bool nat_tests = true;  // RFC 5780 OTHER-ADDRESS and CHANGE-REQUEST tests
  Transport* filter_transport = nullptr;  // ephemeral port for CHANGE-REQUEST; none: no filtering test
  std::vector<IpAddr> local_addresses;  // to recognise "no NAT"
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
};

struct Discovery {
  std::vector<StunResult> servers;  // one per DiscoverOptions::servers entry
  std::vector<Candidate> srflx;     // distinct mapped addresses, in server order
  NatInfo nat{"unknown", "unknown"};
};

// Runs the transactions on `t` until all are answered or timed out (at most
// opt.timeout). Unavailable when no server answered at all.
Result<Discovery> discover(Transport& t, const DiscoverOptions& opt);

// One observation for classify_mapping: a destination and the mapped address
// it reported.
struct MappingObservation {
  SockAddr destination;
  SockAddr mapped;
};
// Pure classification used by discover() (see the table above).
std::string classify_mapping(const std::vector<MappingObservation>& obs,
                             const std::vector<IpAddr>& local_addresses, uint16_t port);

// Resolves "HOST:PORT" / "[V6]:PORT" (names through getaddrinfo). DataErr for
// bad syntax, Unavailable when the name does not resolve.
Result<SockAddr> resolve_hostport(const std::string& text);

// Local interface addresses that can be host candidates: up, not loopback,
// not point-to-point (tunnels such as the WireGuard interface itself), not
// IPv6 link-local.
std::vector<IpAddr> local_addresses();

// The subnets of the same interfaces (address and netmask): where a peer's
// host candidate may be on this node's own link.
std::vector<Prefix> local_subnets();

}  // namespace mesh::punch
