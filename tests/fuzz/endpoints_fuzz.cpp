// libFuzzer target: the endpoints document (man/mesh-endpoints.5), which
// mesh-apply --endpoints reads and the coordinator's /v1/announce accepts
// from peers. Invariants: no crash, leak or UB; whatever parses (strict or
// not) serialises and parses back to the same document; merging it with
// itself keeps its candidates and peers.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/json.h"
#include "netmap/endpoints.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = mesh::parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!j) return 0;
  for (bool strict : {false, true}) {
    auto e = mesh::parse_endpoints(*j, "fuzz", {.strict = strict});
    if (!e) continue;
    mesh::Json out = mesh::endpoints_to_json(*e);
    auto again = mesh::parse_endpoints(out, "again", {.strict = true});
    if (!again || mesh::endpoints_to_json(*again) != out) __builtin_trap();
    for (const auto& p : e->peers)
      if (!e->find(p.public_key)) __builtin_trap();
    auto m = mesh::merge_endpoints({*e, *e});
    if (m.peers.size() > e->peers.size() || m.candidates.size() > e->candidates.size()) __builtin_trap();
  }
  return 0;
}
