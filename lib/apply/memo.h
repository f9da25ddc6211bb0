// The memo: what the last successful run of mesh-apply left, recorded in
// /run/mesh-apply/IF.state (mode 0600, digests only, no secrets):
//  - a digest of its inputs (the exact bytes of the map, key and endpoints
//    documents plus the options) and of the interface state that run left
//    (WireGuard configuration without counters and handshake times, link,
//    addresses, routes, firewall digest);
//  - a snapshot of the WireGuard configuration it left (peers' keys,
//    endpoints, keepalives, allowed IPs; digests of the private and
//    preshared keys), the interface index and the time the device was last
//    read in full ("verified").
// Two fast paths use it:
//  - no-op: identical inputs and the identical state mean diff() is empty,
//    so the map is not parsed again;
//  - trusted snapshot: reading the device back (a UAPI/netlink dump of every
//    peer) is what a 5,000-peer run spends its time on. Within the
//    verification interval (MESH_APPLY_VERIFY_INTERVAL, default 60 s) of a
//    full read, on the very same interface (same index, same backend), the
//    snapshot stands in for that dump; link, addresses, routes and the
//    firewall are still observed every time. The cost: a change made to the
//    WireGuard device behind mesh-apply's back (`wg set`) is repaired at the
//    next full read, not at once. --verify (or an interval of 0) reads the
//    device every time. A run that fails midway removes the memo first, so
//    a snapshot never describes a half-applied state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sodium.h>

#include "apply/plan.h"
#include "core/fd.h"
#include "core/file.h"

namespace mesh::apply {

class InputDigest {
 public:
  InputDigest();
  void add(std::string_view label, std::string_view bytes);
  std::string hex();  // finalises (64 hex digits)

 private:
  crypto_generichash_blake2b_state* st();
  std::vector<unsigned char> state_;  // over-allocated: the state is aligned in it
};

// Digest of the state diff() compares (volatile fields excluded).
std::string state_digest(const Current& c);
// Digest of the non-WireGuard part: link, addresses, routes, firewall.
std::string link_digest(const Current& c);
// A short one-way digest of a key (hex), for the snapshot.
std::string key_digest(const SecretKey& k);

// The state a successful apply of `want` leaves (endpoints resolved as
// diff() does, the listen port kept when the map has none).
Current expected_state(const Desired& want, const Current& before);

// The WireGuard configuration a run left, without secrets.
struct SnapshotPeer {
  PublicKey public_key;
  std::string psk;  // key_digest() of the preshared key, empty: none
  std::optional<SockAddr> endpoint;
  int keepalive = 0;
  std::vector<Prefix> allowed_ips;
};
struct Snapshot {
  std::string private_key;  // key_digest(), empty: none
  uint16_t listen_port = 0;
  uint32_t fwmark = 0;
  std::vector<SnapshotPeer> peers;  // sorted by public key
};

Snapshot snapshot_of(const DeviceState& d);
// The device the snapshot describes. Keys come from `want` where their
// digests match; a preshared or private key that does not match gets a
// random stand-in, so diff() sets the wanted one.
DeviceState device_from_snapshot(const Snapshot& s, const Desired& want);
// The same, moving the peers' allowed IPs out of `s`.
DeviceState device_from_snapshot(Snapshot&& s, const Desired& want);

struct Memo {
  std::string inputs;
  std::string state;
  size_t peers = 0;
  std::string link;          // link_digest()
  int ifindex = 0;           // the interface the snapshot belongs to
  std::string backend;       // "userspace" or "kernel"
  int64_t verified_at = 0;   // unix seconds of the last full read of the device
  std::string device_text;   // serialised Snapshot (parse_snapshot); empty: none
  // hosts_digest() of the hosts file block the run left (hosts.h); empty:
  // the hosts file is not managed.
  std::string hosts;
};

// A digest of a hosts file block's text ("" included: no block).
std::string hosts_digest(std::string_view block);

std::string serialise_snapshot(const Snapshot& s);
// serialise_snapshot(snapshot_of(d)), without the intermediate copy.
std::string serialise_snapshot(const DeviceState& d);
Result<Snapshot> parse_snapshot(std::string_view text);

// Whether `m`'s snapshot may stand in for reading the device: same
// interface index and backend, and read in full less than `interval`
// seconds before `now` (interval <= 0: never).
bool snapshot_trusted(const Memo& m, const std::string& backend, int ifindex, int64_t now,
                      int64_t interval);

std::string memo_path(const std::string& dir, const std::string& interface);
std::optional<Memo> load_memo(const std::string& path);
// Best effort: failures only cost the fast path next time.
void store_memo(const std::string& dir, const std::string& interface, const Memo& m);
// store_memo() in two steps: the file written while the run goes on (it
// stays invisible, see PendingFile), and put in place with
// commit(memo_path(dir, interface)) once everything it describes is done.
Result<PendingFile> prepare_memo(const std::string& dir, const Memo& m);
void remove_memo(const std::string& dir, const std::string& interface);

// Serialises runs on one interface (cron and mesh-up at once): an exclusive
// flock(2) on DIR/IF.lock, held until the returned fd closes. Invalid fd
// when the lock cannot be set up (unprivileged runs, which fail later).
UniqueFd lock_interface(const std::string& dir, const std::string& interface);

}  // namespace mesh::apply
