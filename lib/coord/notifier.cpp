#include "coord/notifier.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bitset>
#include <cerrno>
#include <climits>
#include <ctime>

namespace mesh::coord {
namespace {

// std::atomic<uint32_t> is layout-compatible with the futex word.
uint32_t* word(std::atomic<uint32_t>& a) { return reinterpret_cast<uint32_t*>(&a); }

}  // namespace

void Notifier::wake(Shard& s) {
  // seq_cst on both sides (here and in wait_until): either this sees the
  // waiter counted, or the waiter sees the new generation.
  s.gen.fetch_add(1);
  if (s.waiters.load() > 0)
    syscall(SYS_futex, word(s.gen), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void Notifier::notify(std::span<const uint32_t> keys) {
  if (keys.size() >= kShards / 2) return notify_all();
  std::bitset<kShards> seen;
  for (uint32_t k : keys) {
    size_t i = index(k);
    if (seen.test(i)) continue;
    seen.set(i);
    wake(shards_[i]);
  }
}

void Notifier::notify_all() {
  for (size_t i = 0; i < kShards; ++i) wake(shards_[i]);
}

bool Notifier::wait_until(uint32_t key, uint32_t seen, TimePoint deadline) {
  Shard& s = shard(key);
  // steady_clock is CLOCK_MONOTONIC on Linux, the clock FUTEX_WAIT_BITSET
  // takes an absolute deadline in.
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  s.waiters.fetch_add(1);
  bool woken = true;
  while (s.gen.load() == seen) {
    // The kernel compares the word with `seen` before sleeping, so a wake
    // between the load and the call is not lost (EAGAIN).
    long r = syscall(SYS_futex, word(s.gen), FUTEX_WAIT_BITSET_PRIVATE, seen, &ts, nullptr,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == -1 && errno == ETIMEDOUT) {
      woken = s.gen.load() != seen;
      break;
    }
  }
  s.waiters.fetch_sub(1);
  return woken;
}

}  // namespace mesh::coord
