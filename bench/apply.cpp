// bench_apply: writes the inputs bench/apply measures with.
//   bench_apply DIR N [few|per-peer]
// DIR/self.key        this node's private key
// DIR/map.json        a network map with N peers and either a few group-wide
//                     inbound rules (default) or one tcp/22 rule per peer
// DIR/map1.json       the same map plus one peer
// DIR/full.conf       the wg(8) configuration equivalent to map.json
// DIR/plus1.conf      ... to map1.json
// Addresses: overlay 100.64.0.0/10, endpoints in 198.18.0.0/15.
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/json.h"
#include "core/key.h"
#include "netmap/netmap.h"

using namespace mesh;

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: bench_apply DIR N [few|per-peer]\n");
    return 64;
  }
  bool per_peer = argc == 4 && std::string(argv[3]) == "per-peer";
  std::string dir = argv[1];
  int n = std::atoi(argv[2]);
  if (n < 1 || n > 60000) return 64;
  SecretKey self = SecretKey::generate_private();
  std::vector<PublicKey> keys;
  for (int i = 0; i <= n; ++i) keys.push_back(SecretKey::generate_private().public_key());
  auto addr = [](int i) { return "100.65." + std::to_string(i >> 8) + "." + std::to_string(i & 255); };
  auto ep = [](int i) {
    return "198.18." + std::to_string(i >> 8) + "." + std::to_string(i & 255) + ":51820";
  };
  auto make = [&](int count, const std::string& map_path, const std::string& conf_path) -> bool {
    Json peers = Json::array(), inbound = Json::array();
    std::string conf = "[Interface]\nPrivateKey = " + self.to_base64() + "\nListenPort = 51820\n";
    for (int i = 0; i < count; ++i) {
      peers.push_back({{"name", "p" + std::to_string(i)},
                       {"public_key", keys[i].to_base64()},
                       {"addresses", {addr(i) + "/32"}},
                       {"endpoints", {{{"endpoint", ep(i)}, {"kind", "host"}}}}});
      if (per_peer)
        inbound.push_back({{"sources", {addr(i) + "/32"}}, {"proto", "tcp"}, {"ports", {22}}});
      conf += "\n[Peer]\nPublicKey = " + keys[i].to_base64() + "\nAllowedIPs = " + addr(i) +
              "/32\nEndpoint = " + ep(i) + "\n";
    }
    if (!per_peer) {
      inbound.push_back({{"sources", {"100.64.0.0/10"}}, {"proto", "icmp"}});
      inbound.push_back({{"sources", {"100.64.0.0/10"}}, {"proto", "tcp"}, {"ports", {22, "8000-8080"}}});
      inbound.push_back({{"sources", {"100.65.0.0/16"}}, {"proto", "udp"}, {"ports", {53}}});
    }
    Json m{{"version", 1},
           {"serial", count},
           {"self",
            {{"name", "bench"},
             {"public_key", self.public_key().to_base64()},
             {"addresses", {"100.64.0.1/10"}},
             {"listen_port", 51820}}},
           {"peers", peers},
           {"firewall", {{"inbound", inbound}}}};
    return write_file_atomic(map_path, dump_json(m) + "\n", 0600).is_ok() &&
           write_file_atomic(conf_path, conf, 0600).is_ok();
  };
  if (!write_file_atomic(dir + "/self.key", self.to_base64() + "\n", 0600).is_ok() ||
      !make(n, dir + "/map.json", dir + "/full.conf") ||
      !make(n + 1, dir + "/map1.json", dir + "/plus1.conf")) {
    std::fprintf(stderr, "bench_apply: cannot write to %s\n", dir.c_str());
    return 73;
  }
  return 0;
}
