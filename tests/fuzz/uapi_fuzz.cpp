// libFuzzer target: the UAPI GET/errno parsers must never crash on any
// answer a (possibly hostile) socket peer sends.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "apply/uapi.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  auto d = mesh::apply::uapi_parse_get(s);
  if (d) {
    // Whatever parses must re-encode without trouble.
    mesh::apply::DeviceUpdate u;
    for (const auto& p : d->peers) {
      mesh::apply::PeerUpdate pu;
      pu.public_key = p.public_key;
      pu.endpoint = p.endpoint;
      pu.allowed_ips = p.allowed_ips;
      u.peers.push_back(pu);
    }
    (void)mesh::apply::uapi_encode_set(u);
  }
  (void)mesh::apply::uapi_parse_errno(s);
  return 0;
}
