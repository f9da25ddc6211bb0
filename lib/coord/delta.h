// Map deltas of the watch protocol (man/mesh-netmap.5, Deltas): a watcher
// that holds the map of serial S gets, instead of the whole next map, its
// members other than peers and the edits that turn S's peers[] into the new
// one. A change that reaches every map (a join into a group everyone sees)
// then costs each watcher one peer entry, not the ~300 of its map.
//
// The server keeps, per watching peer, what the last map it sent held
// (SentPeers: each entry's peer id and version, 8 bytes an entry); a delta is
// made only against that exact serial, so either end that lost track (a
// restart, another replica, a lost answer) gets or asks for the whole map.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

// A peers[] entry as sent: the peer's id and the version of what the entry
// shows. kResend marks an entry that is sent again in every delta (a version
// past 32 bits, or an entry whose routes depend on the viewer).
struct SentEntry {
  uint32_t id = 0;
  uint32_t version = 0;
};
inline constexpr uint32_t kResend = 0;

// The peers[] of the map of `serial` sent to one peer, in map order (by id).
struct SentPeers {
  uint64_t serial = 0;
  std::vector<SentEntry> entries;
};

// The edits from `old` to `now` (both sorted by id): indices into `old` of
// the entries that go, and indices into `now` of the entries that are sent.
// An entry whose version differs (or is kResend) goes and is sent again.
struct PeerEdits {
  std::vector<uint32_t> removed, inserted;
};
PeerEdits diff_peers(std::span<const SentEntry> old, std::span<const SentEntry> now);

// The last SentPeers per watching peer, behind 64 locks (watchers of
// different peers rarely meet).
class SentMaps {
 public:
  SentMaps();
  // A copy of what was last sent to `id` when it is the map of `serial`.
  std::optional<SentPeers> get(uint32_t id, uint64_t serial) const;
  void put(uint32_t id, SentPeers s);
  void erase(uint32_t id);
  void clear();
  size_t size() const;

 private:
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint32_t, SentPeers> by_id;
  };
  static constexpr size_t kShards = 64;
  std::unique_ptr<Shard[]> shards_;
  Shard& shard(uint32_t id) const { return shards_[id % kShards]; }
};

// The watcher's side: the map `base` (a parsed map of serial B) and a delta
// whose peer_changes.base is B give the new map, the same JSON tree the
// coordinator would have sent whole. A delta that does not fit `base` (other
// base serial, an index out of range, a count that does not add up) is a
// DataErr; the watcher then asks for the whole map.
Result<Json> apply_delta(const Json& base, const Json& delta, std::string_view source);

}  // namespace mesh::coord
