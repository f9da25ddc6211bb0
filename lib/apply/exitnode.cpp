#include "apply/exitnode.h"

#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "apply/rtnl.h"

namespace mesh::apply {
namespace {

constexpr uint16_t kAck = NLM_F_REQUEST | NLM_F_ACK;

Prefix any_of(uint8_t family) {
  Prefix p;
  p.addr.family = family;
  p.len = 0;
  return p;
}

template <typename T>
std::vector<T> minus(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<T> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

bool get_addr(const nlattr* a, uint8_t family, IpAddr* out) {
  size_t n = family == AF_INET ? 4 : 16;
  if (mnl_attr_get_payload_len(a) != n) return false;
  out->family = family;
  std::memcpy(out->bytes.data(), mnl_attr_get_payload(a), n);
  return true;
}

}  // namespace

ExitState exit_state_for(const ExitWant& w, int ifindex) {
  ExitState s;
  if (w.name.empty()) return s;
  for (uint8_t fam : {uint8_t(AF_INET), uint8_t(AF_INET6)}) {
    for (const auto& b : w.bypass) {
      if (b.addr.family != fam) continue;
      PolicyRule r;
      r.family = fam;
      r.priority = kRulePrioBypass;
      r.table = RT_TABLE_MAIN;
      r.to = b.canonical();
      s.rules.push_back(r);
    }
    if (!w.block_lan) {
      PolicyRule r;
      r.family = fam;
      r.priority = kRulePrioSuppress;
      r.table = RT_TABLE_MAIN;
      r.suppress_prefixlen = 0;
      s.rules.push_back(r);
    }
    PolicyRule r;
    r.family = fam;
    r.priority = kRulePrioExit;
    r.table = kExitTable;
    r.not_fwmark = true;
    r.fwmark = kExitFwmark;
    s.rules.push_back(r);
    bool offered = fam == AF_INET ? w.v4 : w.v6;
    s.routes.push_back(TableRoute{any_of(fam), !offered, offered ? ifindex : 0});
  }
  std::sort(s.rules.begin(), s.rules.end());
  s.rules.erase(std::unique(s.rules.begin(), s.rules.end()), s.rules.end());
  std::sort(s.routes.begin(), s.routes.end());
  return s;
}

ExitChange exit_diff(const ExitState& want, const ExitState& cur) {
  ExitChange c;
  c.rules_add = minus(want.rules, cur.rules);
  c.rules_del = minus(cur.rules, want.rules);
  c.routes_add = minus(want.routes, cur.routes);
  c.routes_del = minus(cur.routes, want.routes);
  return c;
}

NlMsg rtnl_rule(bool add, const PolicyRule& r, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, add ? RTM_NEWRULE : RTM_DELRULE, add ? kAck | NLM_F_CREATE | NLM_F_EXCL : kAck, seq);
  auto* f = static_cast<fib_rule_hdr*>(mnl_nlmsg_put_extra_header(h, sizeof(fib_rule_hdr)));
  f->family = r.family;
  f->action = FR_ACT_TO_TBL;
  f->table = r.table < 256 ? static_cast<uint8_t>(r.table) : static_cast<uint8_t>(RT_TABLE_UNSPEC);
  if (r.not_fwmark) f->flags |= FIB_RULE_INVERT;
  mnl_attr_put_u32(h, FRA_PRIORITY, r.priority);
  mnl_attr_put_u32(h, FRA_TABLE, r.table);
  mnl_attr_put_u8(h, FRA_PROTOCOL, kRouteProto);
  if (r.not_fwmark || r.fwmark) {
    mnl_attr_put_u32(h, FRA_FWMARK, r.fwmark);
    mnl_attr_put_u32(h, FRA_FWMASK, 0xffffffffu);
  }
  if (r.suppress_prefixlen >= 0) mnl_attr_put_u32(h, FRA_SUPPRESS_PREFIXLEN, static_cast<uint32_t>(r.suppress_prefixlen));
  if (r.to) {
    f->dst_len = static_cast<uint8_t>(r.to->len);
    mnl_attr_put(h, FRA_DST, r.to->addr.size(), r.to->addr.bytes.data());
  }
  nl_finish(&b);
  return b;
}

NlMsg rtnl_dump_rules(int family, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, seq);
  static_cast<fib_rule_hdr*>(mnl_nlmsg_put_extra_header(h, sizeof(fib_rule_hdr)))->family =
      static_cast<uint8_t>(family);
  nl_finish(&b);
  return b;
}

NlMsg rtnl_table_route(bool add, const TableRoute& r, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, add ? RTM_NEWROUTE : RTM_DELROUTE, add ? kAck | NLM_F_CREATE | NLM_F_EXCL : kAck, seq);
  auto* rt = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(h, sizeof(rtmsg)));
  rt->rtm_family = static_cast<uint8_t>(r.dst.addr.family);
  rt->rtm_dst_len = static_cast<uint8_t>(r.dst.len);
  rt->rtm_table = RT_TABLE_UNSPEC;
  rt->rtm_protocol = kRouteProto;
  rt->rtm_scope = r.blackhole ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  rt->rtm_type = r.blackhole ? RTN_BLACKHOLE : RTN_UNICAST;
  mnl_attr_put_u32(h, RTA_TABLE, kExitTable);
  if (r.dst.len) mnl_attr_put(h, RTA_DST, r.dst.addr.size(), r.dst.addr.bytes.data());
  if (!r.blackhole && r.ifindex) mnl_attr_put_u32(h, RTA_OIF, static_cast<uint32_t>(r.ifindex));
  nl_finish(&b);
  return b;
}

