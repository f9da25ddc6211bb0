// The access policy (man/mesh-policy.5): groups, allow rules with default
// deny, and tests that must pass before a policy is accepted. Pure logic:
// parsing, validation and evaluation against peer attributes. Compiling the
// policy into per-peer maps is the model's job (coord/model.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/net.h"
#include "core/status.h"
#include "coord/routes.h"
#include "netmap/netmap.h"

namespace mesh::coord {

// What a rule's src/dst entry selects.
struct Selector {
  // User: `user:EMAIL`, a login's email; IdpGroup: `group:idp:NAME`, a
  // group in the identity provider's groups claim (coord/users.h).
  // Route: `route:NAME`, only in a rule's dst (grants use of the route).
  enum class Kind { All, Group, Peer, Cidr, User, IdpGroup, Route } kind = Kind::All;
  std::string name;  // group or peer name, email, IdP group, route name
  Prefix cidr;       // Kind::Cidr: peers whose overlay address is inside
  std::string to_string() const;
};

struct PolicyGroup {
  std::vector<std::string> members;  // peer names
  std::vector<std::string> tags;     // peers carrying any of these tags
};

struct PolicyRule {
  std::string name;
  std::vector<Selector> src, dst;
  std::string proto = "any";  // tcp, udp, icmp, any
  std::vector<PortRange> ports;  // empty: all
};

// "22/tcp", "8000/udp", "icmp", "any" (any protocol, any port).
struct Service {
  std::string proto = "any";
  uint16_t port = 0;  // 0 for icmp/any
  static Result<Service> parse(std::string_view text);
  std::string to_string() const;
  auto operator<=>(const Service&) const = default;
};

struct PolicyTest {
  // Peer name, "group:NAME" (a peer in just that group), "user:EMAIL" (a
  // peer of that user in no group) or "group:idp:NAME" (a user's peer in
  // just that IdP group); `to` may also be "route:NAME".
  std::string from, to;
  Service service;
  bool expect_allow = true;
};

struct Policy {
  std::map<std::string, PolicyGroup> groups;
  std::vector<PolicyRule> rules;
  std::vector<PolicyTest> tests;
  std::map<std::string, Route> routes;  // the "routes" section (from_policy set)
};

// What the policy needs to know about a peer.
struct PeerAttrs {
  std::string name;
  std::vector<std::string> groups;  // assigned (setup key auto-groups, set-groups)
  std::vector<std::string> tags;
  std::vector<IpAddr> addresses;
  std::string user;                     // owner's email (login peers), else ""
  std::vector<std::string> idp_groups;  // owner's IdP groups at the last login
};

// `user:EMAIL` and `group:idp:NAME` (mesh-policy(5)): the email or IdP group
// a selector or test party names, when it is one.
bool parse_user_selector(std::string_view s, std::string* email);
bool parse_idp_group_selector(std::string_view s, std::string* group);

// Validates everything (strict keys, group names, unknown groups in rules
// or tests, ports, CIDRs, protocols). Errors name the JSON path.
Result<Policy> parse_policy(const Json& j, const std::string& source);
Json policy_to_json(const Policy& p);
// The policy in effect before any is set: no groups, no rules (deny all).
Policy empty_policy();

// The peer names the policy grants access by: `peer:NAME` selectors in
// rules, groups' `members` and routes' routers named by peer. Only a setup key bound to such a name may
// enrol a peer under it (see mesh-coord(8), Peer names).
std::set<std::string> granted_names(const Policy& p);

// Name rules: DNS-label-like, lower case, 1-63 characters.
bool valid_name(std::string_view s);

bool selector_matches(const Policy& p, const Selector& s, const PeerAttrs& a);
bool rule_allows_service(const PolicyRule& r, const Service& s);

struct Verdict {
  bool allow = false;
  std::string rule;  // deciding rule name, or "default-deny"
};
Verdict evaluate(const Policy& p, const PeerAttrs& from, const PeerAttrs& to, const Service& s);

}  // namespace mesh::coord
