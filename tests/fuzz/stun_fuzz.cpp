// libFuzzer target: the STUN codec (stun::parse, the address and error-code
// decoders, integrity checks, ChannelData framing) and the raw-socket IPv4/UDP
// parser mesh-punch runs on every packet the BPF filter lets through.
// Invariants checked: no crash/UB (ASan+UBSan), a parsed message's attributes
// lie inside the input, and a re-built copy of what parsed parses again.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "rawsock/rawsock.h"
#include "stun/stun.h"

using namespace mesh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  stun::Bytes in(data, size);
  (void)stun::looks_like_stun(in);
  if (auto m = stun::parse(in)) {
    for (const auto& a : m->attributes()) {
      if (a.value.data() < data || a.value.data() + a.value.size() > data + size) std::abort();
      (void)stun::decode_address(a);
      (void)stun::decode_xor_address(a, m->tx);
      (void)stun::decode_u32(a);
      (void)stun::decode_error_code(a);
    }
    static const uint8_t key[] = {'k', 'e', 'y'};
    (void)stun::check_integrity(*m, key);
    (void)stun::check_integrity_sha256(*m, key);
    // Round trip: the attributes re-encoded (before any integrity) parse.
    uint8_t out[2048];
    stun::Builder b(out, m->method, m->cls, m->tx);
    for (const auto& a : m->attributes())
      if (a.type != stun::kMessageIntegrity && a.type != stun::kMessageIntegritySha256 &&
          a.type != stun::kFingerprint)
        b.add(a.type, a.value);
    b.add_fingerprint();
    if (b.ok() && !stun::parse(b.finish()).is_ok()) std::abort();
  }
  if (auto c = stun::parse_channel_data(in)) {
    if (c->data.data() + c->data.size() > data + size) std::abort();
  }
  (void)stun::channel_data_stream_size(in);
  if (auto u = rawsock::parse_ipv4_udp(in)) {
    if (u->payload.data() + u->payload.size() > data + size) std::abort();
    (void)stun::parse(u->payload);
  }
  return 0;
}
