// Unit tests for lib/punch and lib/rawsock: packet helpers, the BPF filters
// run by the real kernel (on an AF_UNIX socket pair: no privileges needed),
// NAT classification, the probe key, and a probe between two real loopback
// sockets.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "core/fd.h"
#include "netmap/endpoints.h"
#include "punch/discover.h"
#include "punch/probe.h"
#include "punch/transport.h"
#include "rawsock/rawsock.h"
#include "stun/stun.h"

namespace mesh {
namespace {

SockAddr sa(const char* s) { return *SockAddr::parse(s); }
IpAddr ip(const char* s) { return *IpAddr::parse(s); }

// An IPv4 header (with `opt_words` 4-byte option words) + UDP + payload.
std::vector<uint8_t> ipv4_udp(const SockAddr& src, const SockAddr& dst,
                              std::span<const uint8_t> payload, int opt_words = 0,
                              uint16_t frag = 0) {
  std::vector<uint8_t> udp(8 + payload.size());
  EXPECT_EQ(rawsock::build_udp(udp, src, dst, payload), udp.size());
  size_t ihl = 20 + 4 * static_cast<size_t>(opt_words);
  std::vector<uint8_t> p(ihl, 0);
  p[0] = static_cast<uint8_t>(0x40 | (ihl / 4));
  size_t total = ihl + udp.size();
  p[2] = static_cast<uint8_t>(total >> 8);
  p[3] = static_cast<uint8_t>(total);
  p[6] = static_cast<uint8_t>(frag >> 8);
  p[7] = static_cast<uint8_t>(frag);
  p[8] = 64;
  p[9] = IPPROTO_UDP;
  std::memcpy(&p[12], src.ip.bytes.data(), 4);
  std::memcpy(&p[16], dst.ip.bytes.data(), 4);
  for (size_t i = 20; i < ihl; ++i) p[i] = 1;  // NOP options
  p.insert(p.end(), udp.begin(), udp.end());
  return p;
}

std::vector<uint8_t> binding_request() {
  uint8_t buf[64];
  stun::Builder b(buf, stun::kBinding, stun::kRequest, stun::random_txid());
  auto out = b.finish();
  return {out.begin(), out.end()};
}

TEST(RawSock, UdpChecksumMatchesAKnownDatagram) {
  // 192.0.2.1:1000 -> 192.0.2.2:2000, payload "hi": computed by hand with
  // the RFC 1071 one's complement sum over pseudo-header and datagram.
  uint8_t payload[] = {'h', 'i'};
  std::vector<uint8_t> udp(10);
  ASSERT_EQ(rawsock::build_udp(udp, sa("192.0.2.1:1000"), sa("192.0.2.2:2000"), payload), 10u);
  // Pseudo header: c000+0201+c000+0202+0011+000a = 0x1841e;
  // UDP: 03e8+07d0+000a+0000+6869 = 0x742b -> 0x1841e+0x742b = 0x1f849
  // -> folded 0xf84a, complemented 0x07b5.
  EXPECT_EQ(udp[6], 0x07);
  EXPECT_EQ(udp[7], 0xb5);
  // Verifying: the sum including the checksum is 0xffff.
  EXPECT_EQ(rawsock::udp_checksum(ip("192.0.2.1"), ip("192.0.2.2"), udp), 0xffff);
}

TEST(RawSock, ParsesIpv4WithOptionsAndRejectsFragmentsAndGarbage) {
  auto req = binding_request();
  for (int opts : {0, 1, 10}) {
    auto p = ipv4_udp(sa("203.0.113.9:3478"), sa("198.51.100.2:51820"), req, opts);
    auto v = rawsock::parse_ipv4_udp(p);
    ASSERT_TRUE(v.is_ok()) << v.status().message();
    EXPECT_EQ(v->src, sa("203.0.113.9:3478"));
    EXPECT_EQ(v->dst, sa("198.51.100.2:51820"));
    EXPECT_TRUE(std::equal(v->payload.begin(), v->payload.end(), req.begin(), req.end()));
  }
  EXPECT_FALSE(rawsock::parse_ipv4_udp(
                   ipv4_udp(sa("203.0.113.9:3478"), sa("198.51.100.2:51820"), req, 0, 0x0010))
                   .is_ok());
  auto p = ipv4_udp(sa("203.0.113.9:3478"), sa("198.51.100.2:51820"), req);
  for (size_t n = 0; n < 28; ++n)
    EXPECT_FALSE(rawsock::parse_ipv4_udp(std::span(p.data(), n)).is_ok()) << n;
  p[9] = IPPROTO_TCP;
  EXPECT_FALSE(rawsock::parse_ipv4_udp(p).is_ok());
}

// Sends each packet through a SOCK_DGRAM socket pair whose receiving end
// carries the filter: the kernel's BPF interpreter/JIT decides.
std::vector<bool> kernel_filter(const std::vector<sock_filter>& prog,
                                const std::vector<std::vector<uint8_t>>& packets) {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  sock_fprog fp{static_cast<unsigned short>(prog.size()),
                const_cast<sock_filter*>(prog.data())};
  EXPECT_EQ(::setsockopt(b.get(), SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp), 0);
  std::vector<bool> passed;
  for (const auto& p : packets) {
    EXPECT_EQ(::send(a.get(), p.data(), p.size(), 0), static_cast<ssize_t>(p.size()));
    uint8_t buf[2048];
    ssize_t n = ::recv(b.get(), buf, sizeof buf, MSG_DONTWAIT);
    passed.push_back(n == static_cast<ssize_t>(p.size()));
  }
  return passed;
}

TEST(RawSock, Ipv4FilterMatchesPortAndCookieWhateverTheHeaderLength) {
  auto req = binding_request();
  std::vector<uint8_t> wg(32, 0);
  wg[0] = 1;  // a WireGuard handshake initiation: no cookie
  auto to = sa("198.51.100.2:51820"), from = sa("203.0.113.9:3478");
  std::vector<std::vector<uint8_t>> pkts = {
      ipv4_udp(from, to, req),                              // match
      ipv4_udp(from, to, req, 10),                          // match, 40 bytes of options
      ipv4_udp(from, sa("198.51.100.2:51821"), req),        // other port
      ipv4_udp(from, to, wg),                               // not STUN
      ipv4_udp(from, to, req, 0, 0x0020),                   // a later fragment
  };
  auto got = kernel_filter(rawsock::stun_filter_v4(51820), pkts);
  EXPECT_EQ(got, (std::vector<bool>{true, true, false, false, false}));
}

TEST(RawSock, Ipv6FilterLooksAtTheUdpHeader) {
  auto req = binding_request();
  std::vector<uint8_t> a(8 + req.size()), b(8 + req.size()), c(40);
  rawsock::build_udp(a, sa("[2001:db8::9]:3478"), sa("[2001:db8::2]:51820"), req);
  rawsock::build_udp(b, sa("[2001:db8::9]:3478"), sa("[2001:db8::2]:1"), req);
  std::vector<uint8_t> junk(32, 0x42);
  rawsock::build_udp(c, sa("[2001:db8::9]:3478"), sa("[2001:db8::2]:51820"), junk);
  auto got = kernel_filter(rawsock::stun_filter_v6(51820), {a, b, c});
  EXPECT_EQ(got, (std::vector<bool>{true, false, false}));
}

TEST(Punch, ClassifyMapping) {
  using O = punch::MappingObservation;
  std::vector<IpAddr> local = {ip("198.51.100.2")};
  auto s1 = sa("203.0.113.1:3478"), s1alt = sa("203.0.113.1:3479"), s2 = sa("203.0.113.2:3478");
  auto m = sa("203.0.113.6:51820"), m2 = sa("203.0.113.6:40000"), m3 = sa("203.0.113.6:40001");
  EXPECT_EQ(punch::classify_mapping({O{s1, m}, O{s2, m}}, local, 51820), "endpoint-independent");
  EXPECT_EQ(punch::classify_mapping({O{s1, m}}, local, 51820), "unknown");
  EXPECT_EQ(punch::classify_mapping({O{s1, m}, O{s1, m}}, local, 51820), "unknown");
  EXPECT_EQ(punch::classify_mapping({O{s1, m}, O{s2, m2}}, local, 51820), "address-dependent");
  EXPECT_EQ(punch::classify_mapping({O{s1, m}, O{s1alt, m}, O{s2, m2}}, local, 51820),
            "address-dependent");
  EXPECT_EQ(punch::classify_mapping({O{s1, m}, O{s1alt, m3}, O{s2, m2}}, local, 51820),
            "address-and-port-dependent");
  EXPECT_EQ(punch::classify_mapping({O{s1, sa("198.51.100.2:51820")}}, local, 51820), "none");
  // Same address but another port is a NAT (port translation), not "none".
  EXPECT_EQ(punch::classify_mapping({O{s1, sa("198.51.100.2:1")}, O{s2, sa("198.51.100.2:1")}},
                                    local, 51820),
            "endpoint-independent");
}

TEST(Punch, ResolveHostPort) {
  EXPECT_EQ(*punch::resolve_hostport("203.0.113.1:3478"), sa("203.0.113.1:3478"));
  EXPECT_EQ(*punch::resolve_hostport("[2001:db8::1]:3478"), sa("[2001:db8::1]:3478"));
  EXPECT_EQ(punch::resolve_hostport("localhost:3478")->port, 3478);
  for (const char* bad : {"203.0.113.1", "203.0.113.1:0", "203.0.113.1:65536", "host:", ":1",
                          "host:12x"})
    EXPECT_EQ(punch::resolve_hostport(bad).status().code(), Exit::DataErr) << bad;
}

TEST(Punch, ProbeKeyIsSharedByThePairAndUniqueToIt) {
  SecretKey a = SecretKey::generate_private(), b = SecretKey::generate_private(),
            c = SecretKey::generate_private();
  auto ab = punch::derive_probe_key(a, b.public_key());
  auto ba = punch::derive_probe_key(b, a.public_key());
  auto ac = punch::derive_probe_key(a, c.public_key());
  ASSERT_TRUE(ab && ba && ac);
  EXPECT_EQ(ab->bytes(), ba->bytes());
  EXPECT_NE(ab->bytes(), ac->bytes());
  // Not the raw X25519 secret: the KDF separates purposes.
  EXPECT_NE(ab->bytes(), a.shared_secret(b.public_key())->bytes());
  PublicKey zero{};
  EXPECT_FALSE(punch::derive_probe_key(a, zero).is_ok());  // low-order point
}

TEST(Punch, EndpointsDocumentStunResultsRoundTrip) {
  EndpointsDoc d;
  d.candidates.push_back({sa("203.0.113.6:51820"), "srflx"});
  d.nat = NatInfo{"endpoint-independent", "address-and-port-dependent"};
  StunResult r;
  r.server = "203.0.113.1:3478";
  r.mapped = sa("203.0.113.6:51820");
  r.other_address = sa("203.0.113.2:3479");
  r.rtt_ms = 0.5;
  StunResult r2;
  r2.server = "stun.example:3478";
  r2.error = "timeout";
  d.stun = {r, r2};
  auto j = endpoints_to_json(d);
  auto back = parse_endpoints(j, "test", ParseOptions{true});
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  ASSERT_EQ(back->stun.size(), 2u);
  EXPECT_EQ(back->stun[0].mapped, r.mapped);
  EXPECT_EQ(back->stun[0].other_address, r.other_address);
  EXPECT_EQ(back->stun[1].error, "timeout");
  EXPECT_FALSE(back->stun[1].mapped);
  j["stun"][0]["mapped"] = "nonsense";
  EXPECT_EQ(parse_endpoints(j, "test").status().code(), Exit::DataErr);
}

// Two real probers on loopback sockets, in two threads.
TEST(Punch, ProbeFindsAndConfirmsAPathOnLoopback) {
  auto ta = punch::open_ephemeral();
  auto tb = punch::open_ephemeral();
  ASSERT_TRUE(ta && tb);
  SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private();
  SockAddr aa{ip("127.0.0.1"), (*ta)->port()}, ab{ip("127.0.0.1"), (*tb)->port()};
  punch::ProbeOptions oa, ob;
  oa.peers = {{kb.public_key(), "b", {{ab, "host"}, {sa("127.0.0.1:9"), "srflx"}}}};
  ob.peers = {{ka.public_key(), "a", {{aa, "host"}}}};
  oa.timeout = ob.timeout = std::chrono::seconds(10);
  auto start = std::chrono::steady_clock::now();
  std::vector<SockAddr> seen_as;
  auto fa = std::async(std::launch::async, [&] { return punch::probe(**ta, ka, oa, nullptr, &seen_as); });
  auto fb = std::async(std::launch::async, [&] { return punch::probe(**tb, kb, ob); });
  auto ra = fa.get();
  auto rb = fb.get();
  ASSERT_TRUE(ra.is_ok() && rb.is_ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));  // stopped early
  EXPECT_EQ((*ra)[0].status, "direct");
  EXPECT_EQ((*ra)[0].endpoint, ab);
  EXPECT_EQ((*ra)[0].kind, "host");
  EXPECT_EQ((*rb)[0].endpoint, aa);
  EXPECT_GE((*rb)[0].rtt_ms, 0);
  EXPECT_EQ(seen_as, std::vector<SockAddr>{aa});  // b saw a's checks come from a's port, once
}

TEST(Punch, AMappingTheNatMovedBecomesAPeerReflexiveCandidate) {
  EndpointsDoc d;
  d.candidates = {{sa("198.51.100.11:51820"), "host"}, {sa("203.0.113.22:51820"), "srflx"}};
  punch::add_moved_mappings(&d, {sa("203.0.113.22:51820"),   // the mapping STUN saw
                                 sa("203.0.113.22:40001"),   // moved: a new candidate
                                 sa("203.0.113.22:40001"),   // once
                                 sa("203.0.113.1:50000"),    // a relay, not our NAT
                                 sa("198.51.100.11:51820")});  // our host address
  ASSERT_EQ(d.candidates.size(), 3u);
  EXPECT_EQ(d.candidates[2].endpoint, sa("203.0.113.22:40001"));
  EXPECT_EQ(d.candidates[2].kind, "prflx");
  // Without a server-reflexive candidate there is no NAT address to compare with.
  EndpointsDoc none;
  punch::add_moved_mappings(&none, {sa("203.0.113.22:40001")});
  EXPECT_TRUE(none.candidates.empty());
}

// A probe that settled keeps answering for its linger: a peer whose probe
// starts after it settled still gets answers (and reports the path direct);
// without the linger nobody answers it.
TEST(Punch, ProbeKeepsAnsweringDuringItsLinger) {
  for (int linger_ms : {1500, 0}) {
    auto ta = punch::open_ephemeral();
    auto tb = punch::open_ephemeral();
    ASSERT_TRUE(ta && tb);
    SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private();
    SockAddr aa{ip("127.0.0.1"), (*ta)->port()}, ab{ip("127.0.0.1"), (*tb)->port()};
    punch::ProbeOptions oa, ob;
    oa.peers = {{kb.public_key(), "b", {{ab, "host"}}}};
    ob.peers = {{ka.public_key(), "a", {{aa, "host"}}}};
    oa.timeout = ob.timeout = std::chrono::seconds(10);
    oa.linger = std::chrono::milliseconds(linger_ms);
    auto fa = std::async(std::launch::async, [&] { return punch::probe(**ta, ka, oa); });
    auto rb = punch::probe(**tb, kb, ob);  // settles with a
    ASSERT_TRUE(rb.is_ok());
    if (linger_ms == 0) {
      ASSERT_TRUE(fa.get().is_ok());  // a is gone
    }
    ob.timeout = std::chrono::milliseconds(800);
    auto late = punch::probe(**tb, kb, ob);  // b probes again
    ASSERT_TRUE(late.is_ok());
    EXPECT_EQ((*late)[0].status, linger_ms > 0 ? "direct" : "relay-needed") << linger_ms;
    if (linger_ms > 0) {
      ASSERT_TRUE(fa.get().is_ok());
    }
  }
}

// Neither side knows the other's candidates when it starts; a learns b's
// through refresh (as mesh-punch probe --follow does when the map file
// changes), and b finds a through a's checks (peer-reflexive).
TEST(Punch, ProbeTakesCandidatesThatArriveWhileItRuns) {
  auto ta = punch::open_ephemeral();
  auto tb = punch::open_ephemeral();
  ASSERT_TRUE(ta && tb);
  SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private();
  SockAddr aa{ip("127.0.0.1"), (*ta)->port()}, ab{ip("127.0.0.1"), (*tb)->port()};
  punch::ProbeOptions oa, ob;
  oa.peers = {{kb.public_key(), "b", {}}};
  ob.peers = {{ka.public_key(), "a", {}}};
  oa.timeout = ob.timeout = std::chrono::seconds(10);
  // No subnet of a's holds a host candidate of b's: no wait for a LAN path.
  oa.local_subnets = std::vector<Prefix>{*Prefix::parse("198.51.100.0/24")};
  std::atomic<int> polls{0};
  oa.refresh = [&]() -> std::vector<punch::ProbePeer> {
    // The "map" changes on the third poll; other peers are ignored.
    if (++polls != 3) return {};
    return {{SecretKey::generate_private().public_key(), "stranger", {{sa("127.0.0.1:9"), "host"}}},
            {kb.public_key(), "b", {{ab, "srflx"}}}};
  };
  auto start = std::chrono::steady_clock::now();
  auto fa = std::async(std::launch::async, [&] { return punch::probe(**ta, ka, oa); });
  auto fb = std::async(std::launch::async, [&] { return punch::probe(**tb, kb, ob); });
  auto ra = fa.get();
  auto rb = fb.get();
  ASSERT_TRUE(ra.is_ok() && rb.is_ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));  // stopped early
  EXPECT_GE(polls.load(), 3);
  EXPECT_EQ((*ra)[0].status, "direct");
  EXPECT_EQ((*ra)[0].endpoint, ab);
  EXPECT_EQ((*rb)[0].status, "direct");
  EXPECT_EQ((*rb)[0].endpoint, aa);
  EXPECT_EQ((*rb)[0].kind, "prflx");
}

