// rtnetlink for the mesh interface: links (create type wireguard, delete,
// MTU, up), addresses and routes. Routes mesh-apply installs carry their own
// routing protocol number (kRouteProto) so it only ever removes its own.
// Message builders and parsers are pure (unit-tested); Rtnl does the I/O.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "apply/netlink.h"
#include "core/net.h"

namespace mesh::apply {

// rtm_protocol of mesh-apply's routes ("proto 77" in `ip route`).
inline constexpr uint8_t kRouteProto = 77;

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  std::string kind;  // IFLA_INFO_KIND: "wireguard" (kernel), "tun" (wireguard-go), ...
  int mtu = 0;
  bool up = false;
};

// Builders. `seq` goes into the header; all request an ack except gets.
NlMsg rtnl_get_link(const std::string& name, uint32_t seq);
NlMsg rtnl_new_link(const std::string& name, const std::string& kind, uint32_t seq);
NlMsg rtnl_del_link(int ifindex, uint32_t seq);
NlMsg rtnl_set_link(int ifindex, std::optional<int> mtu, bool up, uint32_t seq);
NlMsg rtnl_addr(bool add, int ifindex, const Prefix& p, uint32_t seq);
NlMsg rtnl_dump_addrs(int family, uint32_t seq);
NlMsg rtnl_route(bool add, int ifindex, const Prefix& p, uint32_t seq);
NlMsg rtnl_dump_routes(int family, uint32_t seq);

// Parsers: nullopt when the message is not of the expected kind.
std::optional<LinkInfo> rtnl_parse_link(const nlmsghdr* h);
struct AddrEntry { int ifindex; Prefix prefix; };
std::optional<AddrEntry> rtnl_parse_addr(const nlmsghdr* h);
struct RouteEntry { int ifindex; Prefix prefix; uint8_t protocol; uint32_t table; };
std::optional<RouteEntry> rtnl_parse_route(const nlmsghdr* h);

class Rtnl {
 public:
  static Result<Rtnl> open();
  Result<std::optional<LinkInfo>> get_link(const std::string& name);
  // Addresses of ifindex, without IPv6 link-local ones. Sorted.
  Result<std::vector<Prefix>> addresses(int ifindex);
  // Routes in the main table via ifindex with protocol kRouteProto. Sorted.
  Result<std::vector<Prefix>> routes(int ifindex);
  Status create_link(const std::string& name, const std::string& kind);
  Status delete_link(int ifindex);
  Status set_link(int ifindex, std::optional<int> mtu, bool up);
  Status change_addresses(int ifindex, const std::vector<Prefix>& add, const std::vector<Prefix>& del);
  Status change_routes(int ifindex, const std::vector<Prefix>& add, const std::vector<Prefix>& del);

 private:
  explicit Rtnl(NlSocket s) : nl_(std::move(s)) {}
  NlSocket nl_;
};

}  // namespace mesh::apply
