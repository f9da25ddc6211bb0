// The mesh firewall: one nftables table per interface, `inet mesh_IF`
// (IF with characters other than [A-Za-z0-9_] turned into '_'), owned by
// mesh-apply and never shared. It hooks input and forward, and for packets
// arriving on the mesh interface accepts established/related traffic and
// what the map's firewall.inbound rules (input) or firewall.forward rules
// (forward) allow, and drops the rest. Rules are
// compiled into interval sets (concatenated `saddr . dport` for tcp/udp) so
// thousands of rules cost one lookup. The table is replaced atomically with
// one `nft -f -` transaction (add; delete; add ...), never touching other
// tables. A SHA-256 of the generated body is kept in the table's comment so
// an unchanged firewall is detected without listing the rules.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "apply/netlink.h"
#include "core/status.h"
#include "netmap/netmap.h"

namespace mesh::apply {

std::string firewall_table_name(const std::string& interface);

struct FirewallScript {
  std::string table;   // "mesh_IF"
  std::string body;    // the "table inet mesh_IF { ... }" block without comment
  std::string digest;  // hex SHA-256 of body
};

// Pure: compiles the rules into the table body. Overlapping sources and
// port ranges are normalised so nft's interval sets accept them.
//
// Routing (issue 19): packets forwarded from the mesh interface go through
// chain mesh_fwd, which accepts established/related traffic and what the
// `forward` rules allow (source . destination . proto/port) and drops the
// rest. `masquerade` lists routed networks whose traffic from the mesh is
// source-NATed to the outgoing interface's address (a postrouting nat
// chain, for packets that leave by another interface than the mesh's).
FirewallScript firewall_script(const std::string& interface,
                               const std::vector<FirewallRule>& inbound,
                               const std::vector<FirewallRule>& forward = {},
                               const std::vector<Prefix>& masquerade = {});

// The transaction text that replaces the table atomically.
std::string firewall_transaction(const FirewallScript& s);

// Reads the digest in the comment of our table: nullopt when the table does
// not exist (or has no digest). One nfnetlink NFT_MSG_GETTABLE request.
NlMsg nft_get_table_msg(const std::string& table, uint32_t seq);
std::optional<std::string> nft_parse_table_digest(const nlmsghdr* h);
Result<std::optional<std::string>> firewall_current_digest(const std::string& table);

// Installs the table (one transaction). Unavailable when nft is missing.
Status firewall_install(const FirewallScript& s);

// Deletes the table if present.
Status firewall_remove(const std::string& table);

}  // namespace mesh::apply
