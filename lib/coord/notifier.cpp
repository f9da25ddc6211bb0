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

long futex_waitv(struct futex_waitv* w, unsigned n, const timespec* ts) {
  return syscall(SYS_futex_waitv, w, n, 0, ts, CLOCK_MONOTONIC);
}

}  // namespace

Notifier::Notifier(bool use_waitv) {
  // No words: EINVAL where the call exists, ENOSYS where it does not.
  waitv_ = use_waitv && !(futex_waitv(nullptr, 0, nullptr) == -1 && errno == ENOSYS);
}

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
  if (!waitv_)
    for (size_t i = 0; i < kShards; ++i) wake(shards_[i]);
  wake(all_);
}

bool Notifier::sleep(Shard& s, uint32_t seen_shard, uint32_t seen_all, const timespec& ts) {
  long r;
  if (waitv_) {
    // Debian 12's headers name the futex2 flags FUTEX_32 and FUTEX_PRIVATE_FLAG.
    struct futex_waitv w[2] = {};
    w[0].val = seen_shard;
    w[0].uaddr = reinterpret_cast<uintptr_t>(word(s.gen));
    w[1].val = seen_all;
    w[1].uaddr = reinterpret_cast<uintptr_t>(word(all_.gen));
    w[0].flags = w[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    r = futex_waitv(w, 2, &ts);
  } else {
    r = syscall(SYS_futex, word(s.gen), FUTEX_WAIT_BITSET_PRIVATE, seen_shard, &ts, nullptr,
                FUTEX_BITSET_MATCH_ANY);
  }
  return !(r == -1 && errno == ETIMEDOUT);
}

bool Notifier::wait_until(uint32_t key, uint64_t seen, TimePoint deadline) {
  Shard& s = shard(key);
  const uint32_t seen_shard = static_cast<uint32_t>(seen), seen_all = static_cast<uint32_t>(seen >> 32);
  // steady_clock is CLOCK_MONOTONIC on Linux, the clock FUTEX_WAIT_BITSET
  // takes an absolute deadline in.
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  auto unchanged = [&] { return s.gen.load() == seen_shard && all_.gen.load() == seen_all; };
  s.waiters.fetch_add(1);
  all_.waiters.fetch_add(1);
  bool woken = true;
  // The kernel compares the words with what was seen before sleeping, so a
  // wake between the load and the call is not lost (EAGAIN).
  while (unchanged())
    if (!sleep(s, seen_shard, seen_all, ts)) {
      woken = !unchanged();
      break;
    }
  all_.waiters.fetch_sub(1);
  s.waiters.fetch_sub(1);
  return woken;
}

}  // namespace mesh::coord
