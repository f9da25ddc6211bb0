// WireGuard's generic netlink API (linux/wireguard.h): WG_CMD_GET_DEVICE
// dumps (a large device arrives as several messages, a peer's allowed IPs
// possibly split between two; wgnl_parse_get merges them) and
// WG_CMD_SET_DEVICE (a large update is split across messages the way
// wireguard-tools does: a peer that does not fit moves to the next message,
// and a peer whose allowed IPs overflow continues there with its public key
// and the remaining IPs only). Pure codecs; the kernel backend does the I/O.
#pragma once

#include <string>
#include <vector>

#include "apply/device.h"
#include "apply/netlink.h"

namespace mesh::apply {

inline constexpr size_t kWgMsgMax = 8192;  // per-message budget, as wireguard-tools

NlMsg genl_get_family(const std::string& name, uint32_t seq);
// CTRL_ATTR_FAMILY_ID of a CTRL_CMD_NEWFAMILY answer; 0 when absent.
uint16_t genl_parse_family_id(const nlmsghdr* h);

NlMsg wgnl_get_device(uint16_t family, const std::string& ifname, uint32_t seq);
// Merges one dump message into *d (call for each message, then normalise()).
Status wgnl_parse_get(const nlmsghdr* h, DeviceState* d);

// The SET messages for `u`, sequence numbers seq, seq+1, ...
Result<std::vector<NlMsg>> wgnl_set_device(uint16_t family, const std::string& ifname,
                                           const DeviceUpdate& u, uint32_t seq,
                                           size_t max_msg = kWgMsgMax);

}  // namespace mesh::apply
