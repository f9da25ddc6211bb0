// The WireGuard device as mesh-apply sees it, independent of the backend
// (kernel generic netlink or the wireguard-go UAPI socket): what a GET
// returns (DeviceState) and what a SET sends (DeviceUpdate). Both backends'
// codecs (uapi.h, wgnl.h) translate exactly these structures.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/key.h"
#include "core/net.h"

namespace mesh::apply {

struct PeerState {
  PublicKey public_key;
  std::optional<SecretKey> preshared_key;  // absent or all-zero: none
  std::optional<SockAddr> endpoint;
  int keepalive = 0;                       // seconds, 0 = off
  std::vector<Prefix> allowed_ips;         // canonical, sorted, unique (normalise())
  // Observed only (GET), never sent.
  int64_t last_handshake_sec = 0;
  int64_t last_handshake_nsec = 0;
  uint64_t rx_bytes = 0, tx_bytes = 0;
};

struct DeviceState {
  std::optional<SecretKey> private_key;  // absent: none configured
  uint16_t listen_port = 0;
  uint32_t fwmark = 0;
  std::vector<PeerState> peers;  // sorted by public key (normalise())
};

// Canonicalises allowed IPs, sorts them and the peers; drops a zero PSK.
void normalise(DeviceState* d);
void normalise(PeerState* p);
bool psk_equal(const std::optional<SecretKey>& a, const std::optional<SecretKey>& b);

// One peer in a SET. Fields left empty are not sent (the device keeps them).
struct PeerUpdate {
  PublicKey public_key;
  bool remove = false;
  bool update_only = false;               // fail-safe: never create when updating
  std::optional<SecretKey> preshared_key; // all-zero key clears it
  std::optional<SockAddr> endpoint;
  std::optional<int> keepalive;
  bool replace_allowed_ips = false;
  std::vector<Prefix> allowed_ips;        // added (after a replace: the full list)
};

struct DeviceUpdate {
  std::optional<SecretKey> private_key;
  std::optional<uint16_t> listen_port;
  std::optional<uint32_t> fwmark;  // 0 clears it
  bool replace_peers = false;
  std::vector<PeerUpdate> peers;
  bool empty() const { return !private_key && !listen_port && !fwmark && !replace_peers && peers.empty(); }
};

}  // namespace mesh::apply
