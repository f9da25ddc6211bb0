// Wake-ups for the coordinator's long-polls (GET /v1/map?wait=,
// GET /v1/relay/revocations?wait=). One condition variable for every
// watcher makes each change wake all of them through one mutex: with
// 10,000 watchers a push queued for seconds behind that herd, and an
// endpoint announce that changes 250 maps woke all 10,000. Here waiters are
// spread over shards by a key (the peer id), each shard a generation
// counter waited on as a futex, and a change wakes only the shards of the
// peers it concerns. A broadcast (a change reaching every map) is one
// more futex word every waiter also waits on (futex_waitv, Linux 5.16):
// one FUTEX_WAKE for 10,000 watchers instead of one per shard, which in a
// VM cost ~100 us each and starved the waker behind the threads it woke.
//
// Protocol (no lost wake-up): a waiter checks for news under the lock that
// writers hold while changing the state, reads generation(key) under that
// same lock, releases it, then calls wait_until(key, seen, ...). A writer
// changes the state, then calls notify(key) or notify_all() (with or after
// releasing that lock). The generation read is either before the change
// (and the notify moves it) or after (and the waiter saw the change).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>

namespace mesh::coord {

class Notifier {
 public:
  // Many shards: an announce changes ~250-600 maps, and each shard woken
  // wakes every watcher in it. A shard without waiters costs no syscall.
  static constexpr size_t kShards = 16384;
  using TimePoint = std::chrono::steady_clock::time_point;

  // use_waitv false: the fallback for kernels without futex_waitv (tests).
  explicit Notifier(bool use_waitv = true);

  // The shard's generation and the broadcasts', as one token for wait_until.
  uint64_t generation(uint32_t key) const {
    return uint64_t{all_.gen.load(std::memory_order_acquire)} << 32 |
           shard(key).gen.load(std::memory_order_acquire);
  }
  // Wakes the waiters of the shards of these keys (all shards when the keys
  // would touch most of them anyway).
  void notify(std::span<const uint32_t> keys);
  void notify(uint32_t key) { notify(std::span<const uint32_t>(&key, 1)); }
  void notify_all();
  // Blocks until generation(key) != seen or the deadline. True when woken
  // by a notify, false on timeout.
  bool wait_until(uint32_t key, uint64_t seen, TimePoint deadline);

 private:
  // A bare futex word per shard: a notify is one atomic increment and, when
  // someone waits, one FUTEX_WAKE of them all, with no mutex for the woken
  // to queue on. (32 bits: a waiter would need 2^32 notifies within its
  // wait to miss one.)
  struct Shard {
    std::atomic<uint32_t> gen{0};
    std::atomic<uint32_t> waiters{0};
  };
  static size_t index(uint32_t key) { return key % kShards; }
  Shard& shard(uint32_t key) { return shards_[index(key)]; }
  const Shard& shard(uint32_t key) const { return shards_[index(key)]; }
  static void wake(Shard& s);
  // Sleeps while both words hold what was seen (or until `ts`, absolute
  // CLOCK_MONOTONIC). False on timeout.
  bool sleep(Shard& s, uint32_t seen_shard, uint32_t seen_all, const struct timespec& ts);

  std::unique_ptr<Shard[]> shards_ = std::make_unique<Shard[]>(kShards);
  Shard all_;  // broadcasts
  // futex_waitv is there (probed once); without it a broadcast wakes
  // every shard and waiters sleep on their shard's word alone.
  bool waitv_ = false;
};

}  // namespace mesh::coord
