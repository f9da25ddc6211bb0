// mesh-relay's TURN/STUN server: sockets, worker threads and signals around
// the turn::Engine state machine. See mesh-relay(1).
//
// Threads: `threads` workers, each with its own epoll, its own SO_REUSEPORT
// socket per listen address (the kernel hashes a client's 5-tuple to one of
// them, so a client's allocation lives in exactly one worker and the packet
// path takes no lock) and the relay sockets of its allocations. UDP is read
// and written with recvmmsg/sendmmsg in batches; ChannelData is forwarded
// in place (header written into the receive buffer's headroom). The calling
// thread handles signals (SIGTERM/SIGINT: stop, SIGHUP: reload credentials,
// SIGUSR1: write stats), the stats file and the metrics endpoint.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/net.h"
#include "core/status.h"
#include "turn/server.h"

namespace mesh::relay {

struct ServeOptions {
  std::vector<SockAddr> listen;           // UDP (and TCP with `tcp`) listen addresses
  std::vector<SockAddr> tls_listen;       // TLS listen addresses (with tls_cert/tls_key)
  bool tcp = false;
  std::string tls_cert, tls_key;
  std::optional<SockAddr> alt_listen;     // RFC 5780 alternate address (pairs with listen[0])
  std::string users_file, secret_file;
  std::string realm = "mesh";
  turn::Config turn;                      // relay_ips empty: the listen addresses
  int threads = 1;
  int socket_buffer = 4 << 20;            // SO_RCVBUF/SO_SNDBUF bytes
  // Wakeup coalescing (microseconds, 0: off): while data flows fast enough
  // to gather two datagrams or more in that time, a worker that finds
  // nothing ready sleeps this long before waiting, so the next wakeup takes
  // a batch rather than one packet (as NIC interrupt moderation does). Adds
  // at most this much latency, only while 10,000 datagrams/s or more flow.
  // At 200 us bench/relay saw 30% less CPU per packet at 25,000 datagrams/s
  // and no loss at 200,000 (some without). The WireGuard loss it once
  // seemed to cause in bench/relay-wg was wireguard-go's 208 KiB socket
  // buffers overflowing on the batches; with the buffers mesh-apply gives
  // it (mesh-apply(8), "Socket buffers") TCP and UDP through the relay are
  // as good or better with it.
  int coalesce_us = 200;
  // TCP/TLS connections: at most max_connections at once (across workers;
  // more are closed at accept), each closed when it has not completed the
  // TLS handshake and sent a whole TURN message within handshake_timeout_s,
  // or has no allocation and has sent nothing for idle_timeout_s.
  int max_connections = 1024;
  int handshake_timeout_s = 10;
  int idle_timeout_s = 120;
  // A coordinator whose revoked relay credentials to follow ("": none).
  std::vector<std::string> revocations_urls;  // coordinator replicas, in order
  std::string stats_file;                 // JSON, rewritten every stats_interval
  int stats_interval_ms = 1000;
  std::optional<SockAddr> metrics;        // HTTP: /metrics (Prometheus), /stats (JSON)
  // Called once per bound listener when ready: "udp 127.0.0.1:34567".
  std::function<void(const std::string&)> on_listening;
};

// Runs until SIGTERM or SIGINT (returns ok) or a fatal setup error. Blocks
// SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread (and so in the
// workers) and takes them through a signalfd.
Status serve(const ServeOptions& opt, Log& log);

}  // namespace mesh::relay
