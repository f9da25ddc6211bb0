#include "coord/punch.h"

#include <algorithm>

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

}  // namespace mesh::coord
