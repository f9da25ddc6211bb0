// Notifier (coord/notifier.h): targeted and broadcast wake-ups of
// long-polls, and the generation protocol that makes them lossless.
#include "coord/notifier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace mesh::coord {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(CoordNotifier, TimesOutWithoutNotify) {
  Notifier n;
  uint64_t g = n.generation(7);
  auto t0 = Clock::now();
  EXPECT_FALSE(n.wait_until(7, g, t0 + 30ms));
  EXPECT_GE(Clock::now() - t0, 30ms);
}

TEST(CoordNotifier, NotifyBeforeWaitIsNotLost) {
  // The waiter read the generation, then the writer notified before the
  // waiter blocked: the wait returns at once.
  Notifier n;
  uint64_t g = n.generation(3);
  n.notify(3);
  auto t0 = Clock::now();
  EXPECT_TRUE(n.wait_until(3, g, t0 + 10s));
  EXPECT_LT(Clock::now() - t0, 1s);
}

TEST(CoordNotifier, NotifyWakesOnlyThatKeysShard) {
  Notifier n;
  uint32_t a = 5, b = 6;  // different shards
  ASSERT_NE(a % Notifier::kShards, b % Notifier::kShards);
  uint64_t ga = n.generation(a), gb = n.generation(b);
  n.notify(a);
  EXPECT_NE(n.generation(a), ga);
  EXPECT_EQ(n.generation(b), gb);
  EXPECT_FALSE(n.wait_until(b, gb, Clock::now() + 20ms));
  // Keys in one shard share its wake-ups (a spurious wake, rechecked by the caller).
  uint32_t a2 = a + Notifier::kShards;
  EXPECT_NE(n.generation(a2), ga);
}

TEST(CoordNotifier, ManyKeysBecomeABroadcast) {
  Notifier n;
  std::vector<uint32_t> keys;
  for (uint32_t k = 0; k < Notifier::kShards / 2; ++k) keys.push_back(k);
  uint64_t far = n.generation(Notifier::kShards - 1);
  n.notify(keys);
  EXPECT_NE(n.generation(Notifier::kShards - 1), far);
}

void wakes_blocked_waiters_of_every_shard(bool use_waitv) {
  Notifier n(use_waitv);
  constexpr int kWaiters = 64;
  std::atomic<int> woken{0};
  std::vector<std::thread> ts;
  std::vector<uint64_t> seen(kWaiters);
  for (int i = 0; i < kWaiters; ++i) seen[i] = n.generation(uint32_t(i * 7));
  for (int i = 0; i < kWaiters; ++i)
    ts.emplace_back([&, i] {
      if (n.wait_until(uint32_t(i * 7), seen[i], Clock::now() + 10s)) ++woken;
    });
  std::this_thread::sleep_for(20ms);
  auto t0 = Clock::now();
  n.notify_all();
  for (auto& t : ts) t.join();
  EXPECT_EQ(woken.load(), kWaiters);
  EXPECT_LT(Clock::now() - t0, 5s);
  // A targeted notify still reaches a waiter sleeping on both words.
  uint64_t g = n.generation(9);
  std::thread t([&] { EXPECT_TRUE(n.wait_until(9, g, Clock::now() + 10s)); });
  std::this_thread::sleep_for(20ms);
  n.notify(9);
  t.join();
}

// A broadcast is one futex word every waiter also sleeps on (futex_waitv).
TEST(CoordNotifier, WakesBlockedWaitersOfEveryShard) { wakes_blocked_waiters_of_every_shard(true); }

// Kernels without futex_waitv: a broadcast wakes every shard's word.
TEST(CoordNotifier, WakesEveryShardWithoutWaitv) { wakes_blocked_waiters_of_every_shard(false); }

}  // namespace
}  // namespace mesh::coord
