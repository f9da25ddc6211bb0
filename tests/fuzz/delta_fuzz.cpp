// libFuzzer target: a watcher applying a map delta (coord/delta.h,
// mesh-netmap(5), Deltas). The input is the held map and the delta, split at
// the first blank line. Invariants: no crash, hang, leak or UB; a delta that
// applies gives exactly `count` peers, each the held map's or one the delta
// inserted, the held ones in their order, and no peer_changes member.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "coord/delta.h"
#include "core/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  size_t cut = text.find("\n\n");
  if (cut == std::string_view::npos) return 0;
  auto base = mesh::parse_json(text.substr(0, cut), "base");
  auto delta = mesh::parse_json(text.substr(cut + 2), "delta");
  if (!base || !delta) return 0;
  auto out = mesh::coord::apply_delta(*base, *delta, "fuzz");
  if (!out) return 0;
  const mesh::Json& ch = (*delta)["peer_changes"];
  const mesh::Json& peers = (*out)["peers"];
  if (out->contains("peer_changes") || !peers.is_array()) __builtin_trap();
  if (peers.size() != ch["count"].get<uint64_t>()) __builtin_trap();
  // The entries not inserted are the held ones that were not removed, in order.
  size_t next_ins = 0, next_old = 0;
  const mesh::Json& old = (*base)["peers"];
  for (size_t j = 0; j < peers.size(); ++j) {
    const auto& ins = ch["inserted"];
    if (next_ins < ins.size() && ins[next_ins][0].get<uint64_t>() == j) {
      if (peers[j] != ins[next_ins++][1]) __builtin_trap();
      continue;
    }
    while (next_old < old.size() && peers[j] != old[next_old]) ++next_old;
    if (next_old++ >= old.size()) __builtin_trap();
  }
  return 0;
}