// Stands in for a TURN allocation: what comes from b goes to a, anything
// else to b, all from its own socket.
class Forwarder {
 public:
  Forwarder(punch::Transport& t, SockAddr a, SockAddr b)
      : thread_([this, &t, a, b] {
          uint8_t buf[1500];
          while (!stop_) {
            auto got = t.recv(20, buf);
            if (!got || !*got) continue;
            (void)t.send((*got)->from == b ? a : b, {buf, (*got)->len});
          }
        }) {}
  ~Forwarder() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Two probers a and b on loopback, and f: a forwarder between them standing
// in for b's TURN allocation (b's "relay" candidate).
class RelayedProbe : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* t : {&ta, &tb, &tf}) {
      auto r = punch::open_ephemeral();
      ASSERT_TRUE(r.is_ok());
      *t = std::move(*r);
    }
    aa = {ip("127.0.0.1"), ta->port()};
    ab = {ip("127.0.0.1"), tb->port()};
    af = {ip("127.0.0.1"), tf->port()};
    forwarder = std::make_unique<Forwarder>(*tf, aa, ab);
    oa.local_subnets = std::vector<Prefix>{};
  }
  // Runs both probes at once; ra and rb get their results.
  void run() {
    auto fa = std::async(std::launch::async, [&] { return punch::probe(*ta, ka, oa); });
    auto fb = std::async(std::launch::async, [&] { return punch::probe(*tb, kb, ob); });
    auto a = fa.get();
    auto b = fb.get();
    forwarder->stop();
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    ra = std::move(*a);
    rb = std::move(*b);
  }

  std::unique_ptr<punch::Transport> ta, tb, tf;
  SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private();
  SockAddr aa, ab, af;
  std::unique_ptr<Forwarder> forwarder;
  punch::ProbeOptions oa, ob;
  std::vector<PeerPath> ra, rb;
};

