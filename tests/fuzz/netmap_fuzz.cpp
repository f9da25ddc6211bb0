// libFuzzer target: the network map (man/mesh-netmap.5) through both of its
// parsers, the JSON-document one (netmap/netmap.h: parse_json, then
// parse_netmap) and the text fast path (netmap/fast.h). Invariants: no
// crash, hang, leak or UB; the fast path either declines or returns exactly
// what the document parser returns (strict and not); parse_netmap_text, the
// entry point programs use, gives the document parser's result or its very
// error; whatever parses serialises and parses back to the same map.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/json.h"
#include "netmap/fast.h"
#include "netmap/netmap.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)mesh::guess_listen_port(text);
  auto j = mesh::parse_json(text, "fuzz");
  for (bool strict : {false, true}) {
    mesh::ParseOptions opt{.strict = strict};
    size_t hooked = 0;
    auto fast = mesh::parse_netmap_fast(text, opt, [&](const mesh::MapPeer&) { ++hooked; });
    auto slow = j ? mesh::parse_netmap(*j, "fuzz", opt) : mesh::Result<mesh::NetMap>(j.status());
    if (fast) {
      if (!slow || mesh::netmap_to_json(*slow) != mesh::netmap_to_json(*fast)) __builtin_trap();
      if (hooked != fast->peers.size()) __builtin_trap();
    }
    auto either = mesh::parse_netmap_text(text, "fuzz", opt);
    if (either.is_ok() != slow.is_ok()) __builtin_trap();
    if (!slow && either.status().message() != slow.status().message()) __builtin_trap();
    if (slow && mesh::netmap_to_json(*either) != mesh::netmap_to_json(*slow)) __builtin_trap();
    if (slow) {
      // Whatever parses must serialise and parse back to the same document.
      auto again = mesh::parse_netmap(mesh::netmap_to_json(*slow), "again", {.strict = true});
      if (!again || mesh::netmap_to_json(*again) != mesh::netmap_to_json(*slow)) __builtin_trap();
    }
  }
  return 0;
}
