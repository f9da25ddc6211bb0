// libFuzzer target: the TURN server's message handling (turn::Engine) on
// arbitrary datagrams from one client, after a real authenticated Allocate so
// the allocation-dependent paths (Refresh, CreatePermission, ChannelBind,
// Send, ChannelData routing) are reachable too. A second allocation on the
// same engine, with a channel from the first to it and a permission back,
// makes the internal hop (both peers relayed) reachable as well.
#include <cstdint>
#include <cstring>
#include <memory>

#include "stun/stun.h"
#include "turn/server.h"

using namespace mesh;

namespace {
struct NullIo : turn::Io {
  int n = 0;
  Result<turn::RelaySocket> open_relay(int, bool, turn::Allocation*) override {
    ++n;
    return turn::RelaySocket{n, SockAddr{*IpAddr::parse("203.0.113.1"), static_cast<uint16_t>(50000 + n % 1000)}};
  }
  void close_relay(turn::RelaySocket& s) override { s.fd = -1; }
  void reply(const turn::ClientKey&, stun::Bytes, uint32_t) override {}
  void send_to_peer(const turn::RelaySocket&, const SockAddr&, stun::Bytes) override {}
  void deliver(turn::Allocation&, const SockAddr&, int, stun::Bytes) override {}
  bool origin(const turn::ClientKey&, uint32_t c, Origin*) override { return c == 0; }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static NullIo io;
  static turn::Stats stats;
  static std::unique_ptr<turn::Shared> shared = [] {
    turn::Config cfg;
    cfg.relay_ips = {*IpAddr::parse("203.0.113.1")};
    cfg.deny_peers = turn::default_denied_peers();
    auto c = std::make_unique<turn::Credentials>();
    c->set_realm("mesh");
    c->add_user("alice", stun::long_term_key("alice", "mesh", "pw"));
    c->add_secret("s");
    return std::make_unique<turn::Shared>(cfg, std::move(c));
  }();
  turn::Engine eng(*shared, io, stats);
  turn::ClientKey client{*SockAddr::parse("198.51.100.5:4000"), 0, turn::kUdp};
  turn::ClientKey other{*SockAddr::parse("198.51.100.6:4000"), 0, turn::kUdp};
  turn::Now now{1000, 1700000000};
  uint8_t buf[512];
  auto request = [&](const turn::ClientKey& from, uint16_t method, auto fill) {
    stun::Builder b(buf, method, stun::kRequest, stun::random_txid());
    fill(b);
    b.add_string(stun::kUsername, "alice").add_string(stun::kRealm, "mesh");
    b.add_string(stun::kNonce, shared->nonces().make(now.unix_s, 600, turn::nonce_binding(from)));
    b.add_integrity(stun::long_term_key("alice", "mesh", "pw"));
    eng.on_message(from, b.finish(), now);
  };
  auto udp = [](stun::Builder& b) {
    uint8_t rt[4] = {17, 0, 0, 0};
    b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
  };
  request(client, stun::kAllocate, udp);
  request(other, stun::kAllocate, udp);
  turn::Allocation* a = eng.find(client);
  turn::Allocation* o = eng.find(other);
  if (a && o) {
    SockAddr ra = a->relay.addr, ro = o->relay.addr;
    request(client, stun::kChannelBind, [&](stun::Builder& b) {
      b.add_u32(stun::kChannelNumber, 0x40000000u);
      b.add_xor_address(stun::kXorPeerAddress, ro);
    });
    request(other, stun::kCreatePermission,
            [&](stun::Builder& b) { b.add_xor_address(stun::kXorPeerAddress, ra); });
  }

  stun::Bytes pkt(data, size);
  if (size >= 4 && (data[0] & 0xC0) == 0x40) {
    uint16_t ch = static_cast<uint16_t>(data[0] << 8 | data[1]);
    eng.route_channel(client, ch, size - 4, now.mono_ms);
  } else {
    eng.on_message(client, pkt, now);
  }
  if (auto* a = eng.find(client)) eng.on_peer_data(*a, *SockAddr::parse("203.0.113.9:1"), size, now.mono_ms);
  eng.expire(now.mono_ms + 4000 * 1000);
  eng.clear();
  return 0;
}
