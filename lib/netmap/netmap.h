// The network map: what the coordinator tells one peer about its place in
// the mesh, and what mesh-apply, mesh-punch and mesh-relay consume. The JSON
// form is specified in man/mesh-netmap.5; this header is its C++ mirror and
// parse_netmap() is the one validator every program uses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"
#include "core/key.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh {

// A way to reach a peer. kind: "host" (a local interface address), "srflx"
// (server-reflexive, seen by STUN), "prflx" (learned from a probe), "relay"
// (a TURN relayed address, or a local relay port in an endpoints document).
struct Candidate {
  SockAddr endpoint;
  std::string kind = "host";
  auto operator<=>(const Candidate&) const = default;
};

// "22" or "8000-8080"; single ports have lo == hi. 1..65535.
struct PortRange {
  uint16_t lo = 0, hi = 0;
  static Result<PortRange> parse(std::string_view text);
  std::string to_string() const;
  auto operator<=>(const PortRange&) const = default;
};

// One inbound rule the peer enforces on its mesh interface.
struct FirewallRule {
  std::vector<Prefix> sources;   // who may connect (overlay addresses, /32 and /128)
  std::string proto = "any";     // "tcp", "udp", "icmp" or "any"
  std::vector<PortRange> ports;  // empty: all ports (required empty for icmp/any)
  std::string rule;              // id/name of the policy rule that produced it
  // firewall.forward rules only (always empty in firewall.inbound): the
  // routed networks the sources may reach through this peer.
  std::vector<Prefix> destinations;
  bool operator==(const FirewallRule&) const = default;
};

// self.routes[]: a network this peer routes for others (issue 19). An exit
// node routes 0.0.0.0/0 (and ::/0) with masquerade.
struct SelfRoute {
  Prefix network;
  bool masquerade = false;
  bool operator==(const SelfRoute&) const = default;
};

// peers[].routes[]: a network reachable through that peer which this node
// may use. Several peers may offer one network (high availability): the
// lowest metric that is alive wins (mesh-apply decides).
struct PeerRoute {
  Prefix network;
  int metric = 0;
  bool masquerade = false;
  bool operator==(const PeerRoute&) const = default;
};

// Whether p is a default route (0.0.0.0/0 or ::/0): an exit node's.
inline bool is_default_route(const Prefix& p) { return p.len == 0; }

struct MapPeer {
  std::string name;
  PublicKey public_key;
  std::vector<Prefix> addresses;    // overlay addresses (/32 and /128)
  std::vector<Prefix> allowed_ips;  // addresses plus routes this peer carries
  std::vector<Candidate> endpoints; // endpoint candidates, preferred first
  int keepalive = 0;                // persistent keepalive in seconds, 0 = off
  std::optional<SecretKey> preshared_key;
  std::vector<std::string> groups;
  // Networks routed through this peer (not in allowed_ips: mesh-apply adds
  // the one it chooses). Never overlap the overlay prefixes.
  std::vector<PeerRoute> routes;
};

struct TurnServer {
  std::string server;     // HOST:PORT
  std::string transport;  // "udp", "tcp" or "tls"
  std::string username;   // coturn REST form "EXPIRY:NAME"
  std::string password;   // base64(HMAC-SHA1(secret, username))
  int64_t expires_at = 0; // unix seconds
};

struct NetMap {
  int version = 1;
  uint64_t serial = 0;
  int64_t generated_at = 0;  // unix seconds
  struct Self {
    std::string name;
    PublicKey public_key;
    std::vector<Prefix> addresses;  // overlay addresses with the overlay prefix length
    std::vector<std::string> groups;
    uint16_t listen_port = 0;  // 0: leave to mesh-apply / the interface
    int mtu = 1420;
    std::vector<SelfRoute> routes;  // networks this peer routes for others
  } self;
  std::vector<MapPeer> peers;
  std::vector<FirewallRule> inbound;
  // firewall.forward: what this (routing) peer forwards from the mesh into
  // its routed networks; anything else from the mesh is not forwarded.
  std::vector<FirewallRule> forward;
  std::vector<std::string> stun;  // HOST:PORT
  std::vector<TurnServer> turn;
  // dns.domain: every peer (self included) is NAME.DOMAIN. Empty: the map
  // has no "dns" object and names no one.
  std::string dns_domain;
};

struct ParseOptions {
  bool strict = false;  // unknown fields are errors
};

// Validates everything: keys, prefixes, endpoints, ports, duplicate peers,
// a peer with our own key, overlapping allowed IPs between two peers, a
// network listed twice in one routes array, and peers[].routes networks
// that overlap the overlay (the on-link prefixes of self.addresses).
Result<NetMap> parse_netmap(const Json& j, const std::string& source, ParseOptions opt = {});
Result<NetMap> read_netmap_file(const std::string& path, ParseOptions opt = {});
Json netmap_to_json(const NetMap& m);

// Whether a routed network (self.routes, peers[].routes) collides with an
// overlay prefix: it lies inside one, or contains one without being a
// default route (0.0.0.0/0, ::/0: an exit node, which the overlay's longer
// prefixes still win against). Prefixes of the other family never collide.
bool route_overlaps_overlay(const Prefix& network, const std::vector<Prefix>& overlay);

// An RFC 1123 host name label: 1-63 ASCII letters, digits and hyphens, not
// starting or ending with a hyphen.
bool valid_dns_label(std::string_view s);
// Labels as above joined by single dots, at most 253 characters, no
// leading or trailing dot (the form dns.domain takes).
bool valid_dns_domain(std::string_view s);

// Shared pieces, also used by the endpoints document.
Result<Candidate> parse_candidate(const JsonView& v, bool strict);
// The optional "proto" (tcp, udp, icmp, any) and "ports" (numbers or
// "LOW-HIGH" strings; only with tcp/udp) members of a rule object, as the
// map's firewall rules and mesh-policy(5) rules share them.
Status parse_proto_ports(const JsonView& v, std::string* proto, std::vector<PortRange>* ports);
Json candidate_to_json(const Candidate& c);

}  // namespace mesh
