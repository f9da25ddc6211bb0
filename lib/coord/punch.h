// Call-me-maybe (man/mesh-coord.8, Coordinated hole punching): a peer asks,
// through the coordinator, that a peer it can see probe towards it at the
// same moment. The requests live only in memory, are delivered at most once
// to the target's long-polling watcher and expire after a few seconds: a
// punch request is only useful while the requester is probing, so nothing
// is persisted or audited. Both classes are thread-safe and take the time
// as an argument (milliseconds of a monotonic clock) so tests can inject it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/key.h"
#include "core/status.h"

namespace mesh::coord {

struct PunchRequest {
  PublicKey from;    // the requester's WireGuard public key
  std::string name;  // the requester's peer name
  int64_t at_ms = 0;
};

class PunchQueue {
 public:
  struct Limits {
    size_t per_target = 64;  // pending requests per target; beyond, the oldest goes
    int64_t ttl_ms = 10000;  // a request older than this is dropped, never delivered
  };
  PunchQueue() : PunchQueue(Limits{}) {}
  explicit PunchQueue(Limits l) : limits_(l) {}

  // Queues a request for `target`. A pending request from the same
  // requester is replaced (the newer one goes to the back, with its time
  // and name); when the target's queue is full the oldest request is dropped.
  void push(const PublicKey& target, const PublicKey& from, std::string name, int64_t now_ms);
  // Removes and returns the target's live requests, oldest first.
  std::vector<PunchRequest> drain(const PublicKey& target, int64_t now_ms);
  // Whether drain() would return anything now.
  bool pending(const PublicKey& target, int64_t now_ms) const;
  // Drops expired requests and empty queues (bounded memory); returns how
  // many requests are left.
  size_t prune(int64_t now_ms);
  size_t size() const;

 private:
  bool live(const PunchRequest& r, int64_t now_ms) const { return now_ms - r.at_ms < limits_.ttl_ms; }
  Limits limits_;
  mutable std::mutex mu_;
  std::map<PublicKey, std::deque<PunchRequest>> q_;
};

// At most `max` events per key in any `window_ms` (a sliding window of
// event times), e.g. punch requests per requester.
class WindowLimiter {
 public:
  WindowLimiter(size_t max, int64_t window_ms) : max_(max), window_ms_(window_ms) {}
  // Records an event for `who` and returns true, or returns false (and
  // records nothing) when `who` already had `max` events in the window.
  bool allow(const PublicKey& who, int64_t now_ms);
  // As allow(), but when refused returns how many milliseconds until the
  // oldest event leaves the window (> 0); 0 when allowed (and recorded).
  int64_t allow_or_wait(const PublicKey& who, int64_t now_ms);
  // Forgets keys with no event in the window.
  void prune(int64_t now_ms);
  size_t keys() const;

 private:
  size_t max_;
  int64_t window_ms_;
  mutable std::mutex mu_;
  std::map<PublicKey, std::deque<int64_t>> ev_;
};

// A punch request crossing replicas on a shared store (Broadcaster in
// coord/store.h): the replica that accepted it tells every other replica,
// which queues it for the targets' watchers there. `origin` identifies the
// sending replica (random per process), so it skips its own.
struct PunchSignal {
  uint64_t origin = 0;
  PublicKey from;
  std::string name;
  std::vector<PublicKey> targets;
};

// {"type":"punch","origin":"DECIMAL","from":KEY,"name":NAME,"peers":[KEY,...]}
// (the origin as a string: JSON numbers lose 64-bit integers elsewhere).
std::string encode_punch_signal(const PunchSignal& s);
// An error with Exit::NoInput for a broadcast of another type (sent by a
// newer replica; ignored), Exit::DataErr for a malformed one. At most
// `max_targets` targets.
Result<PunchSignal> parse_punch_signal(const std::string& payload, size_t max_targets);

}  // namespace mesh::coord
