// libFuzzer target: the coordinator's request authentication (coord/auth.h)
// on header values a client controls. The input is split at newlines into
// X-Mesh-Key, X-Mesh-Time, X-Mesh-Nonce, X-Mesh-Auth, the method, the
// request target, and the body (the rest), and goes through the steps
// mesh-coord serve takes for every peer request: decode the key, read the
// time, derive the MAC keys from the coordinator's private key and the
// claimed key, compute the expected MAC and compare, check the clock skew,
// remember the nonce. Invariants: no crash, leak or UB; the expected MAC
// equals itself and only itself among the two; a fresh nonce is refused when
// it comes again.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coord/auth.h"
#include "core/key.h"

using namespace mesh;
using namespace mesh::coord;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const SecretKey coord = [] {
    std::array<uint8_t, kKeyLen> b{};
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 1);
    return SecretKey(b);
  }();
  static const PublicKey coord_pub = coord.public_key();
  // The last key's session keys (X25519 is the slow part; one key per run).
  static std::optional<std::pair<PublicKey, SessionKeys>> last;

  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> f;
  while (f.size() < 6) {
    size_t nl = in.find('\n');
    if (nl == std::string_view::npos) break;
    f.push_back(in.substr(0, nl));
    in.remove_prefix(nl + 1);
  }
  if (f.size() < 6) return 0;
  std::string_view body = in;

  auto time = parse_time_header(f[1]);
  auto key = PublicKey::from_base64(f[0]);
  if (!key) return 0;
  if (!last || last->first != *key) {
    auto keys = derive_session_keys(coord, *key, *key, coord_pub);
    if (!keys) return 0;
    last.emplace(*key, *keys);
  }
  const SessionKeys& keys = last->second;
  int64_t t = time ? *time : 0;
  std::string want = request_mac(keys.request, f[4], f[5], t, f[2], body);
  if (!mac_equal(want, want)) __builtin_trap();
  if (mac_equal(f[3], want) && f[3] != want) __builtin_trap();
  (void)check_time(t, 1700000000);
  NonceCache nonces(4);
  if (nonces.check_and_insert(f[2], 1700000000)) {
    Status again = nonces.check_and_insert(f[2], 1700000001);
    if (again || again.code() != Exit::NoPerm) __builtin_trap();
  }
  (void)response_mac(keys.response, 200, f[2], body);
  return 0;
}
