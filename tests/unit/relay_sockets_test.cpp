// relay/sockets: the send and receive batches on real loopback sockets
// (GSO trains out, GRO trains in, order kept, what falls back to sendmmsg).
#include "relay/sockets.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>

#include <string>
#include <vector>

namespace mesh::relay {
namespace {

struct Pair {
  UniqueFd tx, rx;
  sockaddr_storage to{};
  socklen_t tl = 0;
};

Pair make_pair() {
  Pair p;
  auto loop = IpAddr::parse("127.0.0.1");
  auto rx = open_udp(SockAddr{*loop, 0}, 1 << 22);
  auto tx = open_udp(SockAddr{*loop, 0}, 1 << 22);
  EXPECT_TRUE(rx && tx);
  p.rx = std::move(*rx);
  p.tx = std::move(*tx);
  p.tl = bound_address(p.rx.get()).to_sockaddr(&p.to);
  return p;
}

std::vector<uint8_t> payload(size_t len, uint8_t tag) {
  std::vector<uint8_t> v(len);
  for (size_t i = 0; i < len; ++i) v[i] = static_cast<uint8_t>(tag + i * 7);
  return v;
}

// Reads every datagram waiting on `fd` (splitting GRO trains), in order.
std::vector<std::vector<uint8_t>> drain(int fd, bool control, int* messages = nullptr) {
  std::vector<std::vector<uint8_t>> out;
  RxBatch rx;
  int msgs = 0;
  for (int round = 0; round < 100; ++round) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, 200) <= 0) break;
    rx.prepare(control);
    int n = recvmmsg(fd, rx.msgs, kRxBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      ++msgs;
      const uint8_t* p = rx.slot(i) + kRxHeadroom;
      size_t len = rx.msgs[i].msg_len, seg = rx.segment_size(i);
      if (seg == 0) seg = len;
      for (size_t off = 0; off < len; off += seg)
        out.emplace_back(p + off, p + off + std::min(seg, len - off));
    }
  }
  if (messages) *messages = msgs;
  return out;
}

TEST(RelaySockets, TxBatchKeepsOrderAcrossTrainsAndSizes) {
  Pair p = make_pair();
  TxBatch tx;
  // A train of 5 (the last shorter), a bigger one that breaks it, a run of
  // 3 equal ones, then singles of growing size (no train: only the last of
  // a train may differ).
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < 4; ++i) sent.push_back(payload(1200, static_cast<uint8_t>(i)));
  sent.push_back(payload(700, 4));
  sent.push_back(payload(1300, 5));
  for (int i = 0; i < 3; ++i) sent.push_back(payload(900, static_cast<uint8_t>(10 + i)));
  for (int i = 0; i < 3; ++i) sent.push_back(payload(100 + 100 * i, static_cast<uint8_t>(20 + i)));
  for (const auto& v : sent) tx.add(p.tx.get(), &p.to, p.tl, v.data(), v.size());
  tx.flush();
  EXPECT_TRUE(tx.empty());
  auto got = drain(p.rx.get(), false);
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(got[i], sent[i]) << "datagram " << i;
  EXPECT_EQ(tx.drops(), 0u);
}

TEST(RelaySockets, TxBatchWithoutGsoSendsTheSame) {
  Pair p = make_pair();
  TxBatch tx;
  tx.set_gso(false);
  EXPECT_FALSE(tx.gso());
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < 70; ++i) sent.push_back(payload(1000, static_cast<uint8_t>(i)));
  for (const auto& v : sent) tx.add(p.tx.get(), &p.to, p.tl, v.data(), v.size());  // flushes at 64
  tx.flush();
  auto got = drain(p.rx.get(), false);
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(got[i], sent[i]) << "datagram " << i;
}

TEST(RelaySockets, TxBatchSplitsTrainsByDestination) {
  Pair a = make_pair(), b = make_pair();
  TxBatch tx;
  std::vector<std::vector<uint8_t>> to_a, to_b;
  to_a.reserve(6);  // add() keeps pointers into these until the flush
  to_b.reserve(6);
  for (int i = 0; i < 6; ++i) {
    auto v = payload(1100, static_cast<uint8_t>(i));
    // One socket, two destinations, interleaved in pairs.
    if ((i / 2) % 2 == 0) {
      to_a.push_back(v);
      tx.add(a.tx.get(), &a.to, a.tl, to_a.back().data(), v.size());
    } else {
      to_b.push_back(v);
      tx.add(a.tx.get(), &b.to, b.tl, to_b.back().data(), v.size());
    }
  }
  tx.flush();
  EXPECT_EQ(drain(a.rx.get(), false), to_a);
  EXPECT_EQ(drain(b.rx.get(), false), to_b);
}

TEST(RelaySockets, GroReadsATrainAsOneMessage) {
  Pair p = make_pair();
  if (!enable_gro(p.rx.get())) GTEST_SKIP() << "this kernel has no UDP_GRO";
  TxBatch tx;
  if (!tx.gso()) GTEST_SKIP() << "this kernel has no UDP_SEGMENT";
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < 20; ++i) sent.push_back(payload(i == 19 ? 300 : 1200, static_cast<uint8_t>(i)));
  for (const auto& v : sent) tx.add(p.tx.get(), &p.to, p.tl, v.data(), v.size());
  tx.flush();
  int messages = 0;
  auto got = drain(p.rx.get(), true, &messages);
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(got[i], sent[i]) << "datagram " << i;
  // Loopback keeps the GSO train whole up to the GRO socket.
  EXPECT_EQ(messages, 1);
}

TEST(RelaySockets, GroSocketStillReadsSingleDatagrams) {
  Pair p = make_pair();
  if (!enable_gro(p.rx.get())) GTEST_SKIP() << "this kernel has no UDP_GRO";
  auto v = payload(500, 1);
  ASSERT_EQ(sendto(p.tx.get(), v.data(), v.size(), 0, reinterpret_cast<sockaddr*>(&p.to), p.tl),
            static_cast<ssize_t>(v.size()));
  RxBatch rx;
  pollfd pf{p.rx.get(), POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 1000), 1);
  rx.prepare(true);
  ASSERT_EQ(recvmmsg(p.rx.get(), rx.msgs, kRxBatch, MSG_DONTWAIT, nullptr), 1);
  EXPECT_EQ(rx.msgs[0].msg_len, 500u);
  EXPECT_EQ(rx.segment_size(0), 0u);
}

}  // namespace
}  // namespace mesh::relay
