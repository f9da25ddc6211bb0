#include "apply/wgnl.h"

#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/wireguard.h>
#include <netinet/in.h>

#include <cstring>

namespace mesh::apply {
namespace {

nlmsghdr* genl_start(NlMsg* b, uint16_t family, uint8_t cmd, uint16_t flags, uint32_t seq,
                     size_t cap) {
  auto* h = nl_put_header(b, family, flags, seq, cap);
  auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(h, sizeof(genlmsghdr)));
  g->cmd = cmd;
  g->version = WG_GENL_VERSION;
  return h;
}

bool put_endpoint(nlmsghdr* h, size_t cap, const SockAddr& ep) {
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(&ss);
  return mnl_attr_put_check(h, cap, WGPEER_A_ENDPOINT, len, &ss);
}

bool put_allowed_ip(nlmsghdr* h, size_t cap, uint16_t index, const Prefix& p) {
  nlattr* n = mnl_attr_nest_start_check(h, cap, index);
  if (!n) return false;
  if (!mnl_attr_put_u16_check(h, cap, WGALLOWEDIP_A_FAMILY, static_cast<uint16_t>(p.addr.family)) ||
      !mnl_attr_put_check(h, cap, WGALLOWEDIP_A_IPADDR, p.addr.size(), p.addr.bytes.data()) ||
      !mnl_attr_put_u8_check(h, cap, WGALLOWEDIP_A_CIDR_MASK, static_cast<uint8_t>(p.len))) {
    mnl_attr_nest_cancel(h, n);
    return false;
  }
  mnl_attr_nest_end(h, n);
  return true;
}

}  // namespace

NlMsg genl_get_family(const std::string& name, uint32_t seq) {
  NlMsg b;
  auto* h = nl_put_header(&b, GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq);
  auto* g = static_cast<genlmsghdr*>(mnl_nlmsg_put_extra_header(h, sizeof(genlmsghdr)));
  g->cmd = CTRL_CMD_GETFAMILY;
  g->version = 1;
  mnl_attr_put_strz(h, CTRL_ATTR_FAMILY_NAME, name.c_str());
  nl_finish(&b);
  return b;
}

uint16_t genl_parse_family_id(const nlmsghdr* h) {
  if (h->nlmsg_type != GENL_ID_CTRL) return 0;
  MESH_NL_ATTRS(a, h, sizeof(genlmsghdr)) {
    if (mnl_attr_get_type(a) == CTRL_ATTR_FAMILY_ID && mnl_attr_validate(a, MNL_TYPE_U16) >= 0)
      return mnl_attr_get_u16(a);
  }
  return 0;
}

NlMsg wgnl_get_device(uint16_t family, const std::string& ifname, uint32_t seq) {
  NlMsg b;
  auto* h = genl_start(&b, family, WG_CMD_GET_DEVICE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq,
                       256);
  mnl_attr_put_strz(h, WGDEVICE_A_IFNAME, ifname.c_str());
  nl_finish(&b);
  return b;
}

static Status parse_ip(const nlattr* n, Prefix* out) {
  int family = 0;
  const nlattr* ip = nullptr;
  int cidr = -1;
  MESH_NL_NESTED(a, n) {
    switch (mnl_attr_get_type(a)) {
      case WGALLOWEDIP_A_FAMILY:
        if (mnl_attr_validate(a, MNL_TYPE_U16) >= 0) family = mnl_attr_get_u16(a);
        break;
      case WGALLOWEDIP_A_IPADDR: ip = a; break;
      case WGALLOWEDIP_A_CIDR_MASK:
        if (mnl_attr_validate(a, MNL_TYPE_U8) >= 0) cidr = mnl_attr_get_u8(a);
        break;
    }
  }
  if ((family != AF_INET && family != AF_INET6) || !ip || cidr < 0)
    return data_error("wireguard netlink: incomplete allowed IP");
  size_t want = family == AF_INET ? 4 : 16;
  if (mnl_attr_get_payload_len(ip) != want || cidr > static_cast<int>(want * 8))
    return data_error("wireguard netlink: bad allowed IP");
  out->addr.family = family;
  out->addr.bytes = {};
  std::memcpy(out->addr.bytes.data(), mnl_attr_get_payload(ip), want);
  out->len = cidr;
  return Status::ok();
}

