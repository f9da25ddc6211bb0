// libFuzzer target: the TURN server's message handling (turn::Engine) on
// arbitrary datagrams from one UDP client, ChannelData framing included,
// after a real authenticated Allocate and a channel to a second allocation
// (turn_fixture.h), so the allocation-dependent paths (Refresh,
// CreatePermission, ChannelBind, Send, ChannelData routing, the internal hop
// between two relayed peers) are reachable too.
#include <cstddef>
#include <cstdint>

#include "turn_fixture.h"

using namespace mesh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::TurnFixture f(turn::ClientKey{*SockAddr::parse("198.51.100.5:4000"), 0, turn::kUdp});
  // As mesh-relay's UDP listener takes a datagram: ChannelData (RFC 8656
  // section 12.4) is parsed and routed, anything else is a STUN message.
  stun::Bytes pkt(data, size);
  if (stun::looks_like_channel_data(pkt)) {
    if (auto cd = stun::parse_channel_data(pkt)) {
      if (cd->data.data() != data + 4 || cd->data.size() > size - 4) __builtin_trap();
      f.eng.route_channel(f.client, cd->channel, cd->data.size(), f.now.mono_ms);
    }
  } else {
    f.eng.on_message(f.client, pkt, f.now);
  }
  f.finish(size);
  return 0;
}
