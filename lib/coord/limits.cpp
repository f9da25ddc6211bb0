#include "coord/limits.h"

#include <algorithm>
#include <vector>

#include "core/net.h"

namespace mesh::coord {

std::string source_key(std::string_view remote_addr) {
  auto ip = IpAddr::parse(remote_addr);
  if (!ip) return std::string(remote_addr);
  // An IPv4-mapped IPv6 address is the IPv4 host it maps.
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (!ip->is_v4() && std::equal(kMapped, kMapped + 12, ip->bytes.begin()))
    return IpAddr::v4(uint32_t(ip->bytes[12]) << 24 | uint32_t(ip->bytes[13]) << 16 |
                      uint32_t(ip->bytes[14]) << 8 | ip->bytes[15])
        .to_string();
  if (ip->is_v4()) return ip->to_string();
  Prefix p{*ip, 64};
  return p.canonical().to_string();
}

// ------------------------------------------------------------ FailureLimiter

void FailureLimiter::age(Fails& d, int64_t now) {
  while (!d.empty() && d.front() <= now - 60) d.pop_front();
}

bool FailureLimiter::is_blocked(Fails& d, int64_t now) const {
  age(d, now);
  return static_cast<int>(d.size()) >= limit_;
}

bool FailureLimiter::blocked(const std::string& who, int64_t now) {
  std::lock_guard lk(mu_);
  auto it = fails_.find(who);
  if (it != fails_.end()) return is_blocked(it->second, now);
  // Not tracked: only the overflow entry speaks for it.
  return fails_.size() >= max_ && is_blocked(overflow_, now);
}

void FailureLimiter::make_room(int64_t now) {
  // Aged-out sources first, then the unblocked ones whose last failure is
  // oldest, down to 90% so that eviction is not paid on every failure.
  for (auto it = fails_.begin(); it != fails_.end();) {
    age(it->second, now);
    it = it->second.empty() ? fails_.erase(it) : std::next(it);
  }
  size_t target = max_ - max_ / 10;
  if (fails_.size() <= target) return;
  std::vector<std::pair<int64_t, const std::string*>> unblocked;
  for (auto& [who, d] : fails_)
    if (static_cast<int>(d.size()) < limit_) unblocked.emplace_back(d.back(), &who);
  size_t drop = std::min(unblocked.size(), fails_.size() - target);
  std::nth_element(unblocked.begin(), unblocked.begin() + drop, unblocked.end());
  std::vector<std::string> victims;
  for (size_t i = 0; i < drop; ++i) victims.push_back(*unblocked[i].second);
  for (const auto& v : victims) fails_.erase(v);
}

void FailureLimiter::failed(const std::string& who, int64_t now) {
  std::lock_guard lk(mu_);
  if (!fails_.count(who) && fails_.size() >= max_) make_room(now);
  Fails* d = &overflow_;
  if (auto it = fails_.find(who); it != fails_.end()) d = &it->second;
  else if (fails_.size() < max_) d = &fails_[who];
  age(*d, now);
  d->push_back(now);
  // A blocked source needs no more than `limit_` times to stay blocked.
  while (static_cast<int>(d->size()) > std::max(limit_, 1)) d->pop_front();
}

size_t FailureLimiter::size() const {
  std::lock_guard lk(mu_);
  return fails_.size();
}

// ------------------------------------------------------------ JoinNonces

void JoinNonces::prune(int64_t now) {
  while (!order_.empty() && std::get<0>(order_.front()) < now) {
    auto& [exp, nonce, src] = order_.front();
    seen_.erase(nonce);
    if (auto it = per_.find(src); it != per_.end() && --it->second == 0) per_.erase(it);
    order_.pop_front();
  }
}

Status JoinNonces::check_and_insert(const std::string& source, std::string_view nonce,
                                    int64_t now) {
  if (nonce.size() < 16 || nonce.size() > 64) return no_permission("bad nonce length");
  std::lock_guard lk(mu_);
  prune(now);
  std::string n(nonce);
  if (seen_.count(n)) return no_permission("replayed request (nonce already used)");
  auto it = per_.find(source);
  if ((it != per_.end() && it->second >= per_source_) || seen_.size() >= max_)
    return temp_failure("too many join requests; retry in a few minutes");
  // Kept as long as NonceCache keeps a peer's nonce (auth.h): until no
  // request carrying it could still be fresh.
  int64_t expiry = now + 2 * 60 + 1;
  seen_.emplace(n, expiry);
  ++per_[source];
  order_.emplace_back(expiry, std::move(n), source);
  return Status::ok();
}

size_t JoinNonces::size() const {
  std::lock_guard lk(mu_);
  return seen_.size();
}

// ------------------------------------------------------------ ConnectionLimits

ConnectionLimits::Verdict ConnectionLimits::try_open(const std::string& source) {
  std::lock_guard lk(mu_);
  if (total_ >= max_) return Verdict::ServerFull;
  auto& n = per_[source];
  if (n >= per_source_) {
    if (n == 0) per_.erase(source);
    return Verdict::SourceFull;
  }
  ++n;
  ++total_;
  return Verdict::Ok;
}

void ConnectionLimits::close(const std::string& source) {
  std::lock_guard lk(mu_);
  auto it = per_.find(source);
  if (it == per_.end()) return;
  --total_;
  if (--it->second == 0) per_.erase(it);
}

size_t ConnectionLimits::open() const {
  std::lock_guard lk(mu_);
  return total_;
}

// ------------------------------------------------------------ WatchCounter

bool WatchCounter::acquire(const std::string& who) {
  std::lock_guard lk(mu_);
  auto& n = n_[who];
  if (n >= max_) return false;
  ++n;
  return true;
}

void WatchCounter::release(const std::string& who) {
  std::lock_guard lk(mu_);
  auto it = n_.find(who);
  if (it != n_.end() && --it->second == 0) n_.erase(it);
}

std::vector<std::string> WatchCounter::holders() {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  out.reserve(n_.size());
  for (const auto& [who, n] : n_) out.push_back(who);
  return out;
}

}  // namespace mesh::coord
