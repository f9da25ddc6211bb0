// The no-op fast path. After every successful run mesh-apply records, in
// /run/mesh-apply/IF.state, a digest of its inputs (the exact bytes of the
// map, key and endpoints documents plus the options) and a digest of the
// interface state that run left behind (WireGuard configuration without
// counters and handshake times, link, addresses, routes, firewall digest).
// When the next run sees identical inputs AND observes that identical
// state, diff() would be empty, so it reports "no change" without parsing
// the map again. Any difference (a roamed endpoint, a hand edit, a new map)
// falls back to the full path, so the memo can only save work, never hide a
// change. The file holds digests only, no secrets.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "apply/plan.h"
#include "core/fd.h"

namespace mesh::apply {

class InputDigest {
 public:
  InputDigest();
  void add(std::string_view label, std::string_view bytes);
  std::string hex();  // finalises

 private:
  std::vector<unsigned char> state_;
};

// Digest of the state diff() compares (volatile fields excluded).
std::string state_digest(const Current& c);

// The state a successful apply of `want` leaves (endpoints resolved as
// diff() does, the listen port kept when the map has none).
Current expected_state(const Desired& want, const Current& before);

struct Memo {
  std::string inputs;
  std::string state;
  size_t peers = 0;
};

std::string memo_path(const std::string& dir, const std::string& interface);
std::optional<Memo> load_memo(const std::string& path);
// Best effort: failures only cost the fast path next time.
void store_memo(const std::string& dir, const std::string& interface, const Memo& m);
void remove_memo(const std::string& dir, const std::string& interface);

// Serialises runs on one interface (cron and mesh-up at once): an exclusive
// flock(2) on DIR/IF.lock, held until the returned fd closes. Invalid fd
// when the lock cannot be set up (unprivileged runs, which fail later).
UniqueFd lock_interface(const std::string& dir, const std::string& interface);

}  // namespace mesh::apply
