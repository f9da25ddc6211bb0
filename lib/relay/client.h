// mesh-relay's client side: one TURN allocation (on mesh-relay or coturn)
// carrying WireGuard to the peers that need a relay. See mesh-relay(1),
// section CLIENT.
//
// For each relayed peer the client opens a UDP port on loopback that
// WireGuard uses as the peer's endpoint. Datagrams WireGuard sends there go
// out through a TURN channel bound to the peer's address (its relayed
// address when it is relayed too, else its best candidate); datagrams the
// relay delivers from any of a peer's addresses (ChannelData or Data
// indications) are sent to WireGuard from that peer's local port. The
// client keeps permissions for every candidate address of every peer in the
// map, so peers that are not relayed themselves can reach us on our
// relayed address too. Allocation, permissions and channels are refreshed
// before they expire; a relay that stops answering or forgets us (437) is
// re-allocated on a fresh socket, and the endpoints document is rewritten
// with the new relayed address.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/key.h"
#include "core/log.h"
#include "core/net.h"
#include "core/status.h"
#include "netmap/endpoints.h"
#include "netmap/netmap.h"

namespace mesh::relay {

struct ClientOptions {
  std::string map_path;       // a file (re-read on change and SIGHUP) or "-": JSON lines on stdin
  std::string endpoints_out;  // endpoints document (man/mesh-endpoints.5), rewritten atomically
  std::string peers_from;     // mesh-punch's endpoints document: relay only "relay-needed" peers
  std::optional<PublicKey> self_key;  // must match the map's self.public_key
  // The key file self_key came from: read again when a map names another
  // self key (the node rotated its key, mesh-coord rotate-key).
  std::string self_key_file;
  uint16_t wg_port = 0;               // 0: the map's self.listen_port
  IpAddr local_ip = IpAddr::v4(0x7F000001);
  int keepalive_s = 25;               // Refresh interval (also how fast a dead relay is noticed)
  int socket_buffer = 4 << 20;
  // TURN over TLS (a map "turn" entry with transport "tls"): the server's
  // certificate must chain to these CA certificates (PEM file; empty: the
  // system's) and name the server as the map gives it (DNS name, or IP
  // address in a subjectAltName); tls_verify false skips the check.
  std::string tls_ca;
  bool tls_verify = true;
  // Called with each new endpoints document, and the same as one JSON line.
  std::function<void(const EndpointsDoc&, const std::string&)> on_endpoints;
};

// Runs until SIGTERM/SIGINT. Fails early with DataErr (bad map), NoInput
// (missing map), Config (no WireGuard port, key mismatch).
Status run_client(const ClientOptions& opt, Log& log);

// One-shot check: Allocate on `server` (HOST:PORT, UDP) with the given
// credentials (empty username: unauthenticated), optionally create a
// permission and channel toward `peer`, then release the allocation.
struct CheckResult {
  bool ok = false;
  int error_code = 0;  // STUN error when !ok (401, 403, 486...)
  std::string reason;
  SockAddr relayed, mapped;
  uint32_t lifetime = 0;
  std::string software;
};
Result<CheckResult> check_allocate(const std::string& server, const std::string& username,
                                   const std::string& password, const std::optional<SockAddr>& peer,
                                   int timeout_ms, int hold_ms = 0);

// Resolves "HOST:PORT" (a literal address or a DNS name) to one address.
Result<SockAddr> resolve_hostport(const std::string& text);

}  // namespace mesh::relay
