// mesh-relay: a TURN relay (RFC 8656, plus STUN) and the client that carries
// WireGuard through it. See mesh-relay(1).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::relay;
  static constexpr std::array<mesh::Verb, 3> kVerbs{{
      {"serve", cmd_serve, "run the TURN/STUN relay server"},
      {"client", cmd_client, "allocate on a TURN server and carry WireGuard peers through it"},
      {"credential", cmd_password, "mint REST-API credentials from a shared secret file"},
  }};
  return mesh::run_program("mesh-relay", kVerbs, argc, argv);
}