// The relayed path answers first; b's direct address only arrives 300 ms
// later. The probe must not settle on the relay meanwhile.
TEST_F(RelayedProbe, WaitsForADirectPathBeforeSettlingOnARelayedOne) {
  oa.peers = {{kb.public_key(), "b", {{af, "relay"}}}};
  auto a_start = std::chrono::steady_clock::now();
  oa.refresh = [&]() -> std::vector<punch::ProbePeer> {
    if (std::chrono::steady_clock::now() - a_start < std::chrono::milliseconds(300)) return {};
    return {{kb.public_key(), "b", {{af, "relay"}, {ab, "srflx"}}}};
  };
  // b knows no candidate of a's (it answers what comes), and also probes a
  // peer that never answers, so it keeps answering a's checks.
  ob.peers = {{ka.public_key(), "a", {}},
              {SecretKey::generate_private().public_key(), "gone", {{sa("127.0.0.1:9"), "host"}}}};
  oa.timeout = std::chrono::seconds(5);
  ob.timeout = std::chrono::milliseconds(1500);
  ASSERT_NO_FATAL_FAILURE(run());
  EXPECT_EQ(ra[0].status, "direct");
  EXPECT_EQ(ra[0].kind, "srflx");
  EXPECT_EQ(ra[0].endpoint, ab);
  EXPECT_EQ(rb[0].status, "direct");
  EXPECT_EQ(rb[1].status, "relay-needed");
}

