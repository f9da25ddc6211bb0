// libFuzzer target: TURN over TCP (RFC 8656 section 12.5), the byte stream
// one client sends on a connection: stun::next_stream_frame() cuts it into
// STUN messages and padded ChannelData frames exactly as mesh-relay's TCP/TLS
// listener does, and each frame goes to turn::Engine as that listener passes
// it, after a real authenticated Allocate over the same connection and a
// channel bound to a second allocation (turn_fixture.h: so ChannelData is
// routed, not dropped). Invariants: no crash, leak or UB; every frame lies
// inside the stream, is at least its header and moves the cursor forward; a
// ChannelData frame's data ends before its padding, which is less than 4.
#include <cstddef>
#include <cstdint>

#include "turn_fixture.h"

using namespace mesh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::TurnFixture f(turn::ClientKey{*SockAddr::parse("198.51.100.5:4000"), 7, turn::kTcp});
  size_t off = 0;
  for (;;) {
    auto fr = stun::next_stream_frame(stun::Bytes(data + off, size - off));
    using K = stun::StreamFrame::Kind;
    if (fr.kind == K::Incomplete || fr.kind == K::Invalid) break;
    if (fr.size < 4 || fr.size > size - off || fr.length > fr.size) __builtin_trap();
    const uint8_t* p = data + off;
    if (fr.kind == K::ChannelData) {
      if (fr.size - fr.length > 3) __builtin_trap();
      uint16_t ch = static_cast<uint16_t>(p[0] << 8 | p[1]);
      f.eng.route_channel(f.client, ch, fr.length - 4, f.now.mono_ms);
    } else {
      if (fr.size != fr.length || fr.size < 20) __builtin_trap();
      f.eng.on_message(f.client, stun::Bytes(p, fr.size), f.now);
    }
    off += fr.size;
  }
  f.finish(size);
  return 0;
}
