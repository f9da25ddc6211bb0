// WireGuard keys: 32-byte Curve25519 keys in base64 (44 characters, one '='),
// byte-compatible with wg(8). Secret material (private and preshared keys,
// shared secrets) lives in SecretKey, which is wiped with sodium_memzero on
// destruction and never printed by accident (no operator<<).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace mesh {

inline constexpr size_t kKeyLen = 32;

// A public key: plain bytes, freely copyable and comparable.
struct PublicKey {
  std::array<uint8_t, kKeyLen> bytes{};

  static Result<PublicKey> from_base64(std::string_view text);
  std::string to_base64() const;
  bool is_zero() const;
  auto operator<=>(const PublicKey&) const = default;
};

// A private key, preshared key or derived secret. Zeroed on destruction.
class SecretKey {
 public:
  SecretKey() = default;
  explicit SecretKey(const std::array<uint8_t, kKeyLen>& b) : bytes_(b) {}
  SecretKey(const SecretKey& o) = default;
  SecretKey& operator=(const SecretKey& o) = default;
  ~SecretKey();

  // Fresh random key clamped for Curve25519, like `wg genkey`.
  static SecretKey generate_private();
  // Fresh random 32 bytes, like `wg genpsk`.
  static SecretKey generate_preshared();
  // Parses 44-character base64; surrounding whitespace (a trailing newline)
  // is accepted, anything else is Exit::DataErr.
  static Result<SecretKey> from_base64(std::string_view text);

  std::string to_base64() const;
  const std::array<uint8_t, kKeyLen>& bytes() const { return bytes_; }
  // Public key of this private key (as `wg pubkey`: the scalar is clamped).
  PublicKey public_key() const;
  // X25519(this, peer). Fails with DataErr for low-order peer keys.
  Result<SecretKey> shared_secret(const PublicKey& peer) const;

 private:
  std::array<uint8_t, kKeyLen> bytes_{};
};

// Strips one trailing "\n" / "\r\n" and surrounding blanks, as wg does when
// reading a key from a file or stdin.
std::string_view trim_key_text(std::string_view text);

// Reads and parses a private key file. Missing file -> NoInput; a file that
// group or others can read is accepted (as wg does) but reported in *warning.
Result<SecretKey> read_private_key_file(const std::string& path, std::string* warning = nullptr);

// Random bytes (libsodium), and a URL-safe random token of `bytes` entropy.
void random_bytes(uint8_t* out, size_t n);
std::string random_token(size_t bytes = 32);

// Constant-time comparison.
bool secure_equal(std::string_view a, std::string_view b);

}  // namespace mesh

namespace mesh {
// Overwrites a string's bytes with zeros (libsodium) and clears it; for
// strings that held secret text (a base64 key, a token, a password).
void wipe(std::string& s);
}  // namespace mesh