static Status parse_peer(const nlattr* n, DeviceState* d) {
  PeerState p;
  bool have_key = false;
  MESH_NL_NESTED(a, n) {
    uint16_t t = mnl_attr_get_type(a);
    uint16_t len = mnl_attr_get_payload_len(a);
    const void* pl = mnl_attr_get_payload(a);
    switch (t) {
      case WGPEER_A_PUBLIC_KEY:
        if (len != kKeyLen) return data_error("wireguard netlink: bad peer public key");
        std::memcpy(p.public_key.bytes.data(), pl, kKeyLen);
        have_key = true;
        break;
      case WGPEER_A_PRESHARED_KEY: {
        if (len != kKeyLen) return data_error("wireguard netlink: bad preshared key");
        std::array<uint8_t, kKeyLen> k{};
        std::memcpy(k.data(), pl, kKeyLen);
        p.preshared_key = SecretKey(k);
        break;
      }
      case WGPEER_A_ENDPOINT:
        if (len == sizeof(sockaddr_in) || len == sizeof(sockaddr_in6)) {
          sockaddr_storage ss{};
          std::memcpy(&ss, pl, len);
          if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
            p.endpoint = SockAddr::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
        }
        break;
      case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
        if (mnl_attr_validate(a, MNL_TYPE_U16) >= 0) p.keepalive = mnl_attr_get_u16(a);
        break;
      case WGPEER_A_LAST_HANDSHAKE_TIME:
        if (len == 16) {
          int64_t ts[2];
          std::memcpy(ts, pl, 16);
          p.last_handshake_sec = ts[0];
          p.last_handshake_nsec = ts[1];
        }
        break;
      case WGPEER_A_RX_BYTES:
        if (mnl_attr_validate(a, MNL_TYPE_U64) >= 0) p.rx_bytes = mnl_attr_get_u64(a);
        break;
      case WGPEER_A_TX_BYTES:
        if (mnl_attr_validate(a, MNL_TYPE_U64) >= 0) p.tx_bytes = mnl_attr_get_u64(a);
        break;
      case WGPEER_A_ALLOWEDIPS: {
        MESH_NL_NESTED(ipn, a) {
          Prefix pr;
          MESH_TRY(parse_ip(ipn, &pr));
          p.allowed_ips.push_back(pr);
        }
        break;
      }
    }
  }
  if (!have_key) return data_error("wireguard netlink: peer without public key");
  // A peer continued from the previous message: same key, more allowed IPs.
  if (!d->peers.empty() && d->peers.back().public_key == p.public_key) {
    auto& back = d->peers.back();
    back.allowed_ips.insert(back.allowed_ips.end(), p.allowed_ips.begin(), p.allowed_ips.end());
    return Status::ok();
  }
  d->peers.push_back(std::move(p));
  return Status::ok();
}

Status wgnl_parse_get(const nlmsghdr* h, DeviceState* d) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(genlmsghdr)))
    return data_error("wireguard netlink: short message");
  MESH_NL_ATTRS(a, h, sizeof(genlmsghdr)) {
    uint16_t t = mnl_attr_get_type(a);
    switch (t) {
      case WGDEVICE_A_PRIVATE_KEY:
        if (mnl_attr_get_payload_len(a) == kKeyLen) {
          std::array<uint8_t, kKeyLen> k{};
          std::memcpy(k.data(), mnl_attr_get_payload(a), kKeyLen);
          d->private_key = SecretKey(k);
          std::memset(k.data(), 0, k.size());
        }
        break;
      case WGDEVICE_A_LISTEN_PORT:
        if (mnl_attr_validate(a, MNL_TYPE_U16) >= 0) d->listen_port = mnl_attr_get_u16(a);
        break;
      case WGDEVICE_A_FWMARK:
        if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0) d->fwmark = mnl_attr_get_u32(a);
        break;
      case WGDEVICE_A_PEERS: {
        MESH_NL_NESTED(p, a) MESH_TRY(parse_peer(p, d));
        break;
      }
    }
  }
  return Status::ok();
}

