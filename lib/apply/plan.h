// plan = diff(desired, current): the pure heart of mesh-apply. Given what
// the network map (plus endpoints documents and flags) asks for and what the
// interface currently has, it lists the minimal set of changes. Unchanged
// peers do not appear (their sessions are never disturbed), an endpoint
// WireGuard learned by roaming is kept unless the endpoints document names
// one, and allowed-IP changes are expressed as additions where possible so
// no traffic window opens. No I/O here; see apply.h for the executor.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "apply/device.h"
#include "apply/exitnode.h"
#include "core/json.h"
#include "netmap/endpoints.h"
#include "netmap/netmap.h"

namespace mesh::apply {

struct DesiredPeer {
  std::string name;
  PublicKey public_key;
  std::optional<SecretKey> preshared_key;
  std::vector<Prefix> allowed_ips;          // canonical, sorted, unique
  int keepalive = 0;
  std::optional<SockAddr> forced_endpoint;  // from an endpoints document: always applied
  std::optional<SockAddr> map_endpoint;     // the map's first candidate: only if none known
  std::vector<PeerRoute> routes;            // the map's peers[].routes (candidates, see choose_routes)
};

// Persistent keepalive (seconds) mesh-apply gives routers on a route
// client and route clients (forward sources) on a router, so the HA
// watcher sees a dead router within a few seconds (WireGuard's usual 25 s
// is far too slow): the lower of this and the map's keepalive.
inline constexpr int kRouteKeepalive = 1;

// Sysctls a routing peer needs, per family.
inline constexpr const char* kForwardV4 = "net.ipv4.ip_forward";
inline constexpr const char* kForwardV6 = "net.ipv6.conf.all.forwarding";

// Which peer carries a routed network (choose_routes()).
struct RouteChoice {
  Prefix network;
  PublicKey public_key;
  std::string name;
  int metric = 0;
  bool operator==(const RouteChoice&) const = default;
};

struct Desired {
  SecretKey private_key;
  std::optional<uint16_t> listen_port;  // absent: leave the interface's port alone
  std::vector<DesiredPeer> peers;       // sorted by public key
  std::vector<Prefix> addresses;        // interface addresses (with prefix length), sorted
  std::vector<Prefix> routes;           // canonical, sorted: allowed IPs not on-link
  int mtu = 1420;
  std::string firewall_script;          // the nft table body (nft.h)
  std::string firewall_digest;          // its digest, stored in the table's comment
  size_t firewall_rules = 0;
  // Router side: sysctls that must be "1" (kForwardV4/V6) for self.routes.
  std::vector<std::string> forwarding;
  // Client side, filled by choose_routes(): the router chosen per network.
  std::vector<RouteChoice> route_choices;
  // Client side, filled by use_exit_node(): the exit node in use (empty
  // name: none) and the WireGuard socket's fwmark (kExitFwmark with an
  // exit node, else 0).
  ExitWant exit;
  uint32_t fwmark = 0;
};

struct LinkCurrent {
  bool exists = false;
  int mtu = 0;
  bool up = false;
  std::vector<Prefix> addresses;  // sorted
  std::vector<Prefix> routes;     // sorted, only routes mesh-apply owns (its protocol)
};

struct Current {
  DeviceState device;             // empty when the interface does not exist
  LinkCurrent link;
  std::optional<std::string> firewall_digest;  // absent: no table of ours
  // kForwardV4/V6 -> current value ("0", "1"); only the keys read.
  std::map<std::string, std::string> sysctls;
  // Values saved before mesh-apply changed them (restored when no longer
  // wanted, and by `down`).
  std::map<std::string, std::string> saved_sysctls;
  ExitState exit;   // mesh-apply's policy rules and exit table routes now
  int ifindex = 0;  // the interface's, when it exists
};

struct PeerChange {
  enum class Kind { Add, Update, Remove } kind = Kind::Add;
  std::string name;
  PublicKey public_key;
  std::vector<std::string> fields;  // for updates: endpoint, keepalive, preshared_key, allowed_ips
  std::optional<SecretKey> preshared_key;  // Add / changed
  bool preshared_key_changed = false;
  std::optional<SockAddr> endpoint;        // to set (Add / changed)
  std::optional<int> keepalive;            // to set (Add / changed)
  std::vector<Prefix> allowed_ips;         // full desired list
  std::vector<Prefix> ips_added, ips_removed;  // updates only
};

struct Plan {
  bool create_interface = false;
  bool set_private_key = false;
  std::optional<uint16_t> set_listen_port;
  std::vector<PeerChange> peers;  // removals, then updates and additions, by key
  size_t peers_unchanged = 0;
  std::vector<Prefix> addresses_add, addresses_del;
  std::vector<Prefix> routes_add, routes_del;
  std::optional<int> set_mtu;
  bool set_up = false;
  bool firewall = false;
  // Sysctls to set to "1" (their old values saved first), and saved ones
  // no longer wanted, to put back as they were.
  std::vector<std::string> sysctl_enable;
  std::vector<std::pair<std::string, std::string>> sysctl_restore;
  std::vector<RouteChoice> route_choices;  // copied from Desired, for the output
  std::optional<uint32_t> set_fwmark;
  std::string exit_node;  // in use after the plan (empty: none)
  ExitChange exit;
  // The hosts file block (hosts.h): filled in by the executor, not diff().
  std::string hosts_file;  // empty: not managed (--hosts-file none)
  bool hosts_changed = false;
  size_t hosts_names = 0;  // lines in the block

