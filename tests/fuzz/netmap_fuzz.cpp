// libFuzzer target: the network map and endpoints document parsers must
// reject any input with a Status, never crash, hang or leak; the text fast
// path (netmap/fast.h) declines or agrees with them exactly.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/json.h"
#include "netmap/endpoints.h"
#include "netmap/fast.h"
#include "netmap/netmap.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto j = mesh::parse_json(text, "fuzz");
  for (bool strict : {false, true}) {
    auto fast = mesh::parse_netmap_fast(text, {.strict = strict});
    if (!fast) continue;
    if (!j) __builtin_trap();
    auto slow = mesh::parse_netmap(*j, "fuzz", {.strict = strict});
    if (!slow || mesh::netmap_to_json(*slow) != mesh::netmap_to_json(*fast)) __builtin_trap();
  }
  if (!j) return 0;
  for (bool strict : {false, true}) {
    auto m = mesh::parse_netmap(*j, "fuzz", {.strict = strict});
    if (m) {
      // Whatever parses must serialise and parse back to the same document.
      auto again = mesh::parse_netmap(mesh::netmap_to_json(*m), "again");
      if (!again || mesh::netmap_to_json(*again) != mesh::netmap_to_json(*m)) __builtin_trap();
    }
    auto e = mesh::parse_endpoints(*j, "fuzz", {.strict = strict});
    if (e) (void)mesh::endpoints_to_json(*e);
  }
  return 0;
}
