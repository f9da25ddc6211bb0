// mesh-apply: apply a network map to WireGuard, addresses, routes and
// nftables, as an idempotent diff. See mesh-apply(8).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::apply;
  static constexpr std::array<mesh::Verb, 2> kVerbs{{
      {"", cmd_apply, "make interface IF match a network map (default command)"},
      {"down", cmd_down, "remove the interface, its daemon and its firewall table"},
  }};
  return mesh::run_program("mesh-apply", kVerbs, argc, argv);
}
