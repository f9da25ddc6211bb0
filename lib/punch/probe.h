// Authenticated hole punching from port P (ICE-like connectivity checks).
//
// Wire format: standard STUN (RFC 8489), so the raw-socket BPF filter on port
// P and the STUN magic cookie catches probes while WireGuard owns the port
// (wireguard-go and the kernel drop them as invalid WireGuard messages).
//   request:  Binding request, USERNAME "<receiver key>:<sender key>" (base64
//             WireGuard public keys, as ICE's "RFRAG:LFRAG"), USE-CANDIDATE
//             once the sender has a confirmed path to the receiver,
//             MESSAGE-INTEGRITY-SHA256, FINGERPRINT.
//   response: Binding success with XOR-MAPPED-ADDRESS (where the request came
//             from), MESSAGE-INTEGRITY-SHA256, FINGERPRINT; the transaction
//             id matches a request we sent.
// The integrity key is derive_probe_key(): BLAKE2b-256 keyed with the X25519
// shared secret of the two WireGuard keys over a label and both public keys,
// so only the two peers can make or answer a probe; a forged or replayed
// response cannot match a fresh transaction id, so nobody can redirect a path.
// Requests carry MESH-TIME (kMeshTimeAttr: the sender's wall clock, unix ms,
// 8 bytes big-endian) under the integrity, and a request without it, more
// than kProbeMaxSkew from our clock, or with a transaction id this probe
// already took is ignored: a captured request replayed later, or from
// another address, neither adds a peer-reflexive candidate (checks aimed
// where the replayer chose) nor counts as the peer's USE-CANDIDATE.
//
// Schedule (all from port P):
//   t = 0: checks to host candidates (full TTL); short-TTL "opening" requests
//          to server-reflexive/peer-reflexive candidates: they create our own
//          NAT's mapping towards the peer but expire before the peer's NAT,
//          so a router without an input firewall does not create a conntrack
//          entry that would collide with the mapping the peer needs (nothing
//          to them when we have no NAT: ProbeOptions::behind_nat);
//   t >= open_window: full-TTL checks to every candidate, every `interval`
//          (for a peer, from one interval after a check of its arrived
//          straight, not through a relay: its NAT maps it towards us).
// A request from an address we had not checked triggers a check to it
// (peer-reflexive candidate). A peer is "confirmed" when one of our checks was
// answered (we heard them) and they sent USE-CANDIDATE (they heard us); probe
// returns early when every peer is confirmed. Path choice: host, then srflx,
// then prflx, then the relayed paths (a prflx on loopback: the peer reached us
// through our own relay client; then the peer's relay candidate); within a
// kind the lowest RTT.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/key.h"
#include "core/log.h"
#include "netmap/endpoints.h"
#include "punch/transport.h"

namespace mesh::punch {

inline constexpr uint16_t kMeshTimeAttr = 0xC06D;  // comprehension-optional range
inline constexpr std::chrono::milliseconds kProbeMaxSkew{30000};

// The per-pair probe key (both peers derive the same one).
Result<SecretKey> derive_probe_key(const SecretKey& own_private, const PublicKey& peer);

struct ProbePeer {
  PublicKey public_key;
  std::string name;
  std::vector<Candidate> candidates;
};

struct ProbeOptions {
  std::vector<ProbePeer> peers;
  std::chrono::milliseconds timeout{5000};
  std::chrono::milliseconds open_window{150};
  std::chrono::milliseconds interval{50};
  // A non-host path is only settled on this long after the start, so a
  // same-LAN host path (checked from t = 0) can still win.
  std::chrono::milliseconds settle{200};
  // This node's subnets (local_subnets()). When given, the wait above only
  // applies to a peer with a host candidate inside one of them: a peer whose
  // host candidates are all off our links cannot have a same-LAN path.
  std::optional<std::vector<Prefix>> local_subnets;
  // A relayed path (through the peer's allocation, or through our own relay
  // client: a peer-reflexive candidate on loopback) is only settled on this
  // long after the opening window, so a direct path found later still wins.
  std::chrono::milliseconds relayed_settle{1000};
  // After every peer is settled, keep answering the peers' checks this long
  // (sending only triggered checks, back to where a new one came from): a
  // peer whose probe started later, or whose opening window is longer, still
  // gets its answers, and so a path of its own, and the path is ours too.
  std::chrono::milliseconds linger{0};
  int open_ttl = 2;  // 0: no opening packets
  // False when this node has no NAT (STUN saw its own address, mapping
  // "none"): there is no mapping to open, and a short-TTL packet would reach
  // a peer's NAT two hops away itself, so nothing is sent to non-host
  // candidates during the opening window.
  bool behind_nat = true;
  // Optional: polled about every `interval`; returns the peers' current
  // candidates when they changed (an empty vector: no change). Candidates
  // new to a peer of `peers` join the checks with an opening window of their
  // own; peers not in `peers` are ignored. mesh-punch probe --follow re-reads
  // the map file with it, so a probe that started before the peer announced
  // its candidates still reaches it.
  std::function<std::vector<ProbePeer>()> refresh;
  std::function<std::chrono::steady_clock::time_point()> now = [] {
    return std::chrono::steady_clock::now();
  };
  // Wall clock in unix milliseconds, for MESH-TIME.
  std::function<int64_t()> wall_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
};

// A NAT router without an input firewall that took a peer's check for
// itself (a conntrack entry on our mapped port) gives our flow to that peer
// another port, and Linux reuses the newest mapping of a source for its next
// flows: peers then see us on a port that no STUN answer showed. Each address
// of seen_as on the public IP of one of doc's srflx candidates but on another
// port is added to doc's candidates as prflx (once); others are ignored.
void add_moved_mappings(EndpointsDoc* doc, const std::vector<SockAddr>& seen_as);

// Runs the checks and returns one PeerPath per peer, in input order:
// "direct" with endpoint/kind/rtt_ms, or "relay-needed". When seen_as is
// given, it receives (once each) the addresses our answered checks reached
// the peers from (their XOR-MAPPED-ADDRESS): our NAT's mappings towards them.
Result<std::vector<PeerPath>> probe(Transport& t, const SecretKey& own_private,
                                    const ProbeOptions& opt, Log* log = nullptr,
                                    std::vector<SockAddr>* seen_as = nullptr);

}  // namespace mesh::punch
