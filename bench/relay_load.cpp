// Load generator for bench/relay: two TURN allocations A and B on SERVER
// (mesh-relay or coturn), each with a channel to the other's relayed
// address; A sends SIZE-byte ChannelData at RATE packets/s for SECONDS, B
// counts what arrives (the "both peers relayed" case). With --raw TARGET it
// instead sends plain datagrams to TARGET (a bare forwarder) and counts
// what comes back to B's socket. With --b-side, B installs less toward A:
// "permission" (a permission for A's relayed address, no channel: B gets
// Data indications) or "none" (nothing: B must get nothing); tests use it.
// Usage: bench_relay_load SERVER USER PASSWORD RATE SECONDS SIZE
//        [--raw FWD RECV_PORT | --b-side channel|permission|none]
// Prints one JSON line: {"sent":N,"received":M,"loss_pct":X,"pps":R}.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "relay/sockets.h"
#include "stun/stun.h"

using namespace mesh;

static int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

struct Session {
  UniqueFd fd;
  std::string user, pass, realm, nonce;
  std::array<uint8_t, 16> key{};
  bool authed = false;
  // Sends a request until answered; returns the success answer or empty.
  std::vector<uint8_t> txn(uint16_t method, const std::function<void(stun::Builder&)>& fill) {
    uint8_t buf[1500], in[1500];
    for (int attempt = 0; attempt < 6; ++attempt) {
      stun::TxId tx = stun::random_txid();
      stun::Builder b(buf, method, stun::kRequest, tx);
      fill(b);
      if (authed) {
        b.add_string(stun::kUsername, user).add_string(stun::kRealm, realm);
        b.add_string(stun::kNonce, nonce).add_integrity(key);
      }
      auto m = b.finish();
      ssize_t w = send(fd.get(), m.data(), m.size(), 0);
      (void)w;
      pollfd p{fd.get(), POLLIN, 0};
      while (poll(&p, 1, 1000) > 0) {
        ssize_t r = recv(fd.get(), in, sizeof in, 0);
        if (r <= 0) break;
        auto a = stun::parse({in, static_cast<size_t>(r)});
        if (!a || a->tx != tx) continue;
        if (a->cls == stun::kSuccess) return std::vector<uint8_t>(in, in + r);
        auto* rl = a->find(stun::kRealm);
        auto* nn = a->find(stun::kNonce);
        if (rl && nn) {
          realm = stun::as_string(*rl);
          nonce = stun::as_string(*nn);
          key = stun::long_term_key(user, realm, pass);
          authed = true;
        }
        break;
      }
    }
    return {};
  }
};

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr,
                 "usage: %s SERVER USER PASSWORD RATE SECONDS SIZE [--raw FWD RECV_PORT | --b-side "
                 "channel|permission|none]\n",
                 argv[0]);
    return 64;
  }
  auto server = SockAddr::parse(argv[1]);
  double rate = std::atof(argv[4]), secs = std::atof(argv[5]);
  size_t size = static_cast<size_t>(std::atoi(argv[6]));
  bool raw = argc >= 9 && std::string(argv[7]) == "--raw";
  std::string b_side = argc >= 9 && std::string(argv[7]) == "--b-side" ? argv[8] : "channel";
  if (!server || (b_side != "channel" && b_side != "permission" && b_side != "none")) return 64;
  Session s[2];
  SockAddr relayed[2];
  for (int i = 0; i < 2; ++i) {
    s[i].user = argv[2];
    s[i].pass = argv[3];
    uint16_t lport = raw && i == 1 && argc >= 10 ? static_cast<uint16_t>(std::atoi(argv[9])) : 0;
    auto fd = relay::open_udp(SockAddr{*IpAddr::parse("127.0.0.1"), lport}, 8 << 20);
    if (!fd) return 69;
    s[i].fd = std::move(*fd);
    fcntl(s[i].fd.get(), F_SETFL, 0);
    SockAddr target = raw ? *SockAddr::parse(argv[8]) : *server;
    sockaddr_storage ss;
    socklen_t sl = target.to_sockaddr(&ss);
    if (i == 0 || !raw) connect(s[i].fd.get(), reinterpret_cast<sockaddr*>(&ss), sl);
    if (raw) continue;
    auto a = s[i].txn(stun::kAllocate, [](stun::Builder& b) {
      uint8_t rt[4] = {17, 0, 0, 0};
      b.add(stun::kRequestedTransport, stun::Bytes(rt, 4));
    });
    if (a.empty()) {
      std::fprintf(stderr, "allocate failed\n");
      return 69;
    }
    auto m = stun::parse(a);
    relayed[i] = *stun::decode_xor_address(*m->find(stun::kXorRelayedAddress), m->tx);
  }
  if (!raw) {
    for (int i = 0; i < 2; ++i) {
      SockAddr peer = relayed[1 - i];
      if (i == 1 && b_side == "none") break;
      bool perm_only = i == 1 && b_side == "permission";
      auto r = s[i].txn(perm_only ? stun::kCreatePermission : stun::kChannelBind, [&](stun::Builder& b) {
        if (!perm_only) b.add_u32(stun::kChannelNumber, 0x40000000u);
        b.add_xor_address(stun::kXorPeerAddress, peer);
      });
      if (r.empty()) {
        std::fprintf(stderr, "channel bind failed\n");
        return 69;
      }
    }
  } else {
    // The forwarder must send to B: tell the caller where B is.
    std::fprintf(stderr, "raw receiver %s\n", relay::bound_address(s[1].fd.get()).to_string().c_str());
  }
  // Receiver on B in a child process, so that sender pacing and receiving
  // do not share one core's loop. It reads with recvmmsg and sleeps in poll.
  int pipefd[2];
  if (pipe(pipefd) < 0) return 70;
  pid_t child = fork();
  if (child == 0) {
    close(pipefd[0]);
    constexpr int kB = 64;
    static uint8_t rbuf[kB][2048];
    mmsghdr rm[kB];
    iovec riov[kB];
    uint64_t got = 0;
    int64_t end = now_ns() + static_cast<int64_t>((secs + 1.0) * 1e9);
    pollfd p{s[1].fd.get(), POLLIN, 0};
    while (now_ns() < end) {
      if (poll(&p, 1, 100) <= 0) continue;
      while (true) {
        for (int i = 0; i < kB; ++i) {
          riov[i] = {rbuf[i], sizeof rbuf[i]};
          rm[i].msg_hdr = {};
          rm[i].msg_hdr.msg_iov = &riov[i];
          rm[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(s[1].fd.get(), rm, kB, MSG_DONTWAIT, nullptr);
        if (n <= 0) break;
        // Count what B should get: ChannelData, or Data indications (0x0017).
        for (int i = 0; i < n; ++i) {
          const uint8_t* b = rbuf[i];
          bool ok = raw || (b_side == "permission" ? rm[i].msg_len >= 20 && b[0] == 0 && b[1] == 0x17
                                                   : rm[i].msg_len >= 4 && (b[0] & 0xC0) == 0x40);
          got += ok;
        }
        if (n < kB) break;
      }
    }
    ssize_t w = write(pipefd[1], &got, sizeof got);
    (void)w;
    _exit(0);
  }
  close(pipefd[1]);
  // Sender: paced in ticks of 100 us; each tick sends what is due with
  // sendmmsg (a burst of RATE/10000 datagrams: 20 at 200k/s) and sleeps to
  // the next tick (absolute deadlines, so oversleeping does not lower the
  // rate). A busy-waiting sender would take a whole core from the relay.
  std::vector<uint8_t> pkt(size + 4, 0xAB);
  stun::write_channel_data_header(pkt.data(), 0x4000, static_cast<uint16_t>(size));
  uint8_t* data = raw ? pkt.data() + 4 : pkt.data();
  size_t len = raw ? size : size + 4;
  constexpr int kB = 64;
  mmsghdr sm[kB];
  iovec siov[kB];
  for (int i = 0; i < kB; ++i) {
    siov[i] = {data, len};
    sm[i].msg_hdr = {};
    sm[i].msg_hdr.msg_iov = &siov[i];
    sm[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t sent = 0;
  int64_t start = now_ns(), end = start + static_cast<int64_t>(secs * 1e9);
  constexpr int64_t kTick = 100000;
  for (int64_t next = start; next < end; next += kTick) {
    timespec ts{static_cast<time_t>(next / 1000000000), static_cast<long>(next % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
    int64_t t = std::min(now_ns(), end);
    uint64_t due = static_cast<uint64_t>(static_cast<double>(t - start) * rate / 1e9);
    while (sent < due) {
      unsigned k = static_cast<unsigned>(std::min<uint64_t>(due - sent, kB));
      int r = sendmmsg(s[0].fd.get(), sm, k, 0);
      if (r <= 0) break;  // ECONNREFUSED and the like: count as not sent
      sent += static_cast<uint64_t>(r);
    }
  }
  uint64_t got = 0;
  ssize_t rd = read(pipefd[0], &got, sizeof got);
  (void)rd;
  std::printf("{\"sent\":%llu,\"received\":%llu,\"loss_pct\":%.4f,\"pps\":%.0f}\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(got),
              sent ? 100.0 * (double(sent) - double(got)) / double(sent) : 0.0,
              double(sent) / secs);
  return 0;
}