Result<std::vector<NlMsg>> wgnl_set_device(uint16_t family, const std::string& ifname,
                                           const DeviceUpdate& u, uint32_t seq, size_t max_msg) {
  std::vector<NlMsg> out;
  NlMsg b;
  nlmsghdr* h = nullptr;
  nlattr* peers = nullptr;
  bool peers_in_msg = false;
  auto start = [&](bool first) {
    h = genl_start(&b, family, WG_CMD_SET_DEVICE, NLM_F_REQUEST | NLM_F_ACK, seq++, max_msg);
    mnl_attr_put_strz(h, WGDEVICE_A_IFNAME, ifname.c_str());
    if (first) {
      if (u.private_key)
        mnl_attr_put(h, WGDEVICE_A_PRIVATE_KEY, kKeyLen, u.private_key->bytes().data());
      if (u.listen_port) mnl_attr_put_u16(h, WGDEVICE_A_LISTEN_PORT, *u.listen_port);
      if (u.fwmark) mnl_attr_put_u32(h, WGDEVICE_A_FWMARK, *u.fwmark);
      if (u.replace_peers) mnl_attr_put_u32(h, WGDEVICE_A_FLAGS, WGDEVICE_F_REPLACE_PEERS);
    }
    peers = mnl_attr_nest_start(h, WGDEVICE_A_PEERS);
    peers_in_msg = false;
  };
  auto flush = [&] {
    if (peers_in_msg)
      mnl_attr_nest_end(h, peers);
    else
      mnl_attr_nest_cancel(h, peers);
    nl_finish(&b);
    out.push_back(std::move(b));
    b = NlMsg();
  };
  start(true);
  uint16_t peer_index = 0;
  for (const auto& p : u.peers) {
    size_t next_ip = 0;
    bool first_part = true;
    for (int attempts = 0;; ++attempts) {
      if (attempts > 2 && !peers_in_msg && next_ip == 0 && first_part)
        return internal_error("wireguard netlink: a peer does not fit in one message");
      nlattr* pn = mnl_attr_nest_start_check(h, max_msg, peer_index);
      bool ok = pn && mnl_attr_put_check(h, max_msg, WGPEER_A_PUBLIC_KEY, kKeyLen, p.public_key.bytes.data());
      if (ok && first_part) {
        uint32_t flags = (p.remove ? WGPEER_F_REMOVE_ME : 0) |
                         (p.replace_allowed_ips ? WGPEER_F_REPLACE_ALLOWEDIPS : 0) |
                         (p.update_only ? WGPEER_F_UPDATE_ONLY : 0);
        if (flags) ok = mnl_attr_put_u32_check(h, max_msg, WGPEER_A_FLAGS, flags);
        if (ok && p.preshared_key)
          ok = mnl_attr_put_check(h, max_msg, WGPEER_A_PRESHARED_KEY, kKeyLen, p.preshared_key->bytes().data());
        if (ok && p.endpoint) ok = put_endpoint(h, max_msg, *p.endpoint);
        if (ok && p.keepalive)
          ok = mnl_attr_put_u16_check(h, max_msg, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                                      static_cast<uint16_t>(*p.keepalive));
      }
      if (!ok) {  // the peer's header does not fit: next message
        if (pn) mnl_attr_nest_cancel(h, pn);
        flush();
        start(false);
        peer_index = 0;
        continue;
      }
      bool done = true;
      if (!p.remove && next_ip < p.allowed_ips.size()) {
        nlattr* ips = mnl_attr_nest_start_check(h, max_msg, WGPEER_A_ALLOWEDIPS);
        size_t before = next_ip;
        if (ips) {
          uint16_t ip_index = 0;
          while (next_ip < p.allowed_ips.size() &&
                 put_allowed_ip(h, max_msg, ip_index, p.allowed_ips[next_ip])) {
            ++next_ip;
            ++ip_index;
          }
          if (next_ip > before)
            mnl_attr_nest_end(h, ips);
          else
            mnl_attr_nest_cancel(h, ips);
        }
        done = next_ip == p.allowed_ips.size();
        if (!done && next_ip == before && !first_part && !peers_in_msg) 
          return internal_error("wireguard netlink: message budget too small");
        if (next_ip == before && first_part && p.replace_allowed_ips && peers_in_msg) {
          // Keep the replace flag and the first IPs together: move the whole
          // peer to a fresh message.
          mnl_attr_nest_cancel(h, pn);
          flush();
          start(false);
          peer_index = 0;
          continue;
        }
      }
      mnl_attr_nest_end(h, pn);
      peers_in_msg = true;
      ++peer_index;
      first_part = false;
      if (done) break;
      flush();
      start(false);
      peer_index = 0;
    }
  }
  flush();
  return out;
}

}  // namespace mesh::apply
