#include "apply/rtnl.h"

#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mesh::apply {
namespace {

constexpr uint16_t kAck = NLM_F_REQUEST | NLM_F_ACK;

template <typename T>
T* put_extra(nlmsghdr* h) {
  return static_cast<T*>(mnl_nlmsg_put_extra_header(h, sizeof(T)));
}

}  // namespace

NlMsg rtnl_get_link(const std::string& name, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_GETLINK, NLM_F_REQUEST, seq);
  auto* ifi = put_extra<ifinfomsg>(h);
  ifi->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(h, IFLA_IFNAME, name.c_str());
  nl_finish(&b);
  return b;
}

NlMsg rtnl_new_link(const std::string& name, const std::string& kind, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_NEWLINK, kAck | NLM_F_CREATE | NLM_F_EXCL, seq);
  put_extra<ifinfomsg>(h)->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(h, IFLA_IFNAME, name.c_str());
  auto* li = mnl_attr_nest_start(h, IFLA_LINKINFO);
  mnl_attr_put_strz(h, IFLA_INFO_KIND, kind.c_str());
  mnl_attr_nest_end(h, li);
  nl_finish(&b);
  return b;
}

NlMsg rtnl_del_link(int ifindex, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_DELLINK, kAck, seq);
  auto* ifi = put_extra<ifinfomsg>(h);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = ifindex;
  nl_finish(&b);
  return b;
}

NlMsg rtnl_set_link(int ifindex, std::optional<int> mtu, bool up, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_NEWLINK, kAck, seq);
  auto* ifi = put_extra<ifinfomsg>(h);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = ifindex;
  if (up) {
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
  }
  if (mtu) mnl_attr_put_u32(h, IFLA_MTU, static_cast<uint32_t>(*mtu));
  nl_finish(&b);
  return b;
}

NlMsg rtnl_addr(bool add, int ifindex, const Prefix& p, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, add ? RTM_NEWADDR : RTM_DELADDR,
                          add ? kAck | NLM_F_CREATE | NLM_F_EXCL : kAck, seq);
  auto* ifa = put_extra<ifaddrmsg>(h);
  ifa->ifa_family = static_cast<uint8_t>(p.addr.family);
  ifa->ifa_prefixlen = static_cast<uint8_t>(p.len);
  ifa->ifa_index = static_cast<uint32_t>(ifindex);
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  mnl_attr_put(h, IFA_LOCAL, p.addr.size(), p.addr.bytes.data());
  mnl_attr_put(h, IFA_ADDRESS, p.addr.size(), p.addr.bytes.data());
  nl_finish(&b);
  return b;
}

NlMsg rtnl_dump_addrs(int family, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq);
  put_extra<ifaddrmsg>(h)->ifa_family = static_cast<uint8_t>(family);
  nl_finish(&b);
  return b;
}

NlMsg rtnl_route(bool add, int ifindex, const Prefix& p, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, add ? RTM_NEWROUTE : RTM_DELROUTE,
                          add ? kAck | NLM_F_CREATE | NLM_F_EXCL : kAck, seq);
  auto* rt = put_extra<rtmsg>(h);
  Prefix c = p.canonical();
  rt->rtm_family = static_cast<uint8_t>(c.addr.family);
  rt->rtm_dst_len = static_cast<uint8_t>(c.len);
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = kRouteProto;
  rt->rtm_scope = RT_SCOPE_LINK;
  rt->rtm_type = RTN_UNICAST;
  mnl_attr_put(h, RTA_DST, c.addr.size(), c.addr.bytes.data());
  mnl_attr_put_u32(h, RTA_OIF, static_cast<uint32_t>(ifindex));
  nl_finish(&b);
  return b;
}

NlMsg rtnl_dump_routes(int family, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
  put_extra<rtmsg>(h)->rtm_family = static_cast<uint8_t>(family);
  nl_finish(&b);
  return b;
}

std::optional<LinkInfo> rtnl_parse_link(const nlmsghdr* h) {
  if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg)))
    return std::nullopt;
  const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(h));
  LinkInfo li;
  li.ifindex = ifi->ifi_index;
  li.up = ifi->ifi_flags & IFF_UP;
  MESH_NL_ATTRS(a, h, sizeof(ifinfomsg)) {
    switch (mnl_attr_get_type(a)) {
      case IFLA_IFNAME:
        if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0) li.name = mnl_attr_get_str(a);
        break;
      case IFLA_MTU:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) li.mtu = static_cast<int>(mnl_attr_get_u32(a));
        break;
      case IFLA_LINKINFO: {
        MESH_NL_NESTED(n, a) {
          if (mnl_attr_get_type(n) == IFLA_INFO_KIND && mnl_attr_validate(n, MNL_TYPE_STRING) >= 0)
            li.kind.assign(static_cast<const char*>(mnl_attr_get_payload(n)),
                           strnlen(static_cast<const char*>(mnl_attr_get_payload(n)),
                                   mnl_attr_get_payload_len(n)));
        }
        break;
      }
    }
  }
  return li;
}

static bool get_ip(const nlattr* a, int family, IpAddr* out) {
  size_t want = family == AF_INET ? 4 : 16;
  if (mnl_attr_get_payload_len(a) != want) return false;
  out->family = family;
  out->bytes = {};
  std::memcpy(out->bytes.data(), mnl_attr_get_payload(a), want);
  return true;
}

