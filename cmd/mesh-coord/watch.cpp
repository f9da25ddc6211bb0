#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common.h"
#include "core/file.h"
#include "netmap/netmap.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_watch(Context& ctx, int argc, char** argv) {
  CLI::App app("Stream this node's network map as JSON lines, one per new serial");
  PeerTarget t;
  std::string cache;
  int wait = 25;
  int count = 0;
  double max_backoff = 30;
  add_peer_options(app, t);
  app.add_option("--cache", cache,
                 "keep the last map in FILE (mode 0600); emitted first when the coordinator is down");
  app.add_option("--wait", wait, "long-poll duration in seconds (1-120)")->capture_default_str();
  app.add_option("--count", count, "exit after N maps (0: run until killed)")->capture_default_str();
  app.add_option("--max-backoff", max_backoff, "longest reconnect delay in seconds")
      ->capture_default_str();
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (wait < 1 || wait > 120) return report(ctx, usage_error("--wait must be 1-120"));
  signal(SIGPIPE, SIG_IGN);
  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  Client cli(c->server, c->ca_file, ctx.log);

  uint64_t last = 0;
  int emitted = 0;
  std::optional<std::string> cached_line;
  if (!cache.empty()) {
    auto j = read_json_file(cache);
    if (j && parse_netmap(*j, cache)) cached_line = dump_json(*j);
    else if (!j && j.status().code() != Exit::NoInput)
      ctx.log.warn("ignoring cache: " + j.status().message());
  }
  auto emit = [&](const Json& j, uint64_t serial) -> bool {
    std::string line = dump_json(j);
    ctx.out << line << "\n" << std::flush;
    if (!ctx.out) return false;
    last = serial;
    ++emitted;
    return true;
  };
  std::mt19937 rng(std::random_device{}());
  double backoff = 0.25;
  bool first = true;
  for (;;) {
    auto r = cli.peer("GET", "/v1/map?since=" + std::to_string(last) + "&wait=" +
                                 std::to_string(first ? 0 : wait),
                      c->node, c->coordinator, "", first ? 30 : wait + 15);
    if (!r) {
      Exit code = r.status().code();
      if (code != Exit::Unavailable && code != Exit::TempFail && code != Exit::IoErr)
        return report(ctx, r.status());
      ctx.log.warn(r.status().message() + "; retrying");
      if (first && cached_line) {
        // Keep the node working while the coordinator is down.
        auto j = parse_json(*cached_line, cache);
        auto m = j ? parse_netmap(*j, cache) : Result<NetMap>(j.status());
        if (m) {
          if (!emit(*j, m->serial)) return report(ctx, io_error("cannot write to standard output"));
          if (count > 0 && emitted >= count) return 0;
        }
        cached_line.reset();
      }
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      std::this_thread::sleep_for(std::chrono::duration<double>(backoff * jitter(rng)));
      backoff = std::min(backoff * 2, max_backoff);
      continue;
    }
    first = false;
    cached_line.reset();
    backoff = 0.25;
    if (r->status == 204) continue;
    auto j = parse_json(r->body, "coordinator map");
    if (!j) return report(ctx, j.status());
    auto m = parse_netmap(*j, "coordinator map");
    if (!m) return report(ctx, m.status());
    if (m->serial == last) continue;
    if (!cache.empty()) {
      Status s = write_file_atomic(cache, dump_json(*j) + "\n", 0600);
      if (!s) ctx.log.warn("cannot write cache: " + s.message());
    }
    if (!emit(*j, m->serial)) return report(ctx, io_error("cannot write to standard output"));
    if (count > 0 && emitted >= count) return 0;
  }
}

}  // namespace mesh::coord
