// libFuzzer target: the netlink reply parsers of mesh-apply (WireGuard
// generic netlink, the genl family lookup, rtnetlink links, addresses and
// routes, and the nftables table digest) over arbitrary message bytes (the
// length field is clamped to the input, as the socket layer guarantees).
#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "apply/nft.h"
#include "apply/rtnl.h"
#include "apply/wgnl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < sizeof(nlmsghdr) + 4) return 0;
  std::vector<uint8_t> buf(data, data + size);
  buf.resize((size + 3) & ~size_t{3});
  auto* h = reinterpret_cast<nlmsghdr*>(buf.data());
  h->nlmsg_len = static_cast<uint32_t>(size);
  mesh::apply::DeviceState d;
  (void)mesh::apply::wgnl_parse_get(h, &d);
  (void)mesh::apply::genl_parse_family_id(h);
  (void)mesh::apply::rtnl_parse_link(h);
  (void)mesh::apply::rtnl_parse_addr(h);
  (void)mesh::apply::rtnl_parse_route(h);
  if (auto d = mesh::apply::nft_parse_table_digest(h)) {
    if (d->size() != 64) __builtin_trap();
  }
  return 0;
}
