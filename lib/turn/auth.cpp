#include "turn/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/base64.h"
#include "core/file.h"
#include "core/key.h"
#include "stun/stun.h"

namespace mesh::turn {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Calls fn(line_number, trimmed_line) for each meaningful line.
template <typename Fn>
Status for_lines(std::string_view text, Fn fn) {
  size_t lineno = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++lineno;
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    MESH_TRY(fn(lineno, line));
  }
  return Status::ok();
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void hmac_sha1(std::string_view key, const void* data, size_t len, uint8_t out[20]) {
  unsigned n = 0;
  HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()), static_cast<const uint8_t*>(data), len,
       out, &n);
}

}  // namespace

Credentials::~Credentials() {
  for (auto& s : secrets_) wipe(s);
  for (auto& [u, k] : users_) OPENSSL_cleanse(k.data(), k.size());
}

Result<std::map<std::string, LongTermKey>> Credentials::parse_users(std::string_view text,
                                                                   std::string_view realm,
                                                                   std::string_view source) {
  std::map<std::string, LongTermKey> out;
  Status s = for_lines(text, [&](size_t n, std::string_view line) -> Status {
    auto where = std::string(source) + ":" + std::to_string(n) + ": ";
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == line.size())
      return data_error(where + "expected USER:PASSWORD or USER:0xKEY");
    std::string_view user = line.substr(0, colon), pass = line.substr(colon + 1);
    LongTermKey k{};
    if (pass.size() == 34 && pass[0] == '0' && (pass[1] == 'x' || pass[1] == 'X')) {
      for (size_t i = 0; i < 16; ++i) {
        int hi = hexval(pass[2 + 2 * i]), lo = hexval(pass[3 + 2 * i]);
        if (hi < 0 || lo < 0) return data_error(where + "bad hexadecimal key");
        k[i] = static_cast<uint8_t>(hi << 4 | lo);
      }
    } else {
      k = stun::long_term_key(user, realm, pass);
    }
    if (!out.emplace(std::string(user), k).second)
      return data_error(where + "duplicate user '" + std::string(user) + "'");
    return Status::ok();
  });
  if (!s) return s;
  return out;
}

Result<std::vector<std::string>> Credentials::parse_secrets(std::string_view text,
                                                            std::string_view source) {
  std::vector<std::string> out;
  Status s = for_lines(text, [&](size_t, std::string_view line) -> Status {
    out.emplace_back(line);
    return Status::ok();
  });
  if (!s) return s;
  if (out.empty()) return data_error(std::string(source) + ": no secret in the file");
  return out;
}

Result<std::unique_ptr<Credentials>> Credentials::load(const std::string& users_file,
                                                       const std::string& secret_file,
                                                       const std::string& realm) {
  auto c = std::make_unique<Credentials>();
  c->realm_ = realm;
  if (users_file.empty() && secret_file.empty())
    return usage_error("no credentials: give --users-file and/or --auth-secret-file");
  if (!users_file.empty()) {
    MESH_ASSIGN(std::string text, read_file(users_file, 16u << 20));
    auto users = parse_users(text, realm, users_file);
    wipe(text);
    if (!users) return users.status();
    for (auto& [u, k] : *users) c->users_.emplace(u, k);
  }
  if (!secret_file.empty()) {
    MESH_ASSIGN(std::string text, read_file(secret_file, 1u << 20));
    auto secrets = parse_secrets(text, secret_file);
    wipe(text);
    if (!secrets) return secrets.status();
    c->secrets_ = std::move(*secrets);
  }
  return c;
}

Credentials::Lookup Credentials::keys_for(std::string_view username, int64_t now,
                                          std::vector<LongTermKey>* keys,
                                          std::string* quota_name) const {
  keys->clear();
  if (auto it = users_.find(username); it != users_.end()) {
    keys->push_back(it->second);
    quota_name->assign(username);
    return Lookup::Ok;
  }
  int64_t expiry = 0;
  std::string_view name;
  if (secrets_.empty() || !parse_rest_username(username, &expiry, &name)) return Lookup::Unknown;
  if (expiry < now) return Lookup::Expired;
  for (const auto& s : secrets_) {
    std::string pw = rest_password(s, username);
    keys->push_back(stun::long_term_key(username, realm_, pw));
    wipe(pw);
  }
  quota_name->assign(name.empty() ? username : name);
  return Lookup::Ok;
}

std::string rest_password(std::string_view secret, std::string_view username) {
  uint8_t mac[20];
  hmac_sha1(secret, username.data(), username.size(), mac);
  std::string out = base64_encode(mac);
  OPENSSL_cleanse(mac, sizeof mac);
  return out;
}

bool parse_rest_username(std::string_view u, int64_t* expiry, std::string_view* name) {
  size_t colon = u.find(':');
  std::string_view num = u.substr(0, colon);
  *name = colon == std::string_view::npos ? std::string_view{} : u.substr(colon + 1);
  if (num.empty() || num.size() > 18) return false;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (ec != std::errc() || p != num.data() + num.size() || v < 0) return false;
  *expiry = v;
  return true;
}

NonceMint::NonceMint() { random_bytes(key_.data(), key_.size()); }

namespace {
// HMAC-SHA1(key, expiry || client), of which 8 bytes are kept: the nonce
// only proves freshness and origin, MESSAGE-INTEGRITY authenticates.
void nonce_mac(const std::array<uint8_t, 32>& key, const uint8_t be[4],
               std::span<const uint8_t> client, uint8_t mac[20]) {
  uint8_t msg[4 + 64];
  size_t n = std::min<size_t>(client.size(), 64);
  std::memcpy(msg, be, 4);
  if (n) std::memcpy(msg + 4, client.data(), n);
  hmac_sha1({reinterpret_cast<const char*>(key.data()), key.size()}, msg, 4 + n, mac);
}
}  // namespace

std::string NonceMint::make(int64_t now, int64_t lifetime, std::span<const uint8_t> client) const {
  uint32_t exp = static_cast<uint32_t>(now + lifetime);
  uint8_t be[4];
  for (int i = 0; i < 4; ++i) be[i] = static_cast<uint8_t>(exp >> (24 - 8 * i));
  uint8_t mac[20];
  nonce_mac(key_, be, client, mac);
  std::string out = hex_encode(std::span<const uint8_t>(be, 4));
  out += hex_encode(std::span<const uint8_t>(mac, 8));
  return out;  // 8 + 16 hex characters
}

NonceMint::Check NonceMint::check(std::string_view nonce, int64_t now,
                                  std::span<const uint8_t> client) const {
  if (nonce.size() != 24) return Check::Invalid;
  uint8_t be[4];
  for (size_t i = 0; i < 4; ++i) {
    int hi = hexval(nonce[2 * i]), lo = hexval(nonce[2 * i + 1]);
    if (hi < 0 || lo < 0) return Check::Invalid;
    be[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  uint8_t mac[20];
  nonce_mac(key_, be, client, mac);
  std::string want = hex_encode(std::span<const uint8_t>(mac, 8));
  if (!secure_equal(want, nonce.substr(8))) return Check::Invalid;
  uint32_t exp = 0;
  for (int i = 0; i < 4; ++i) exp = exp << 8 | be[i];
  return static_cast<int64_t>(exp) < now ? Check::Stale : Check::Valid;
}

}  // namespace mesh::turn