  bool changed() const;
  size_t count(PeerChange::Kind k) const;
};

// Builds the desired state from a parsed map, the node's private key and
// merged endpoints document. `listen_port_override` (> 0) wins over the map.
// Fails with DataErr when the key does not match the map's self.public_key.
Result<Desired> desired_from_map(const NetMap& map, const SecretKey& key,
                                 const EndpointsDoc& endpoints,
                                 std::optional<uint16_t> listen_port_override);
// The same, moving the peers' names and allowed IPs out of `map` (whose
// other members are left as they were).
Result<Desired> desired_from_map(NetMap&& map, const SecretKey& key,
                                 const EndpointsDoc& endpoints,
                                 std::optional<uint16_t> listen_port_override);

// Routes the interface needs: every peer allowed IP not already covered by
// the on-link prefix of one of the interface addresses, default routes
// excepted (an exit node's go through policy routing, exitnode.h).
// Canonical, sorted.
std::vector<Prefix> routes_for(const std::vector<Prefix>& addresses,
                               const std::vector<DesiredPeer>& peers);

// Client side of routes: for every network in the peers' routes (default
// routes excepted: an exit node is chosen explicitly), picks one router,
// adds the network to its allowed IPs and recomputes desired->routes. The
// router is the one that holds the network on the device now if it is
// still a candidate (the HA watcher moved it there; keeping it avoids a
// flap), else the lowest metric (ties: lowest public key). Also lowers the keepalive of every router to kRouteKeepalive.
void choose_routes(Desired* desired, const DeviceState& device);

// Client side of exit nodes (`--exit-node NAME`): the default routes peer
// NAME offers go into its allowed IPs, the socket gets kExitFwmark and the
// policy routing of exitnode.h is wanted (with `bypass` prefixes kept on
// the main table). An empty name turns all that off. DataErr when NAME is
// not a peer of the map or offers no default route.
Status use_exit_node(Desired* desired, const std::string& name, bool block_lan, std::vector<Prefix> bypass);

Plan diff(const Desired& desired, const Current& current);

// One of desired_from_map()'s peers, from the map's entry alone.
DesiredPeer desired_peer(const MapPeer& peer, const EndpointsDoc& endpoints);
// The SET entry that adds `d` to a device without it: what device_update()
// sends for diff()'s addition of that peer.
PeerUpdate peer_addition(const DesiredPeer& d);

// The WireGuard SET that carries out the device part of `plan`: the
// device's own fields, then peer_update() of each change in order.
DeviceUpdate device_update(const Plan& plan, const Desired& desired);
PeerUpdate peer_update(const PeerChange& change);

// The JSON document mesh-apply prints (man/mesh-apply.8, OUTPUT FORMAT).
Json plan_to_json(const Plan& plan, const std::string& interface, const std::string& backend,
                  const std::string& firewall_table, bool dry_run);

// Exactly dump_json(plan_to_json(...)), written straight into a string: a
// full apply lists thousands of added peers, and the DOM plus its
// serialisation cost more than the rest of the run's own work.
std::string plan_json_text(const Plan& plan, const std::string& interface, const std::string& backend,
                           const std::string& firewall_table, bool dry_run);

// An equivalent wg-quick(8) configuration (Address, MTU in [Interface]).
std::string wg_quick_conf(const Desired& d, const Current& c);

}  // namespace mesh::apply
