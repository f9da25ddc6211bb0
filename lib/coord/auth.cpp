#include "coord/auth.h"

#include <sodium.h>

#include <stdexcept>
#include <string>

#include "core/base64.h"

namespace mesh::coord {

Result<SessionKeys> derive_session_keys(const SecretKey& own, const PublicKey& other,
                                        const PublicKey& peer_pub, const PublicKey& coord_pub) {
  auto ss = own.shared_secret(other);
  if (!ss) return ss.status();
  auto derive = [&](std::string_view label) {
    std::array<uint8_t, kKeyLen> out{};
    crypto_generichash_state st;
    crypto_generichash_init(&st, ss->bytes().data(), ss->bytes().size(), out.size());
    crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label.data()), label.size());
    crypto_generichash_update(&st, peer_pub.bytes.data(), peer_pub.bytes.size());
    crypto_generichash_update(&st, coord_pub.bytes.data(), coord_pub.bytes.size());
    crypto_generichash_final(&st, out.data(), out.size());
    SecretKey k(out);
    sodium_memzero(out.data(), out.size());
    sodium_memzero(&st, sizeof st);
    return k;
  };
  return SessionKeys{derive("mesh-coord v1 request"), derive("mesh-coord v1 response"),
                     derive("mesh-coord v1 seal request"), derive("mesh-coord v1 seal response")};
}

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == kKeyLen);
constexpr size_t kSealNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kSealTag = crypto_aead_xchacha20poly1305_ietf_ABYTES;

std::string seal_body(const SecretKey& k, std::string_view ad, std::string_view plain) {
  // A random 192-bit nonce per message: no counter state to keep between
  // processes or requests (the reason for XChaCha over ChaCha).
  std::string out(kSealNonce + plain.size() + kSealTag, '\0');
  auto* o = reinterpret_cast<uint8_t*>(out.data());
  random_bytes(o, kSealNonce);
  unsigned long long n = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      o + kSealNonce, &n, reinterpret_cast<const uint8_t*>(plain.data()), plain.size(),
      reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nullptr, o, k.bytes().data());
  return out;
}

Result<std::string> open_body(const SecretKey& k, std::string_view ad, std::string_view sealed) {
  if (sealed.size() < kSealNonce + kSealTag) return no_permission("sealed body too short");
  std::string out(sealed.size() - kSealNonce - kSealTag, '\0');
  const auto* s = reinterpret_cast<const uint8_t*>(sealed.data());
  unsigned long long n = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<uint8_t*>(out.data()), &n, nullptr, s + kSealNonce,
          sealed.size() - kSealNonce, reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), s,
          k.bytes().data()) != 0)
    return no_permission("sealed body does not open with the session key");
  return out;
}

std::string sha256_hex(std::string_view data) {
  std::array<uint8_t, crypto_hash_sha256_BYTES> h{};
  crypto_hash_sha256(h.data(), reinterpret_cast<const uint8_t*>(data.data()), data.size());
  return hex_encode(h);
}

static std::string hmac_b64(const SecretKey& k, const std::string& msg) {
  std::array<uint8_t, crypto_auth_hmacsha256_BYTES> mac{};
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, k.bytes().data(), k.bytes().size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  crypto_auth_hmacsha256_final(&st, mac.data());
  return base64_encode(mac);
}

std::string request_mac(const SecretKey& k, std::string_view method, std::string_view target,
                        int64_t time, std::string_view nonce, std::string_view body) {
  std::string msg = "MESH-REQ-V1\n";
  msg.append(method).append("\n").append(target).append("\n").append(std::to_string(time));
  msg.append("\n").append(nonce).append("\n").append(sha256_hex(body));
  return hmac_b64(k, msg);
}

std::string response_mac(const SecretKey& k, int status, std::string_view nonce,
                         std::string_view body) {
  std::string msg = "MESH-RES-V1\n" + std::to_string(status) + "\n";
  msg.append(nonce).append("\n").append(sha256_hex(body));
  return hmac_b64(k, msg);
}

bool mac_equal(std::string_view got, std::string_view expected) {
  return secure_equal(got, expected);
}

Result<int64_t> parse_time_header(std::string_view text) {
  std::string ts(text);
  try {
    size_t pos = 0;
    int64_t t = std::stoll(ts, &pos);
    if (pos == ts.size()) return t;
  } catch (const std::exception&) {
  }
  // One literal, not kHdrTime + "...": GCC 12 warns falsely (array-bounds)
  // on that concatenation once inlined here.
  static_assert(std::string_view(kHdrTime) == "X-Mesh-Time");
  return data_error("X-Mesh-Time: expected unix seconds");
}

Status check_time(int64_t t, int64_t now) {
  if (t < now - kMaxSkewSeconds || t > now + kMaxSkewSeconds)
    return no_permission("stale request: " + std::string(kHdrTime) + " is " +
                         std::to_string(t - now) + " s from the coordinator's clock (limit " +
                         std::to_string(kMaxSkewSeconds) + " s)");
  return Status::ok();
}

void NonceCache::prune(int64_t now) {
  while (!order_.empty() && order_.front().first < now) {
    seen_.erase(order_.front().second);
    order_.pop_front();
  }
}

Status NonceCache::check_and_insert(std::string_view nonce, int64_t now) {
  if (nonce.size() < 16 || nonce.size() > 64) return no_permission("bad nonce length");
  std::lock_guard lk(mu_);
  prune(now);
  std::string n(nonce);
  if (seen_.count(n)) return no_permission("replayed request (nonce already used)");
  if (seen_.size() >= max_) return temp_failure("too many requests in flight; retry later");
  // Requests are accepted up to kMaxSkewSeconds in the future, so remember
  // the nonce until no request carrying it could still be fresh.
  int64_t expiry = now + 2 * kMaxSkewSeconds + 1;
  seen_.emplace(n, expiry);
  order_.emplace_back(expiry, std::move(n));
  return Status::ok();
}

size_t NonceCache::size() const {
  std::lock_guard lk(mu_);
  return seen_.size();
}

std::optional<SessionKeys> SessionKeyCache::get(const PublicKey& k) {
  std::lock_guard lk(mu_);
  auto it = index_.find(k);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void SessionKeyCache::put(const PublicKey& k, const SessionKeys& keys) {
  std::lock_guard lk(mu_);
  if (auto it = index_.find(k); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (max_ == 0) return;
  while (lru_.size() >= max_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  lru_.emplace_front(k, keys);
  index_.emplace(k, lru_.begin());
}

size_t SessionKeyCache::size() const {
  std::lock_guard lk(mu_);
  return lru_.size();
}

}  // namespace mesh::coord
