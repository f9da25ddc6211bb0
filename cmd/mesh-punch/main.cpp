// mesh-punch: STUN discovery, NAT classification and authenticated UDP hole
// punching from the WireGuard port. See mesh-punch(1), mesh-endpoints(5).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::punch;
  static constexpr std::array<mesh::Verb, 2> kVerbs{{
      {"stun", cmd_stun, "discover host and server-reflexive candidates and the NAT type"},
      {"probe", cmd_probe, "punch authenticated direct paths to the peers of a network map"},
  }};
  return mesh::run_program("mesh-punch", kVerbs, argc, argv);
}
