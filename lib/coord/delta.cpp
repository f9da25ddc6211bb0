#include "coord/delta.h"

#include <nlohmann/json.hpp>

namespace mesh::coord {

PeerEdits diff_peers(std::span<const SentEntry> old, std::span<const SentEntry> now) {
  PeerEdits e;
  size_t i = 0, j = 0;
  while (i < old.size() || j < now.size()) {
    if (j == now.size() || (i < old.size() && old[i].id < now[j].id)) {
      e.removed.push_back(uint32_t(i++));
    } else if (i == old.size() || now[j].id < old[i].id) {
      e.inserted.push_back(uint32_t(j++));
    } else {
      if (now[j].version == kResend || now[j].version != old[i].version) {
        e.removed.push_back(uint32_t(i));
        e.inserted.push_back(uint32_t(j));
      }
      ++i, ++j;
    }
  }
  return e;
}

SentMaps::SentMaps() : shards_(std::make_unique<Shard[]>(kShards)) {}

std::optional<SentPeers> SentMaps::get(uint32_t id, uint64_t serial) const {
  Shard& s = shard(id);
  std::lock_guard lk(s.mu);
  auto it = s.by_id.find(id);
  if (it == s.by_id.end() || it->second.serial != serial) return std::nullopt;
  return it->second;
}

void SentMaps::put(uint32_t id, SentPeers p) {
  Shard& s = shard(id);
  std::lock_guard lk(s.mu);
  s.by_id[id] = std::move(p);
}

void SentMaps::erase(uint32_t id) {
  Shard& s = shard(id);
  std::lock_guard lk(s.mu);
  s.by_id.erase(id);
}

void SentMaps::clear() {
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard lk(shards_[i].mu);
    shards_[i].by_id.clear();
  }
}

size_t SentMaps::size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard lk(shards_[i].mu);
    n += shards_[i].by_id.size();
  }
  return n;
}

namespace {

// Indices of an edit list: ascending and below `bound`.
Result<std::vector<uint64_t>> indices(const JsonView& list, uint64_t bound) {
  MESH_ASSIGN(auto els, list.elements());
  std::vector<uint64_t> out;
  out.reserve(els.size());
  for (const auto& e : els) {
    MESH_ASSIGN(uint64_t i, e.as_uint());
    if (i >= bound) return e.error("index " + std::to_string(i) + " out of range");
    if (!out.empty() && i <= out.back()) return e.error("indices must ascend");
    out.push_back(i);
  }
  return out;
}

}  // namespace

Result<Json> apply_delta(const Json& base, const Json& delta, std::string_view source) {
  JsonView d(delta, std::string(source));
  if (!delta.is_object()) return d.error("expected an object");
  MESH_ASSIGN(auto ch, d.field("peer_changes"));
  MESH_ASSIGN(int64_t from, ch.get_int("base", 1));
  MESH_ASSIGN(int64_t count, ch.get_int("count", 0, 1 << 24));
  if (!base.is_object() || !base.contains("serial") || !base["serial"].is_number_integer() ||
      base["serial"].get<uint64_t>() != uint64_t(from))
    return ch.error("base: this watcher does not hold the map of serial " + std::to_string(from));
  const Json* old = base.contains("peers") ? &base["peers"] : nullptr;
  size_t n_old = old && old->is_array() ? old->size() : 0;
  MESH_ASSIGN(auto removed_v, ch.field("removed"));
  MESH_ASSIGN(auto removed, indices(removed_v, n_old));
  MESH_ASSIGN(auto ins_v, ch.field("inserted"));
  MESH_ASSIGN(auto ins, ins_v.elements());
  if (n_old - removed.size() + ins.size() != uint64_t(count))
    return ch.error("count: " + std::to_string(count) + " entries do not follow from the base's " +
                    std::to_string(n_old) + ", " + std::to_string(removed.size()) + " removed and " +
                    std::to_string(ins.size()) + " inserted");
  // The inserted entries, checked before any is placed: then the kept ones
  // fill exactly the other places.
  std::vector<std::pair<uint64_t, const Json*>> placed;
  for (const auto& e : ins) {
    MESH_ASSIGN(auto pair, e.elements());
    if (pair.size() != 2) return e.error("expected [INDEX, PEER]");
    MESH_ASSIGN(uint64_t at, pair[0].as_uint());
    if (at >= uint64_t(count)) return pair[0].error("index " + std::to_string(at) + " out of range");
    if (!placed.empty() && at <= placed.back().first) return pair[0].error("indices must ascend");
    if (!pair[1].json().is_object()) return pair[1].error("expected a peer object");
    placed.push_back({at, &pair[1].json()});
  }
  Json peers = Json::array();
  size_t next_old = 0, next_removed = 0, next_placed = 0;
  for (uint64_t j = 0; j < uint64_t(count); ++j) {
    if (next_placed < placed.size() && placed[next_placed].first == j) {
      peers.push_back(*placed[next_placed++].second);
      continue;
    }
    while (next_removed < removed.size() && removed[next_removed] == next_old) ++next_removed, ++next_old;
    peers.push_back((*old)[next_old++]);
  }
  Json out = delta;
  out.erase("peer_changes");
  out["peers"] = std::move(peers);
  return out;
}

}  // namespace mesh::coord
