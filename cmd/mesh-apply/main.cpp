// mesh-apply: apply a network map to WireGuard, addresses, routes and
// nftables, as an idempotent diff. See mesh-apply(8).
#include <malloc.h>

#include <array>

#include "verbs.h"

int main(int argc, char** argv) {
  using namespace mesh::apply;
  // A large map means many megabytes allocated and freed in a short run.
  // Keep them in the heap instead of mmap/munmap per large block: every
  // munmap in a multi-threaded process is a TLB shootdown on every core,
  // and every fresh mapping is page faults again (measured: about 5 ms of
  // a 5,000-peer apply).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_TOP_PAD, 16 << 20);
  static constexpr std::array<mesh::Verb, 4> kVerbs{{
      {"", cmd_apply, "make interface IF match a network map (default command)"},
      {"down", cmd_down, "remove the interface, its daemon and its firewall table"},
      {"routes", cmd_routes, "show or watch the routers of routed networks (HA failover)"},
      {"tune", cmd_tune, "size the socket buffers of the userspace daemon serving IF"},
  }};
  return mesh::run_program("mesh-apply", kVerbs, argc, argv);
}
