#include "coord/revoked.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <charconv>

#include "core/base64.h"
#include "core/key.h"

namespace mesh::coord {

std::string relay_subject(std::string_view name, uint32_t id) {
  // '@' is not allowed in peer names, so NAME@ID cannot collide with
  // another peer's subject, and a re-enrolled NAME gets a new one.
  return std::string(name) + "@" + std::to_string(id);
}

void RevocationList::add(const std::string& subject, int64_t until) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->subject == subject) {
      until = std::max(until, it->until);
      entries_.erase(it);
      break;
    }
  }
  entries_.push_back({++seq_, subject, until});
}

bool RevocationList::prune(int64_t now) {
  size_t before = entries_.size();
  std::erase_if(entries_, [now](const Revocation& r) { return r.until < now; });
  return entries_.size() != before;
}

Json RevocationList::since(int64_t after) const {
  bool full = after <= 0 || after > seq_;
  Json list = Json::array();
  for (const auto& r : entries_)
    if (full || r.seq > after)
      list.push_back({{"seq", r.seq}, {"subject", r.subject}, {"until", r.until}});
  return Json{{"seq", seq_}, {"full", full}, {"revoked", list}};
}

Json RevocationList::to_json() const {
  Json list = Json::array();
  for (const auto& r : entries_)
    list.push_back({{"seq", r.seq}, {"subject", r.subject}, {"until", r.until}});
  return Json{{"seq", seq_}, {"entries", list}};
}

Result<RevocationList> RevocationList::from_json(const Json& j) {
  RevocationList out;
  try {
    out.seq_ = j.at("seq").get<int64_t>();
    for (const auto& e : j.at("entries"))
      out.entries_.push_back(
          {e.at("seq").get<int64_t>(), e.at("subject").get<std::string>(), e.at("until").get<int64_t>()});
  } catch (const std::exception& e) {
    return Status(Exit::Config, std::string("corrupt relay revocations record: ") + e.what());
  }
  return out;
}

namespace {

std::string hmac_hex(std::string_view secret, std::string_view msg) {
  // The key is derived from the relay secret under a label of its own, so
  // these MACs can never be confused with TURN REST passwords.
  std::array<uint8_t, crypto_auth_hmacsha256_BYTES> key{}, mac{};
  static constexpr std::string_view kLabel = "mesh relay revocations v1";
  crypto_auth_hmacsha256_state st;  // the streaming API takes a key of any length
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const uint8_t*>(secret.data()), secret.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(kLabel.data()), kLabel.size());
  crypto_auth_hmacsha256_final(&st, key.data());
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  crypto_auth_hmacsha256_final(&st, mac.data());
  sodium_memzero(key.data(), key.size());
  sodium_memzero(&st, sizeof st);
  return hex_encode(mac);
}

}  // namespace

std::string revocation_request_mac(std::string_view secret, int64_t ts, int64_t after, int wait) {
  return hmac_hex(secret, "GET /v1/relay/revoked\n" + std::to_string(ts) + "\n" +
                              std::to_string(after) + "\n" + std::to_string(wait));
}

std::string revocation_response_mac(std::string_view secret, int64_t ts, std::string_view body) {
  return hmac_hex(secret, "response\n" + std::to_string(ts) + "\n" + std::string(body));
}

Status check_revocation_request(std::string_view secret, std::string_view header, int64_t now,
                                int64_t after, int wait, int64_t* ts) {
  size_t colon = header.find(':');
  if (colon == std::string_view::npos) return Status(Exit::NoPerm, "malformed " + std::string(kRevocationAuthHeader));
  std::string_view t = header.substr(0, colon);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (ec != std::errc() || p != t.data() + t.size())
    return Status(Exit::NoPerm, "malformed " + std::string(kRevocationAuthHeader));
  if (v < now - kRevocationSkew || v > now + kRevocationSkew)
    return Status(Exit::NoPerm, "request time is too far from ours (clock skew?)");
  if (!secure_equal(revocation_request_mac(secret, v, after, wait), header.substr(colon + 1)))
    return Status(Exit::NoPerm, "bad request MAC (another relay secret?)");
  *ts = v;
  return Status::ok();
}

}  // namespace mesh::coord