std::optional<PolicyRule> rtnl_parse_rule(const nlmsghdr* h) {
  if (h->nlmsg_type != RTM_NEWRULE || h->nlmsg_len < NLMSG_LENGTH(sizeof(fib_rule_hdr))) return std::nullopt;
  const auto* f = static_cast<const fib_rule_hdr*>(mnl_nlmsg_get_payload(h));
  if (f->family != AF_INET && f->family != AF_INET6) return std::nullopt;
  PolicyRule r;
  r.family = f->family;
  r.table = f->table;
  r.not_fwmark = f->flags & FIB_RULE_INVERT;
  bool ours = false;
  MESH_NL_ATTRS(a, h, sizeof(fib_rule_hdr)) {
    switch (mnl_attr_get_type(a)) {
      case FRA_PROTOCOL:
        ours = mnl_attr_get_payload_len(a) >= 1 && mnl_attr_get_u8(a) == kRouteProto;
        break;
      case FRA_PRIORITY:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) r.priority = mnl_attr_get_u32(a);
        break;
      case FRA_TABLE:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) r.table = mnl_attr_get_u32(a);
        break;
      case FRA_FWMARK:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) r.fwmark = mnl_attr_get_u32(a);
        break;
      case FRA_SUPPRESS_PREFIXLEN:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) r.suppress_prefixlen = static_cast<int32_t>(mnl_attr_get_u32(a));
        break;
      case FRA_DST: {
        Prefix p;
        if (!get_addr(a, f->family, &p.addr)) return std::nullopt;
        p.len = f->dst_len;
        r.to = p;
        break;
      }
    }
  }
  if (r.suppress_prefixlen < -1) r.suppress_prefixlen = -1;
  if (!ours) return std::nullopt;
  return r;
}

std::optional<TableRoute> rtnl_parse_table_route(const nlmsghdr* h) {
  if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) return std::nullopt;
  const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(h));
  if ((rt->rtm_family != AF_INET && rt->rtm_family != AF_INET6) || rt->rtm_protocol != kRouteProto)
    return std::nullopt;
  uint32_t table = rt->rtm_table;
  TableRoute r;
  r.dst = any_of(rt->rtm_family);
  r.dst.len = rt->rtm_dst_len;
  r.blackhole = rt->rtm_type == RTN_BLACKHOLE;
  MESH_NL_ATTRS(a, h, sizeof(rtmsg)) {
    switch (mnl_attr_get_type(a)) {
      case RTA_TABLE:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) table = mnl_attr_get_u32(a);
        break;
      case RTA_OIF:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) r.ifindex = static_cast<int>(mnl_attr_get_u32(a));
        break;
      case RTA_DST:
        if (!get_addr(a, rt->rtm_family, &r.dst.addr)) return std::nullopt;
        break;
    }
  }
  if (table != kExitTable) return std::nullopt;
  if (r.blackhole) r.ifindex = 0;
  return r;
}

Result<ExitState> read_exit_state(bool routes) {
  MESH_ASSIGN(auto nl, NlSocket::open(NETLINK_ROUTE));
  ExitState s;
  for (int fam : {AF_INET, AF_INET6}) {
    MESH_TRY(nl.dump(rtnl_dump_rules(fam, nl.next_seq()), [&](const nlmsghdr* h) {
      if (auto r = rtnl_parse_rule(h)) s.rules.push_back(*r);
      return Status::ok();
    }));
  }
  if (!routes && s.rules.empty()) return s;
  for (int fam : {AF_INET, AF_INET6}) {
    MESH_TRY(nl.dump(rtnl_dump_routes(fam, nl.next_seq()), [&](const nlmsghdr* h) {
      if (auto r = rtnl_parse_table_route(h)) s.routes.push_back(*r);
      return Status::ok();
    }));
  }
  std::sort(s.rules.begin(), s.rules.end());
  std::sort(s.routes.begin(), s.routes.end());
  return s;
}

Status change_exit_state(const ExitChange& c) {
  if (c.empty()) return Status::ok();
  MESH_ASSIGN(auto nl, NlSocket::open(NETLINK_ROUTE));
  auto send = [&](std::vector<NlMsg> msgs, const char* what) -> Status {
    if (msgs.empty()) return Status::ok();
    return nl.transact(msgs, {EEXIST, ENOENT, ESRCH}).with_context(what);
  };
  std::vector<NlMsg> rules_del, routes_del, routes_add, rules_add;
  for (const auto& r : c.rules_del) rules_del.push_back(rtnl_rule(false, r, nl.next_seq()));
  for (const auto& r : c.routes_del) routes_del.push_back(rtnl_table_route(false, r, nl.next_seq()));
  for (const auto& r : c.routes_add) routes_add.push_back(rtnl_table_route(true, r, nl.next_seq()));
  for (const auto& r : c.rules_add) rules_add.push_back(rtnl_rule(true, r, nl.next_seq()));
  // Rules go before the routes they point at are removed, and come after
  // the routes they point at are added. (A route that changes, say a
  // blackhole for a family the exit node starts offering, is replaced:
  // the same destination cannot be added beside it.)
  MESH_TRY(send(std::move(rules_del), "cannot remove exit-node rules"));
  MESH_TRY(send(std::move(routes_del), "cannot remove exit-node routes"));
  MESH_TRY(send(std::move(routes_add), "cannot add exit-node routes"));
  return send(std::move(rules_add), "cannot add exit-node rules");
}

}  // namespace mesh::apply