// With nothing better, a relayed path is still the answer (as kind relay).
TEST_F(RelayedProbe, ReportsARelayedPathWhenNoDirectOneAnswers) {
  oa.peers = {{kb.public_key(), "b", {{af, "relay"}, {sa("127.0.0.1:9"), "srflx"}}}};
  ob.peers = {{ka.public_key(), "a", {}}};
  oa.timeout = ob.timeout = std::chrono::seconds(5);
  ASSERT_NO_FATAL_FAILURE(run());
  EXPECT_EQ(ra[0].status, "direct");
  EXPECT_EQ(ra[0].kind, "relay");
  EXPECT_EQ(ra[0].endpoint, af);
}

// The relayed path is settled on only relayed_settle after the opening
// window: a wide window (a peer that starts late) still gets its full-TTL
// checks before the probe gives up on a direct path.
TEST_F(RelayedProbe, SettlesOnTheRelayOnlyAfterTheOpeningWindow) {
  oa.peers = {{kb.public_key(), "b", {{af, "relay"}, {sa("127.0.0.1:9"), "srflx"}}}};
  ob.peers = {{ka.public_key(), "a", {}}};
  oa.timeout = ob.timeout = std::chrono::seconds(5);
  oa.open_window = std::chrono::milliseconds(700);
  auto start = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(run());
  EXPECT_EQ(ra[0].kind, "relay");
  EXPECT_GE(std::chrono::steady_clock::now() - start, oa.open_window + oa.relayed_settle);
}

