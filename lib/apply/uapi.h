// The WireGuard cross-platform userspace API (UAPI), as served by
// wireguard-go on /var/run/wireguard/IF.sock (https://www.wireguard.com/xplatform/).
// Text protocol: a request "get=1\n\n" or "set=1\n" + key=value lines + "\n";
// every response ends with "errno=N\n\n". Keys are lower-case hex on the wire.
// Pure codecs over strings; the socket client is in userspace.h.
#pragma once

#include <string>
#include <string_view>

#include "apply/device.h"
#include "core/status.h"

namespace mesh::apply {

// "set=1\n...\n\n" for `u`. Peers are written in the order given.
std::string uapi_encode_set(const DeviceUpdate& u);
// Its parts, for a SET written while it is computed: "set=1\n" and the
// device lines of `u` (not its peers, no terminating blank line), and the
// lines of one peer. uapi_encode_set(u) is the first, then each peer's,
// then "\n".
std::string uapi_encode_device(const DeviceUpdate& u);
void uapi_append_peer(std::string* out, const PeerUpdate& p);

// Parses a complete GET response (key=value lines ending with errno=0 and a
// blank line). errno != 0 -> IoErr naming it; malformed -> DataErr. The
// result is normalised.
Result<DeviceState> uapi_parse_get(std::string_view text);

// Parses the "errno=N\n\n" a SET answers; returns N (DataErr if malformed).
Result<int> uapi_parse_errno(std::string_view text);

// True when `buf` holds a complete response (ends with "\n\n").
bool uapi_response_complete(std::string_view buf);

}  // namespace mesh::apply
