// The coordinator's defences against abuse by volume (man/mesh-coord.8,
// LIMITS): failed authentications per source, the nonces of join requests
// kept apart from the peers', and connection accounting. All classes are
// thread-safe and take the time as an argument so tests can inject it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace mesh::coord {

// The unit the per-source limits count: an IPv4 address, or the /64 of an
// IPv6 address (one host gets a whole /64, so counting single IPv6
// addresses would give an attacker 2^64 budgets).
std::string source_key(std::string_view remote_addr);

// Failed authentications per source in a sliding minute; a source with
// `per_minute` failures is blocked until the oldest ages out. The table is
// bounded: when full, sources with no failure in the last minute go first,
// then the least recently failing unblocked ones; blocked sources are never
// evicted (a flood of new addresses must not unblock a guesser). When the
// table holds only blocked sources, failures of sources not in it share one
// overflow entry, which blocks them together.
class FailureLimiter {
 public:
  explicit FailureLimiter(int per_minute, size_t max_sources = 100000)
      : limit_(per_minute), max_(max_sources) {}
  bool blocked(const std::string& who, int64_t now);
  void failed(const std::string& who, int64_t now);
  size_t size() const;

 private:
  using Fails = std::deque<int64_t>;
  static void age(Fails& d, int64_t now);
  bool is_blocked(Fails& d, int64_t now) const;
  void make_room(int64_t now);
  int limit_;
  size_t max_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Fails> fails_;
  Fails overflow_;  // failures of sources that found the table full
};

// Nonces of /v1/join requests. Join requests may be signed with any
// self-made key, so their nonces are kept apart from the peers' NonceCache
// and bounded per source and in total: a flood of joins gets 429 itself
// and never makes the coordinator refuse an enrolled peer's request.
class JoinNonces {
 public:
  explicit JoinNonces(size_t per_source = 256, size_t max_total = 65536)
      : per_source_(per_source), max_(max_total) {}
  // Ok when fresh (and remembers it); NoPerm when replayed; TempFail when
  // the source or the store is full.
  Status check_and_insert(const std::string& source, std::string_view nonce, int64_t now);
  size_t size() const;

 private:
  void prune(int64_t now);
  size_t per_source_, max_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, int64_t> seen_;  // nonce -> expiry
  std::unordered_map<std::string, size_t> per_;    // source -> live nonces
  std::deque<std::tuple<int64_t, std::string, std::string>> order_;  // expiry, nonce, source
};

// Open connections, in total and per source. try_open() refuses beyond
// either limit; every successful try_open() is paired with one close().
class ConnectionLimits {
 public:
  ConnectionLimits(size_t max_total, size_t max_per_source)
      : max_(max_total), per_source_(max_per_source) {}
  enum class Verdict { Ok, SourceFull, ServerFull };
  Verdict try_open(const std::string& source);
  void close(const std::string& source);
  size_t open() const;

 private:
  size_t max_, per_source_;
  mutable std::mutex mu_;
  size_t total_ = 0;
  std::unordered_map<std::string, size_t> per_;
};

// Concurrent long-polls per peer key text (e.g. base64 public key).
// acquire() refuses beyond `max`; every successful acquire() is paired with
// one release() (see WatchSlot).
class WatchCounter {
 public:
  explicit WatchCounter(size_t max) : max_(max) {}
  bool acquire(const std::string& who);
  void release(const std::string& who);
  size_t max() const { return max_; }
  // Everyone holding a long-poll now.
  std::vector<std::string> holders();

 private:
  size_t max_;
  std::mutex mu_;
  std::unordered_map<std::string, size_t> n_;
};

}  // namespace mesh::coord