// Lingering, a probe still checks back where a new check came from: a
// settles on the relay with b's first probe (which knows no candidate of
// a's), b probes again with a's address (its opening window ended later,
// say), and a reports the path b's check showed, not the relay.
TEST_F(RelayedProbe, ALingeringProbeChecksBackAndTakesTheLatePath) {
  oa.peers = {{kb.public_key(), "b", {{af, "relay"}, {sa("127.0.0.1:9"), "srflx"}}}};
  oa.open_window = std::chrono::milliseconds(100);
  oa.linger = std::chrono::milliseconds(2500);
  oa.timeout = std::chrono::seconds(6);
  ob.peers = {{ka.public_key(), "a", {}}};
  ob.timeout = std::chrono::milliseconds(1300);
  auto fa = std::async(std::launch::async, [&] { return punch::probe(*ta, ka, oa); });
  auto b1 = punch::probe(*tb, kb, ob);  // a settles on the relay at ~1.1 s
  ob.peers = {{ka.public_key(), "a", {{aa, "host"}}}};
  ob.timeout = std::chrono::milliseconds(1000);
  auto b2 = punch::probe(*tb, kb, ob);
  auto a = fa.get();
  forwarder->stop();
  ASSERT_TRUE(a.is_ok() && b1.is_ok() && b2.is_ok());
  EXPECT_EQ((*b2)[0].endpoint, aa);
  EXPECT_EQ((*a)[0].status, "direct");
  EXPECT_EQ((*a)[0].endpoint, ab);
}

