// Shared by the TURN fuzz targets (turn_fuzz, turn_stream_fuzz): a
// turn::Engine with no sockets behind it, and on it, for the client the
// target speaks as, a real authenticated Allocate, plus a second allocation
// with a channel from the first to it and a permission back, so the
// allocation-dependent paths (Refresh, CreatePermission, ChannelBind, Send,
// ChannelData routing, the internal hop between two relayed peers) are
// reachable from the first input byte.
#pragma once

#include <cstdint>
#include <memory>

#include "stun/stun.h"
#include "turn/server.h"

namespace mesh::fuzz {

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

inline turn::Shared& shared_config() {
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
  return *shared;
}

struct TurnFixture {
  NullIo io;
  turn::Stats stats;
  turn::Shared& shared = shared_config();
  turn::Engine eng{shared, io, stats};
  turn::ClientKey client;
  turn::ClientKey other{*SockAddr::parse("198.51.100.6:4000"), 0, turn::kUdp};
  turn::Now now{1000, 1700000000};

  explicit TurnFixture(turn::ClientKey c) : client(c) {
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
  }

  // After the input: `len` bytes from a peer, expiry of everything, teardown.
  void finish(size_t len) {
    if (auto* a = eng.find(client)) eng.on_peer_data(*a, *SockAddr::parse("203.0.113.9:1"), len, now.mono_ms);
    eng.expire(now.mono_ms + 4000 * 1000);
    eng.clear();
  }

  template <typename Fill>
  void request(const turn::ClientKey& from, uint16_t method, Fill fill) {
    uint8_t buf[512];
    stun::Builder b(buf, method, stun::kRequest, stun::random_txid());
    fill(b);
    b.add_string(stun::kUsername, "alice").add_string(stun::kRealm, "mesh");
    b.add_string(stun::kNonce, shared.nonces().make(now.unix_s, 600, turn::nonce_binding(from)));
    b.add_integrity(stun::long_term_key("alice", "mesh", "pw"));
    eng.on_message(from, b.finish(), now);
  }
};

}  // namespace mesh::fuzz
