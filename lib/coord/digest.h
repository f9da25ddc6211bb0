// Cheap, well-mixed 64-bit hashes for the model's map digests (model.cpp,
// routes.cpp): not cryptographic, only for noticing that a map changed.
#pragma once

#include <cstdint>
#include <string_view>

namespace mesh::coord {

// The splitmix64 finaliser.
inline uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint64_t hash_str(std::string_view s, uint64_t h = 0) {
  for (unsigned char c : s) h = mix(h ^ c);
  return h;
}

}  // namespace mesh::coord
