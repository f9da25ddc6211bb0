// Base64 (RFC 4648). Standard alphabet with padding, as WireGuard uses for
// keys; URL-safe alphabet without padding for tokens. Decoding is strict:
// wrong characters, wrong padding, non-zero trailing bits and trailing
// garbage are errors (Exit::DataErr), never silently accepted.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace mesh {

std::string base64_encode(std::span<const uint8_t> data);
Result<std::vector<uint8_t>> base64_decode(std::string_view text);

std::string base64url_encode(std::span<const uint8_t> data);  // no padding
Result<std::vector<uint8_t>> base64url_decode(std::string_view text);

std::string hex_encode(std::span<const uint8_t> data);

}  // namespace mesh
