#include "core/base64.h"

#include <array>

namespace mesh {
namespace {

constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string encode(std::span<const uint8_t> in, const char* alpha, bool pad) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += alpha[(v >> 18) & 63];
    out += alpha[(v >> 12) & 63];
    out += alpha[(v >> 6) & 63];
    out += alpha[v & 63];
  }
  size_t rest = in.size() - i;
  if (rest) {
    uint32_t v = uint32_t{in[i]} << 16;
    if (rest == 2) v |= uint32_t{in[i + 1]} << 8;
    out += alpha[(v >> 18) & 63];
    out += alpha[(v >> 12) & 63];
    if (rest == 2) out += alpha[(v >> 6) & 63];
    if (pad) out.append(rest == 1 ? "==" : "=");
  }
  return out;
}

Result<std::vector<uint8_t>> decode(std::string_view text, const char* alpha, bool pad) {
  std::array<int8_t, 256> rev;
  rev.fill(-1);
  for (int k = 0; k < 64; ++k) rev[static_cast<uint8_t>(alpha[k])] = static_cast<int8_t>(k);

  size_t padding = 0;
  if (pad) {
    if (text.size() % 4 != 0) return data_error("invalid base64: length is not a multiple of 4");
    while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=')
      ++padding;
    text.remove_suffix(padding);
  } else if (text.size() % 4 == 1) {
    return data_error("invalid base64: truncated");
  }
  std::vector<uint8_t> out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    int8_t v = rev[static_cast<uint8_t>(text[i])];
    if (v < 0) {
      return data_error("invalid base64: unexpected character at offset " + std::to_string(i));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  if (pad && ((text.size() + padding) % 4 != 0)) return data_error("invalid base64: bad padding");
  if (bits >= 6) return data_error("invalid base64: truncated");
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
    return data_error("invalid base64: non-canonical encoding");
  return out;
}

}  // namespace

std::string base64_encode(std::span<const uint8_t> d) { return encode(d, kStd, true); }
Result<std::vector<uint8_t>> base64_decode(std::string_view t) { return decode(t, kStd, true); }
std::string base64url_encode(std::span<const uint8_t> d) { return encode(d, kUrl, false); }
Result<std::vector<uint8_t>> base64url_decode(std::string_view t) {
  return decode(t, kUrl, false);
}

std::string hex_encode(std::span<const uint8_t> data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (uint8_t b : data) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

}  // namespace mesh