std::optional<AddrEntry> rtnl_parse_addr(const nlmsghdr* h) {
  if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifaddrmsg)))
    return std::nullopt;
  const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(h));
  if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) return std::nullopt;
  AddrEntry e{static_cast<int>(ifa->ifa_index), Prefix{}};
  e.prefix.len = ifa->ifa_prefixlen;
  bool have_local = false, have_addr = false;
  IpAddr local, addr;
  MESH_NL_ATTRS(a, h, sizeof(ifaddrmsg)) {
    if (mnl_attr_get_type(a) == IFA_LOCAL) have_local = get_ip(a, ifa->ifa_family, &local);
    if (mnl_attr_get_type(a) == IFA_ADDRESS) have_addr = get_ip(a, ifa->ifa_family, &addr);
  }
  // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
  // point-to-point links); IPv6 only sends IFA_ADDRESS.
  if (have_local)
    e.prefix.addr = local;
  else if (have_addr)
    e.prefix.addr = addr;
  else
    return std::nullopt;
  return e;
}

std::optional<RouteEntry> rtnl_parse_route(const nlmsghdr* h) {
  if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg)))
    return std::nullopt;
  const auto* rt = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(h));
  if (rt->rtm_family != AF_INET && rt->rtm_family != AF_INET6) return std::nullopt;
  RouteEntry e{0, Prefix{}, rt->rtm_protocol, rt->rtm_table};
  e.prefix.addr.family = rt->rtm_family;
  e.prefix.len = rt->rtm_dst_len;
  MESH_NL_ATTRS(a, h, sizeof(rtmsg)) {
    switch (mnl_attr_get_type(a)) {
      case RTA_DST:
        if (!get_ip(a, rt->rtm_family, &e.prefix.addr)) return std::nullopt;
        break;
      case RTA_OIF:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) e.ifindex = static_cast<int>(mnl_attr_get_u32(a));
        break;
      case RTA_TABLE:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) e.table = mnl_attr_get_u32(a);
        break;
    }
  }
  return e;
}

Result<Rtnl> Rtnl::open() {
  MESH_ASSIGN(auto s, NlSocket::open(NETLINK_ROUTE));
  return Rtnl(std::move(s));
}

Result<std::optional<LinkInfo>> Rtnl::get_link(const std::string& name) {
  std::optional<LinkInfo> out;
  Status s = nl_.dump(rtnl_get_link(name, nl_.next_seq()), [&](const nlmsghdr* h) {
    out = rtnl_parse_link(h);
    return Status::ok();
  });
  if (!s) {
    if (s.code() == Exit::NoInput) return std::optional<LinkInfo>();  // ENODEV maps below
    if (s.message().find("No such device") != std::string::npos) return std::optional<LinkInfo>();
    return s.with_context("cannot read link " + name);
  }
  return out;
}

Result<std::vector<Prefix>> Rtnl::addresses(int ifindex) {
  std::vector<Prefix> out;
  MESH_TRY(nl_.dump(rtnl_dump_addrs(AF_UNSPEC, nl_.next_seq()), [&](const nlmsghdr* h) {
    auto e = rtnl_parse_addr(h);
    if (!e || e->ifindex != ifindex) return Status::ok();
    const auto& b = e->prefix.addr.bytes;
    if (!e->prefix.addr.is_v4() && b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return Status::ok();
    out.push_back(e->prefix);
    return Status::ok();
  }));
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<Prefix>> Rtnl::routes(int ifindex) {
  std::vector<Prefix> out;
  for (int fam : {AF_INET, AF_INET6}) {
    MESH_TRY(nl_.dump(rtnl_dump_routes(fam, nl_.next_seq()), [&](const nlmsghdr* h) {
      auto e = rtnl_parse_route(h);
      if (e && e->ifindex == ifindex && e->protocol == kRouteProto && e->table == RT_TABLE_MAIN)
        out.push_back(e->prefix);
      return Status::ok();
    }));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status Rtnl::create_link(const std::string& name, const std::string& kind) {
  return nl_.transact({rtnl_new_link(name, kind, nl_.next_seq())})
      .with_context("cannot create " + kind + " interface " + name);
}

Status Rtnl::delete_link(int ifindex) {
  return nl_.transact({rtnl_del_link(ifindex, nl_.next_seq())}, {ENODEV})
      .with_context("cannot delete interface");
}

Status Rtnl::set_link(int ifindex, std::optional<int> mtu, bool up) {
  return nl_.transact({rtnl_set_link(ifindex, mtu, up, nl_.next_seq())})
      .with_context("cannot set link MTU/up");
}

Status Rtnl::change_addresses(int ifindex, const std::vector<Prefix>& add,
                              const std::vector<Prefix>& del) {
  std::vector<NlMsg> msgs;
  for (const auto& p : del) msgs.push_back(rtnl_addr(false, ifindex, p, nl_.next_seq()));
  for (const auto& p : add) msgs.push_back(rtnl_addr(true, ifindex, p, nl_.next_seq()));
  if (msgs.empty()) return Status::ok();
  return nl_.transact(msgs, {EEXIST, EADDRNOTAVAIL}).with_context("cannot change addresses");
}

Status Rtnl::change_routes(int ifindex, const std::vector<Prefix>& add,
                           const std::vector<Prefix>& del) {
  std::vector<NlMsg> msgs;
  // Additions first: a route that is being narrowed or widened never leaves
  // a moment without a path.
  for (const auto& p : add) msgs.push_back(rtnl_route(true, ifindex, p, nl_.next_seq()));
  for (const auto& p : del) msgs.push_back(rtnl_route(false, ifindex, p, nl_.next_seq()));
  if (msgs.empty()) return Status::ok();
  return nl_.transact(msgs, {EEXIST, ESRCH}).with_context("cannot change routes");
}

}  // namespace mesh::apply
