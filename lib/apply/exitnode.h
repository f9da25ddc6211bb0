// Exit nodes (issue 19), the client side: policy routing as wg-quick(8)
// does it, so everything leaves through the chosen exit node except the
// tunnel's own UDP (its socket carries kExitFwmark), the coordinator and the
// relay/STUN servers (bypass rules to the main table) and, unless blocked,
// the local networks (the main table's non-default routes win through
// `suppress_prefixlength 0`).
//
// Per family (IPv4 and IPv6):
//   priority 5200: to BYPASS lookup main          (one per bypass prefix)
//   priority 5210: lookup main suppress_prefixlength 0   (unless block_lan)
//   priority 5220: not fwmark kExitFwmark lookup kExitTable
// and in table kExitTable a default route via the mesh interface, or a
// blackhole default for a family the exit node does not offer (so IPv6
// does not leak past an IPv4-only exit). Rules and routes carry protocol
// kRouteProto: mesh-apply lists and removes only its own, so turning the
// exit node off leaves `ip rule` and `ip route show table all` exactly as
// they were before.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "apply/netlink.h"
#include "core/net.h"
#include "core/status.h"

namespace mesh::apply {

inline constexpr uint32_t kExitFwmark = 51820;  // wg-quick's choice
inline constexpr uint32_t kExitTable = 51820;
inline constexpr uint32_t kRulePrioBypass = 5200;
inline constexpr uint32_t kRulePrioSuppress = 5210;
inline constexpr uint32_t kRulePrioExit = 5220;
inline constexpr const char* kSrcValidMark = "net.ipv4.conf.all.src_valid_mark";

// What the client wants: the exit node in use (none: empty name).
struct ExitWant {
  std::string name;          // the exit node's peer name
  bool v4 = false, v6 = false;  // default routes it offers
  bool block_lan = false;    // --exit-node-block-lan: no suppress rule
  std::vector<Prefix> bypass;  // coordinator, relays, STUN: via the main table
};

struct PolicyRule {
  uint8_t family = 0;  // AF_INET, AF_INET6
  uint32_t priority = 0;
  uint32_t table = 0;
  bool not_fwmark = false;  // "not fwmark kExitFwmark"
  uint32_t fwmark = 0;
  int suppress_prefixlen = -1;  // -1: none
  std::optional<Prefix> to;
  auto operator<=>(const PolicyRule&) const = default;
};

struct TableRoute {
  Prefix dst;          // 0.0.0.0/0 or ::/0
  bool blackhole = false;
  int ifindex = 0;     // the mesh interface (0 for a blackhole)
  auto operator<=>(const TableRoute&) const = default;
};

struct ExitState {
  std::vector<PolicyRule> rules;   // sorted
  std::vector<TableRoute> routes;  // sorted
  bool operator==(const ExitState&) const = default;
};

struct ExitChange {
  std::vector<PolicyRule> rules_add, rules_del;
  std::vector<TableRoute> routes_add, routes_del;
  bool empty() const { return rules_add.empty() && rules_del.empty() && routes_add.empty() && routes_del.empty(); }
};

// Pure: the rules and routes `w` needs (none for an empty name).
ExitState exit_state_for(const ExitWant& w, int ifindex);
ExitChange exit_diff(const ExitState& want, const ExitState& cur);

// Builders and parsers (pure).
NlMsg rtnl_rule(bool add, const PolicyRule& r, uint32_t seq);
NlMsg rtnl_dump_rules(int family, uint32_t seq);
NlMsg rtnl_table_route(bool add, const TableRoute& r, uint32_t seq);
// nullopt unless the message is one of ours (protocol kRouteProto; routes:
// in kExitTable).
std::optional<PolicyRule> rtnl_parse_rule(const nlmsghdr* h);
std::optional<TableRoute> rtnl_parse_table_route(const nlmsghdr* h);

// I/O: what is installed now, and the change (rules removed, routes
// removed, routes added, rules added).
// The table's routes are read only when `routes` or when one of our rules
// exists (a host with a full routing table pays nothing otherwise).
Result<ExitState> read_exit_state(bool routes = true);
Status change_exit_state(const ExitChange& c);

}  // namespace mesh::apply
