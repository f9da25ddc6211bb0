#include "apply/nft.h"

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <sodium.h>

#include <algorithm>
#include <map>
#include <set>
#include <type_traits>

#include "apply/netlink.h"
#include "apply/process.h"
#include "core/base64.h"

namespace mesh::apply {
namespace {

using namespace std::chrono_literals;

// Drops prefixes contained in another one of the list (prefixes either nest
// or are disjoint, so what remains is disjoint, as interval sets require).
// Sorted by (family, address, length), an enclosing prefix comes before
// everything it contains, and only the last kept one can contain the next:
// O(n log n) for thousands of rules.
std::vector<Prefix> disjoint(std::vector<Prefix> ps) {
  for (auto& p : ps) p = p.canonical();
  std::sort(ps.begin(), ps.end());
  std::vector<Prefix> out;
  for (const auto& p : ps) {
    if (!out.empty() && out.back().addr.family == p.addr.family && out.back().contains(p)) continue;
    out.push_back(p);
  }
  return out;
}

// The prefix lengths present among the keys of `set` (usually one or two).
template <typename Set>
std::vector<int> lengths(const Set& set) {
  std::set<int> ls;
  for (const auto& e : set) {
    if constexpr (std::is_same_v<typename Set::value_type, Prefix>)
      ls.insert(e.len);
    else
      ls.insert(e.first.len);
  }
  return {ls.begin(), ls.end()};
}

// True when a prefix of `set` encloses p (strictly: and is not p), looking
// up p's ancestors only at the lengths the set uses.
template <typename Set>
bool enclosed(const Set& set, const std::vector<int>& lens, const Prefix& p, bool strictly) {
  for (int l : lens) {
    if (l > p.len || (strictly && l == p.len)) break;
    if (set.count(Prefix{p.addr, l}.canonical())) return true;
  }
  return false;
}

// Union of port ranges: sorted, merged, disjoint.
std::vector<PortRange> merge_ports(std::vector<PortRange> rs) {
  std::sort(rs.begin(), rs.end());
  std::vector<PortRange> out;
  for (const auto& r : rs) {
    if (!out.empty() && r.lo <= static_cast<uint32_t>(out.back().hi) + 1)
      out.back().hi = std::max(out.back().hi, r.hi);
    else
      out.push_back(r);
  }
  return out;
}

std::string quote_comment(const std::string& s) {
  std::string o;
  for (char c : s) o += (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) ? '_' : c;
  return o;
}

struct Sets {
  std::vector<Prefix> any4, any6, icmp4, icmp6;
  // (source, ports) per family and proto; made disjoint below.
  std::map<Prefix, std::vector<PortRange>> tcp4, tcp6, udp4, udp6;
};

// Makes a concatenated (prefix . port-range) set free of overlaps: a port
// range of a nested prefix is reduced by what its enclosing prefixes already
// allow, since overlapping concatenated intervals are rejected by nft.
std::vector<std::pair<Prefix, PortRange>> concat_elements(
    const std::map<Prefix, std::vector<PortRange>>& m, const std::vector<Prefix>& covered_any) {
  std::set<Prefix> any(covered_any.begin(), covered_any.end());
  std::vector<int> any_lens = lengths(any);
  std::map<Prefix, std::vector<PortRange>> merged;
  for (const auto& [p, rs] : m) {
    if (!enclosed(any, any_lens, p.canonical(), false)) {
      auto& v = merged[p.canonical()];
      v.insert(v.end(), rs.begin(), rs.end());
    }
  }
  for (auto& [p, rs] : merged) rs = merge_ports(rs);
  std::vector<int> lens = lengths(merged);
  std::vector<std::pair<Prefix, PortRange>> out;
  for (const auto& [p, rs] : merged) {
    // Subtract ranges allowed by any strictly enclosing prefix.
    std::vector<PortRange> cur = rs;
    for (int l : lens) {
      if (l >= p.len) break;
      auto it = merged.find(Prefix{p.addr, l}.canonical());
      if (it == merged.end()) continue;
      const auto& qs = it->second;
      std::vector<PortRange> next;
      for (auto r : cur) {
        std::vector<PortRange> pieces{r};
        for (const auto& s : qs) {
          std::vector<PortRange> keep;
          for (auto x : pieces) {
            if (s.hi < x.lo || s.lo > x.hi) { keep.push_back(x); continue; }
            if (s.lo > x.lo) keep.push_back({x.lo, static_cast<uint16_t>(s.lo - 1)});
            if (s.hi < x.hi) keep.push_back({static_cast<uint16_t>(s.hi + 1), x.hi});
          }
          pieces = std::move(keep);
        }
        next.insert(next.end(), pieces.begin(), pieces.end());
      }
      cur = std::move(next);
    }
    for (const auto& r : cur) out.emplace_back(p, r);
  }
  return out;
}

void emit_set(std::string* o, const char* name, const char* type,
              const std::vector<std::string>& elements) {
  *o += "  set " + std::string(name) + " {\n    type " + type + "\n    flags interval\n";
  if (!elements.empty()) {
    *o += "    elements = { ";
    for (size_t i = 0; i < elements.size(); ++i) *o += (i ? ",\n      " : "") + elements[i];
    *o += " }\n";
  }
  *o += "  }\n";
}

std::vector<std::string> texts(const std::vector<Prefix>& ps) {
  std::vector<std::string> o;
  for (const auto& p : ps) o.push_back(p.to_string());
  return o;
}

std::vector<std::string> texts(const std::vector<std::pair<Prefix, PortRange>>& es) {
  std::vector<std::string> o;
  for (const auto& [p, r] : es) o.push_back(p.to_string() + " . " + r.to_string());
  return o;
}

}  // namespace

std::string firewall_table_name(const std::string& interface) {
  std::string n = "mesh_";
  for (char c : interface) n += (isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
  return n;
}

namespace {

// "{ a, b }" of disjoint prefixes of one family (nft merges nothing in an
// anonymous set, so overlaps are removed first).
std::string anon_set(const std::vector<Prefix>& ps) {
  std::string o = "{ ";
  auto d = disjoint(ps);
  for (size_t i = 0; i < d.size(); ++i) o += (i ? ", " : "") + d[i].to_string();
  return o + " }";
}

// One nft rule per (forward rule, family): forward rules are few (routes
// times policy rules), so sets buy nothing here.
void emit_forward_rules(std::string* o, const std::vector<FirewallRule>& forward) {
  for (const auto& r : forward) {
    for (bool v4 : {true, false}) {
      std::vector<Prefix> src, dst;
      for (const auto& p : r.sources)
        if (p.addr.is_v4() == v4) src.push_back(p);
      for (const auto& p : r.destinations)
        if (p.addr.is_v4() == v4) dst.push_back(p);
      if (src.empty() || dst.empty()) continue;
      const char* fam = v4 ? "ip" : "ip6";
      std::string line = "    " + std::string(fam) + " saddr " + anon_set(src) + " " + fam + " daddr " +
                         anon_set(dst);
      if (r.proto == "icmp") {
        line += v4 ? " meta l4proto icmp" : " meta l4proto ipv6-icmp";
      } else if (r.proto == "tcp" || r.proto == "udp") {
        line += " " + r.proto + " dport ";
        auto ports = merge_ports(r.ports.empty() ? std::vector<PortRange>{{1, 65535}} : r.ports);
        line += "{ ";
        for (size_t i = 0; i < ports.size(); ++i) line += (i ? ", " : "") + ports[i].to_string();
        line += " }";
      }
      *o += line + " accept";
      if (!r.rule.empty()) *o += " comment \"" + quote_comment(r.rule) + "\"";
      *o += "\n";
    }
  }
}

}  // namespace

FirewallScript firewall_script(const std::string& interface,
                               const std::vector<FirewallRule>& inbound,
                               const std::vector<FirewallRule>& forward,
                               const std::vector<Prefix>& masquerade) {
  Sets s;
  for (const auto& r : inbound) {
    for (const auto& src : r.sources) {
      bool v4 = src.addr.is_v4();
      Prefix p = src.canonical();
      if (r.proto == "any") {
        (v4 ? s.any4 : s.any6).push_back(p);
      } else if (r.proto == "icmp") {
        (v4 ? s.icmp4 : s.icmp6).push_back(p);
      } else {
        auto& m = r.proto == "tcp" ? (v4 ? s.tcp4 : s.tcp6) : (v4 ? s.udp4 : s.udp6);
        auto& v = m[p];
        if (r.ports.empty())
          v.push_back({1, 65535});
        else
          v.insert(v.end(), r.ports.begin(), r.ports.end());
      }
    }
  }
  s.any4 = disjoint(s.any4);
  s.any6 = disjoint(s.any6);
  FirewallScript out;
  out.table = firewall_table_name(interface);
  std::string& o = out.body;
  std::string ifq = "\"" + quote_comment(interface) + "\"";
  o = "table inet " + out.table + " {\n";
  emit_set(&o, "any4", "ipv4_addr", texts(s.any4));
  emit_set(&o, "any6", "ipv6_addr", texts(s.any6));
  emit_set(&o, "icmp4", "ipv4_addr", texts(disjoint(s.icmp4)));
  emit_set(&o, "icmp6", "ipv6_addr", texts(disjoint(s.icmp6)));
  emit_set(&o, "tcp4", "ipv4_addr . inet_service", texts(concat_elements(s.tcp4, s.any4)));
  emit_set(&o, "tcp6", "ipv6_addr . inet_service", texts(concat_elements(s.tcp6, s.any6)));
  emit_set(&o, "udp4", "ipv4_addr . inet_service", texts(concat_elements(s.udp4, s.any4)));
  emit_set(&o, "udp6", "ipv6_addr . inet_service", texts(concat_elements(s.udp6, s.any6)));
  o += "  chain mesh_in {\n"
       "    ct state established,related accept\n"
       "    ct state invalid drop\n"
       "    ip saddr @any4 accept\n"
       "    ip6 saddr @any6 accept\n"
       "    meta l4proto icmp ip saddr @icmp4 accept\n"
       "    meta l4proto ipv6-icmp ip6 saddr @icmp6 accept\n"
       "    ip saddr . tcp dport @tcp4 accept\n"
       "    ip6 saddr . tcp dport @tcp6 accept\n"
       "    ip saddr . udp dport @udp4 accept\n"
       "    ip6 saddr . udp dport @udp6 accept\n"
       "    counter drop\n"
       "  }\n";
  // Forwarded from the mesh (a routing peer's, issue 19): only what the
  // map's firewall.forward allows, by source, destination, proto and port.
  o += "  chain mesh_fwd {\n"
       "    ct state established,related accept\n"
       "    ct state invalid drop\n";
  emit_forward_rules(&o, forward);
  o += "    counter drop\n"
       "  }\n";
  o += "  chain input {\n    type filter hook input priority filter; policy accept;\n    iifname " + ifq +
       " jump mesh_in\n  }\n";
  o += "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    iifname " + ifq +
       " jump mesh_fwd\n  }\n";
  std::vector<Prefix> m4, m6;
  for (const auto& p : masquerade) (p.addr.is_v4() ? m4 : m6).push_back(p);
  if (!m4.empty() || !m6.empty()) {
    // Source NAT for what the mesh sends into masqueraded networks, out of
    // any interface but the mesh's own.
    o += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
    if (!m4.empty())
      o += "    iifname " + ifq + " oifname != " + ifq + " ip daddr " + anon_set(m4) + " masquerade\n";
    if (!m6.empty())
      o += "    iifname " + ifq + " oifname != " + ifq + " ip6 daddr " + anon_set(m6) + " masquerade\n";
    o += "  }\n";
  }
  o += "}\n";
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, reinterpret_cast<const unsigned char*>(o.data()), o.size());
  out.digest = hex_encode(std::span<const uint8_t>(h, sizeof h));
  return out;
}

std::string firewall_transaction(const FirewallScript& s) {
  // "add" then "delete" makes the delete succeed whether or not the table
  // existed; the whole file is one atomic nft transaction.
  std::string body = s.body;
  std::string head = "table inet " + s.table + " {\n";
  body.insert(head.size(), "  comment \"mesh-apply sha256:" + s.digest + "\"\n");
  return "add table inet " + s.table + "\ndelete table inet " + s.table + "\n" + body;
}

NlMsg nft_get_table_msg(const std::string& table, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
                          NLM_F_REQUEST | NLM_F_ACK, seq, 512);
  auto* g = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(h, sizeof(nfgenmsg)));
  g->nfgen_family = NFPROTO_INET;
  g->version = NFNETLINK_V0;
  g->res_id = 0;
  mnl_attr_put_strz(h, NFTA_TABLE_NAME, table.c_str());
  nl_finish(&b);
  return b;
}

