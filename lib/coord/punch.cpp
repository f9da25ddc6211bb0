#include "coord/punch.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "coord/requests.h"
#include "core/json.h"

namespace mesh::coord {

void PunchQueue::push(const PublicKey& target, const PublicKey& from, std::string name,
                      int64_t now_ms) {
  std::lock_guard lk(mu_);
  auto& d = q_[target];
  // Dedupe by requester: a peer re-asking while its probe is still running
  // wants one punch at the newest time, not a burst of stale ones.
  d.erase(std::remove_if(d.begin(), d.end(),
                         [&](const PunchRequest& r) { return r.from == from || !live(r, now_ms); }),
          d.end());
  while (limits_.per_target > 0 && d.size() >= limits_.per_target) d.pop_front();
  if (limits_.per_target > 0) d.push_back(PunchRequest{from, std::move(name), now_ms});
}

std::vector<PunchRequest> PunchQueue::drain(const PublicKey& target, int64_t now_ms) {
  std::lock_guard lk(mu_);
  std::vector<PunchRequest> out;
  auto it = q_.find(target);
  if (it == q_.end()) return out;
  for (auto& r : it->second)
    if (live(r, now_ms)) out.push_back(std::move(r));
  q_.erase(it);
  return out;
}

bool PunchQueue::pending(const PublicKey& target, int64_t now_ms) const {
  std::lock_guard lk(mu_);
  auto it = q_.find(target);
  if (it == q_.end()) return false;
  return std::any_of(it->second.begin(), it->second.end(),
                     [&](const PunchRequest& r) { return live(r, now_ms); });
}

size_t PunchQueue::prune(int64_t now_ms) {
  std::lock_guard lk(mu_);
  size_t n = 0;
  for (auto it = q_.begin(); it != q_.end();) {
    auto& d = it->second;
    d.erase(std::remove_if(d.begin(), d.end(),
                           [&](const PunchRequest& r) { return !live(r, now_ms); }),
            d.end());
    n += d.size();
    it = d.empty() ? q_.erase(it) : std::next(it);
  }
  return n;
}

size_t PunchQueue::size() const {
  std::lock_guard lk(mu_);
  size_t n = 0;
  for (const auto& [k, d] : q_) n += d.size();
  return n;
}

bool WindowLimiter::allow(const PublicKey& who, int64_t now_ms) {
  return allow_or_wait(who, now_ms) == 0;
}

int64_t WindowLimiter::allow_or_wait(const PublicKey& who, int64_t now_ms) {
  std::lock_guard lk(mu_);
  auto& d = ev_[who];
  while (!d.empty() && d.front() <= now_ms - window_ms_) d.pop_front();
  if (d.size() >= max_) return d.empty() ? window_ms_ : std::max<int64_t>(1, d.front() + window_ms_ - now_ms);
  d.push_back(now_ms);
  return 0;
}

void WindowLimiter::prune(int64_t now_ms) {
  std::lock_guard lk(mu_);
  for (auto it = ev_.begin(); it != ev_.end();) {
    auto& d = it->second;
    while (!d.empty() && d.front() <= now_ms - window_ms_) d.pop_front();
    it = d.empty() ? ev_.erase(it) : std::next(it);
  }
}

size_t WindowLimiter::keys() const {
  std::lock_guard lk(mu_);
  return ev_.size();
}

std::string encode_punch_signal(const PunchSignal& s) {
  Json peers = Json::array();
  for (const auto& k : s.targets) peers.push_back(k.to_base64());
  return dump_json(Json{{"type", "punch"},
                        {"origin", std::to_string(s.origin)},
                        {"from", s.from.to_base64()},
                        {"name", s.name},
                        {"peers", std::move(peers)}});
}

Result<PunchSignal> parse_punch_signal(const std::string& payload, size_t max_targets) {
  MESH_ASSIGN(auto j, parse_json(payload, "broadcast"));
  JsonView v(j, "broadcast");
  MESH_ASSIGN(auto type, v.get_string("type"));
  if (type != "punch") return Status(Exit::NoInput, "broadcast: type " + type + ": not a punch");
  MESH_TRY(v.check_keys({"type", "origin", "from", "name", "peers"}));
  PunchSignal s;
  MESH_ASSIGN(auto origin, v.field("origin"));
  MESH_ASSIGN(auto digits, origin.as_string());
  if (digits.empty() || digits.size() > 20 ||
      digits.find_first_not_of("0123456789") != std::string::npos)
    return origin.error("expected a decimal number");
  errno = 0;
  s.origin = std::strtoull(digits.c_str(), nullptr, 10);
  if (errno == ERANGE) return origin.error("out of range");
  MESH_ASSIGN(auto from, v.field("from"));
  MESH_ASSIGN(auto from_text, from.as_string());
  auto k = PublicKey::from_base64(from_text);
  if (!k) return from.error(k.status().message());
  s.from = *k;
  MESH_ASSIGN(s.name, v.get_string("name"));
  MESH_ASSIGN(auto peers, v.field("peers"));
  // The targets as a punch request's (same checks, same messages).
  auto targets = parse_punch_request(Json{{"peers", peers.json()}}, max_targets);
  if (!targets) return Status(Exit::DataErr, "broadcast: " + targets.status().message());
  s.targets = std::move(*targets);
  return s;
}

}  // namespace mesh::coord
