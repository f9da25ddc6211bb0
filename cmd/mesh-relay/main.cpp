// mesh-relay: a TURN relay (RFC 8656, plus STUN) and the client that carries
// WireGuard through it. See mesh-relay(1).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::relay;
  static constexpr std::array<mesh::Verb, 4> kVerbs{{
      {"serve", cmd_serve, "run the TURN/STUN relay server"},
      {"client", cmd_client, "allocate on a TURN server and carry WireGuard peers through it"},
      {"check", cmd_check, "allocate once on a TURN server and report (health check, 401 test)"},
      {"credential", cmd_password, "mint REST-API credentials from a shared secret file"},
  }};
  return mesh::run_program("mesh-relay", kVerbs, argc, argv);
}