std::optional<std::string> nft_parse_table_digest(const nlmsghdr* h) {
  if ((h->nlmsg_type & 0xff) != NFT_MSG_NEWTABLE || h->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg)))
    return std::nullopt;
  MESH_NL_ATTRS(a, h, sizeof(nfgenmsg)) {
    if (mnl_attr_get_type(a) != NFTA_TABLE_USERDATA) continue;
    // nft keeps the comment as a TLV in the table's user data; the marker
    // is unique enough to find it without decoding the TLV layout.
    std::string_view ud(static_cast<const char*>(mnl_attr_get_payload(a)), mnl_attr_get_payload_len(a));
    constexpr std::string_view kMark = "mesh-apply sha256:";
    auto at = ud.find(kMark);
    if (at == std::string_view::npos || ud.size() < at + kMark.size() + 64) return std::nullopt;
    return std::string(ud.substr(at + kMark.size(), 64));
  }
  return std::nullopt;
}

Result<std::optional<std::string>> firewall_current_digest(const std::string& table) {
  // One nfnetlink request instead of running nft: no fork, no ruleset cache.
  MESH_ASSIGN(auto nl, NlSocket::open(NETLINK_NETFILTER));
  std::optional<std::string> digest;
  bool found = false;
  Status s = nl.dump(nft_get_table_msg(table, nl.next_seq()), [&](const nlmsghdr* h) {
    found = true;
    digest = nft_parse_table_digest(h);
    return Status::ok();
  });
  if (!s) {
    if (s.code() == Exit::NoInput) return std::optional<std::string>();  // ENOENT: no table
    return s.with_context("cannot read nftables table inet " + table);
  }
  (void)found;
  return digest;
}

static Status nft_error(const std::string& what, const ProcResult& r) {
  std::string msg = r.err;
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  if (msg.find("Operation not permitted") != std::string::npos)
    return no_permission(what + ": operation not permitted");
  return io_error(what + ": " + msg);
}

Status firewall_install(const FirewallScript& s) {
  MESH_ASSIGN(auto r, run_process({"nft", "-f", "-"}, firewall_transaction(s), 60s));
  if (r.exit_code != 0) return nft_error("nft: cannot install table inet " + s.table, r);
  return Status::ok();
}

Status firewall_remove(const std::string& table) {
  MESH_ASSIGN(auto r, run_process({"nft", "-f", "-"},
                                  "add table inet " + table + "\ndelete table inet " + table + "\n",
                                  20s));
  if (r.exit_code != 0) return nft_error("nft: cannot delete table inet " + table, r);
  return Status::ok();
}

}  // namespace mesh::apply
