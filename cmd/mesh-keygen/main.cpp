// mesh-keygen: WireGuard-compatible keys and tokens. See mesh-keygen(1).
#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::keygen;
  static constexpr std::array<mesh::Verb, 5> kVerbs{{
      {"genkey", cmd_genkey, "generate a private key (base64) like 'wg genkey'"},
      {"pubkey", cmd_pubkey, "read a private key on stdin, print its public key"},
      {"genpsk", cmd_genpsk, "generate a preshared key like 'wg genpsk'"},
      {"pair", cmd_pair, "generate a private and public key in one step"},
      {"token", cmd_token, "generate a random URL-safe token (admin tokens, setup keys)"},
  }};
  return mesh::run_program("mesh-keygen", kVerbs, argc, argv);
}