// L10: a check the peer's key authenticates is still refused when it is
// stale (no MESH-TIME, or an old one) or replayed (a transaction id the
// probe already took, here sent again from another address): a replay must
// not make a answer it, nor add the replayer as a candidate to check.
TEST(Punch, ProbeIgnoresStaleAndReplayedChecks) {
  auto ta = punch::open_ephemeral();
  auto tx = punch::open_ephemeral();  // where b's fresh check comes from
  auto ty = punch::open_ephemeral();  // the replayer
  ASSERT_TRUE(ta && tx && ty);
  SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private();
  SockAddr aa{ip("127.0.0.1"), (*ta)->port()};
  punch::ProbeOptions oa;
  oa.peers = {{kb.public_key(), "b", {}}};
  oa.timeout = std::chrono::milliseconds(900);
  auto key = punch::derive_probe_key(kb, ka.public_key());
  ASSERT_TRUE(key);
  std::string user = ka.public_key().to_base64() + ":" + kb.public_key().to_base64();
  auto check = [&](stun::TxId id, std::optional<int64_t> at_ms) {
    static uint8_t out[512];
    stun::Builder b(out, stun::kBinding, stun::kRequest, id);
    b.add_string(stun::kUsername, user);
    std::array<uint8_t, 8> t{};
    for (int i = 7, v = 0; at_ms && i >= 0; --i, ++v) t[i] = static_cast<uint8_t>(*at_ms >> (8 * v));
    if (at_ms) b.add(punch::kMeshTimeAttr, t);
    b.add_integrity_sha256({key->bytes().data(), key->bytes().size()}).add_fingerprint();
    auto f = b.finish();
    return std::vector<uint8_t>(f.begin(), f.end());
  };
  int64_t now_ms = oa.wall_ms();
  stun::TxId fresh = stun::random_txid(), untimed = stun::random_txid(), old = stun::random_txid();
  auto fa = std::async(std::launch::async, [&] { return punch::probe(**ta, ka, oa); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE((*tx)->send(aa, check(fresh, now_ms)));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE((*ty)->send(aa, check(fresh, now_ms)));  // the same check, replayed
  ASSERT_TRUE((*ty)->send(aa, check(untimed, std::nullopt)));
  ASSERT_TRUE((*ty)->send(aa, check(old, now_ms - 600000)));
  auto answered = [&](punch::Transport& t) {
    std::vector<stun::TxId> ids;
    uint8_t buf[1500];
    for (auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
         std::chrono::steady_clock::now() < end;) {
      auto r = t.recv(50, buf);
      if (!r || !*r) continue;
      auto m = stun::parse({buf, (*r)->len});
      if (m) ids.push_back(m->tx);
    }
    return ids;
  };
  auto fy = std::async(std::launch::async, [&] { return answered(**ty); });
  auto got_x = answered(**tx);
  auto got_y = fy.get();
  ASSERT_TRUE(fa.get().is_ok());
  // x (where the fresh check came from) got its answer and a's own checks.
  EXPECT_NE(std::find(got_x.begin(), got_x.end(), fresh), got_x.end());
  // y got nothing: no answer to any of its checks, no check of a's.
  EXPECT_TRUE(got_y.empty()) << got_y.size() << " packets reached the replayer";
}

TEST(Punch, ProbeIgnoresAPeerWithTheWrongKey) {
  auto ta = punch::open_ephemeral();
  auto tb = punch::open_ephemeral();
  ASSERT_TRUE(ta && tb);
  SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private(),
            mallory = SecretKey::generate_private();
  SockAddr aa{ip("127.0.0.1"), (*ta)->port()}, ab{ip("127.0.0.1"), (*tb)->port()};
  punch::ProbeOptions oa, ob;
  oa.peers = {{kb.public_key(), "b", {{ab, "host"}}}};
  ob.peers = {{ka.public_key(), "a", {{aa, "host"}}}};
  oa.timeout = ob.timeout = std::chrono::milliseconds(600);
  // b runs with mallory's key while claiming to be b: a must not accept it.
  auto fa = std::async(std::launch::async, [&] { return punch::probe(**ta, ka, oa); });
  auto fb = std::async(std::launch::async, [&] { return punch::probe(**tb, mallory, ob); });
  auto ra = fa.get();
  auto rb = fb.get();
  ASSERT_TRUE(ra.is_ok() && rb.is_ok());
  EXPECT_EQ((*ra)[0].status, "relay-needed");
  EXPECT_EQ((*rb)[0].status, "relay-needed");
}

// Records what a probe sends (where, with which TTL, when) and receives
// only what `inbox` holds, each datagram once its time has come: the opening
// phase, without a network.
class RecordingTransport : public punch::Transport {
 public:
  using Clock = std::chrono::steady_clock;
  struct Sent {
    SockAddr to;
    int ttl;
    Clock::time_point at;
  };
  struct Incoming {
    Clock::time_point at;
    SockAddr from;
    std::vector<uint8_t> data;
  };
  Status send(const SockAddr& to, std::span<const uint8_t>, int ttl) override {
    sent.push_back({to, ttl, Clock::now()});
    return Status::ok();
  }
  Result<std::optional<punch::Received>> recv(int timeout_ms, std::span<uint8_t> buf) override {
    auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);
    if (!inbox.empty() && inbox.front().at < until) until = inbox.front().at;
    std::this_thread::sleep_until(until);
    if (inbox.empty() || inbox.front().at > Clock::now()) return std::optional<punch::Received>{};
    Incoming in = std::move(inbox.front());
    inbox.erase(inbox.begin());
    std::copy(in.data.begin(), in.data.end(), buf.begin());
    return std::optional<punch::Received>{punch::Received{in.from, in.data.size()}};
  }
  std::vector<int> fds() const override { return {}; }
  std::string mode() const override { return "test"; }
  uint16_t port() const override { return 51820; }
  std::vector<Sent> sent;
  std::vector<Incoming> inbox;  // in time order
};

// A check straight from the peer ends its opening window (one interval
// later): it left through the peer's NAT, which now maps it towards us. One
// through the relay (from our relay client, on loopback) does not: the peer's
// probe may not know our candidates yet.
TEST(Punch, ACheckStraightFromThePeerEndsItsOpeningWindow) {
  using Clock = RecordingTransport::Clock;
  const SockAddr srflx = sa("203.0.113.9:51820");
  SecretKey ka = SecretKey::generate_private(), kb = SecretKey::generate_private();
  auto key = punch::derive_probe_key(kb, ka.public_key());
  ASSERT_TRUE(key);
  auto check = [&] {
    uint8_t out[512];
    stun::Builder b(out, stun::kBinding, stun::kRequest, stun::random_txid());
    b.add_string(stun::kUsername, ka.public_key().to_base64() + ":" + kb.public_key().to_base64());
    std::array<uint8_t, 8> t{};
    const int64_t now_ms = punch::ProbeOptions{}.wall_ms();
    for (int i = 7, shift = 0; i >= 0; --i, shift += 8) t[i] = static_cast<uint8_t>(now_ms >> shift);
    b.add(punch::kMeshTimeAttr, t);
    b.add_integrity_sha256({key->bytes().data(), key->bytes().size()}).add_fingerprint();
    auto f = b.finish();
    return std::vector<uint8_t>(f.begin(), f.end());
  };
  RecordingTransport tr;
  punch::ProbeOptions o;
  o.peers = {{kb.public_key(), "b", {{srflx, "srflx"}}}};
  o.timeout = std::chrono::milliseconds(900);
  o.open_window = std::chrono::seconds(5);
  auto start = Clock::now();
  const auto relayed_at = start + std::chrono::milliseconds(200);
  const auto straight_at = start + std::chrono::milliseconds(500);
  tr.inbox.push_back({relayed_at, sa("127.0.0.1:40000"), check()});
  tr.inbox.push_back({straight_at, sa("198.51.100.7:40000"), check()});
  ASSERT_TRUE(punch::probe(tr, ka, o).is_ok());
  int early_full = 0, late_full = 0, late_opening = 0;
  for (const auto& s : tr.sent) {
    if (s.to != srflx) continue;
    if (s.at < straight_at) early_full += s.ttl == 0;
    else if (s.at >= straight_at + o.interval) (s.ttl == 0 ? late_full : late_opening)++;
  }
  EXPECT_EQ(early_full, 0);   // opening packets only, the relayed check notwithstanding
  EXPECT_GT(late_full, 0);    // full-TTL checks once b was heard straight, long before 5 s
  EXPECT_EQ(late_opening, 0);
}

// Behind a NAT, short-TTL opening packets go to a server-reflexive candidate
// from the start; with no NAT (a public address) nothing goes there until
// the opening window ends (a TTL-2 packet would reach a NAT two hops away),
// and host candidates are checked at once either way.
TEST(Punch, ProbeWithoutANatSendsNoOpeningPackets) {
  const SockAddr host = sa("198.51.100.9:51820"), srflx = sa("203.0.113.9:51820");
  for (bool behind_nat : {true, false}) {
    RecordingTransport t;
    punch::ProbeOptions o;
    o.peers = {{SecretKey::generate_private().public_key(), "b", {{host, "host"}, {srflx, "srflx"}}}};
    o.timeout = std::chrono::milliseconds(500);
    o.open_window = std::chrono::milliseconds(250);
    o.behind_nat = behind_nat;
    auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(punch::probe(t, SecretKey::generate_private(), o).is_ok());
    std::optional<RecordingTransport::Sent> first_host, first_srflx;
    for (const auto& s : t.sent) {
      if (s.to == host && !first_host) first_host = s;
      if (s.to == srflx && !first_srflx) first_srflx = s;
    }
    ASSERT_TRUE(first_host && first_srflx) << behind_nat;
    EXPECT_EQ(first_host->ttl, 0);
    EXPECT_LT(first_host->at - start, std::chrono::milliseconds(100));
    if (behind_nat) {
      EXPECT_EQ(first_srflx->ttl, o.open_ttl);
      EXPECT_LT(first_srflx->at - start, std::chrono::milliseconds(100));
    } else {
      EXPECT_EQ(first_srflx->ttl, 0);
      EXPECT_GE(first_srflx->at - start, o.open_window);
    }
  }
}

}  // namespace
}  // namespace mesh
