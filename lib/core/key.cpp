#include "core/key.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cstdlib>
#include <vector>

#include "core/base64.h"
#include "core/file.h"

namespace mesh {
namespace {

void ensure_sodium() {
  // sodium_init is idempotent and thread-safe; it only fails when the
  // system cannot provide randomness, which we cannot recover from.
  if (sodium_init() < 0) std::abort();
}

Result<std::array<uint8_t, kKeyLen>> decode_key(std::string_view text) {
  text = trim_key_text(text);
  if (text.empty()) return data_error("empty key");
  if (text.size() != 44 || text[43] != '=' || text[42] == '=')
    return data_error("invalid key: expected 44 base64 characters ending in one '=', got " +
                      std::to_string(text.size()) + " characters");
  auto raw = base64_decode(text);
  if (!raw) return raw.status().with_context("invalid key");
  std::array<uint8_t, kKeyLen> out{};
  std::copy(raw->begin(), raw->end(), out.begin());
  sodium_memzero(raw->data(), raw->size());
  return out;
}

}  // namespace

std::string_view trim_key_text(std::string_view t) {
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ' || t.back() == '\t'))
    t.remove_suffix(1);
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  return t;
}

Result<PublicKey> PublicKey::from_base64(std::string_view text) {
  auto b = decode_key(text);
  if (!b) return b.status();
  return PublicKey{*b};
}

std::string PublicKey::to_base64() const { return base64_encode(bytes); }

bool PublicKey::is_zero() const { return sodium_is_zero(bytes.data(), bytes.size()) == 1; }

SecretKey::~SecretKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

SecretKey SecretKey::generate_private() {
  SecretKey k = generate_preshared();
  // RFC 7748 clamping, as wg genkey does.
  k.bytes_[0] &= 248;
  k.bytes_[31] = static_cast<uint8_t>((k.bytes_[31] & 127) | 64);
  return k;
}

SecretKey SecretKey::generate_preshared() {
  ensure_sodium();
  SecretKey k;
  randombytes_buf(k.bytes_.data(), k.bytes_.size());
  return k;
}

Result<SecretKey> SecretKey::from_base64(std::string_view text) {
  auto b = decode_key(text);
  if (!b) return b.status();
  SecretKey k(*b);
  sodium_memzero(b->data(), b->size());
  return k;
}

std::string SecretKey::to_base64() const { return base64_encode(bytes_); }

PublicKey SecretKey::public_key() const {
  ensure_sodium();
  PublicKey pub;
  // crypto_scalarmult_base clamps the scalar internally, matching wg pubkey.
  crypto_scalarmult_curve25519_base(pub.bytes.data(), bytes_.data());
  return pub;
}

Result<SecretKey> SecretKey::shared_secret(const PublicKey& peer) const {
  ensure_sodium();
  SecretKey out;
  if (crypto_scalarmult_curve25519(out.bytes_.data(), bytes_.data(), peer.bytes.data()) != 0)
    return data_error("public key is a low-order point");
  return out;
}

Result<SecretKey> read_private_key_file(const std::string& path, std::string* warning) {
  auto text = read_file(path, 4096);
  if (!text) return text.status();
  auto key = SecretKey::from_base64(*text);
  sodium_memzero(text->data(), text->size());
  if (!key) return key.status().with_context(path);
  if (warning) {
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077))
      *warning = path + " is readable by group or others (mode " +
                 std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) +
                 std::to_string(st.st_mode & 7) + ")";
  }
  return key;
}

void random_bytes(uint8_t* out, size_t n) {
  ensure_sodium();
  randombytes_buf(out, n);
}

std::string random_token(size_t bytes) {
  std::vector<uint8_t> buf(bytes);
  random_bytes(buf.data(), buf.size());
  std::string t = base64url_encode(buf);
  sodium_memzero(buf.data(), buf.size());
  return t;
}

bool secure_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace mesh

namespace mesh {
void wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
  s.clear();
}
}  // namespace mesh
