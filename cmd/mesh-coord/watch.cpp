#include <signal.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common.h"
#include "coord/delta.h"
#include "coord/watch.h"
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
  double max_backoff = 1.5;
  bool events = false;
  add_peer_options(app, t);
  app.add_option("--cache", cache,
                 "keep the last map in FILE (mode 0600); emitted first when the coordinator is down");
  app.add_option("--wait", wait, "long-poll duration in seconds (1-120)")->capture_default_str();
  app.add_option("--count", count, "exit after N maps (0: run until killed)")->capture_default_str();
  app.add_option("--max-backoff", max_backoff, "longest reconnect delay in seconds")
      ->capture_default_str();
  app.add_flag("--events", events,
               "print event lines (map, punch, coordinator) instead of maps; needs --cache");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  if (wait < 1 || wait > 120) return report(ctx, usage_error("--wait must be 1-120"));
  if (!(max_backoff >= 0.01 && max_backoff <= 3600))
    return report(ctx, usage_error("--max-backoff must be 0.01-3600 seconds"));
  if (events && cache.empty())
    return report(ctx, usage_error("--events needs --cache FILE (the maps go there)"));
  signal(SIGPIPE, SIG_IGN);
  auto c = resolve_peer(ctx, t);
  if (!c) return report(ctx, c.status());
  Client cli(c->servers, c->ca_file, ctx.log);

  uint64_t last = 0;
  // The map of serial `last`: what a delta from the coordinator applies to.
  std::optional<Json> held;
  int emitted = 0;
  std::optional<std::string> cached_line;
  if (!cache.empty()) {
    auto j = read_json_file(cache);
    if (j && parse_netmap(*j, cache)) cached_line = dump_json(*j);
    else if (!j && j.status().code() != Exit::NoInput)
      ctx.log.warn("ignoring cache: " + j.status().message());
  }
  // A map: the whole map (default), or with --events the map event once
  // the map is in the cache file.
  auto emit = [&](const Json& j, uint64_t serial) -> bool {
    if (!write_line(ctx, events ? map_event_line(serial) : dump_json(j) + "\n")) return false;
    last = serial;
    held = j;
    ++emitted;
    return true;
  };
  const auto cannot_write = [&] { return report(ctx, io_error("cannot write to standard output")); };

  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  Backoff backoff(0.1, max_backoff);
  // Refusals that may pass (429, 408, 5xx) wait longer each time, up to a
  // minute, so that an overloaded coordinator is not asked again at once.
  Backoff refused(1.0, std::max(max_backoff, 60.0));
  enum class Link { Unknown, Up, Down } link = Link::Unknown;
  auto last_warn = std::chrono::steady_clock::time_point{};
  int failures = 0;
  bool first = true;
  for (;;) {
    // Until a request has succeeded since start or since the last failure,
    // ask without waiting: the first answer tells that the coordinator is
    // back, it does not sit out a long-poll first.
    bool quick = link != Link::Up;
    auto r = cli.peer("GET",
                      "/v1/map?since=" + std::to_string(held ? last : 0) + "&wait=" +
                          std::to_string(quick ? 0 : wait) + "&delta=1" + (events ? "&events=1" : ""),
                      c->node, c->coordinator, "", quick ? 30 : wait + 15);
    if (!r) {
      WatchFailure what = classify_watch_failure(cli.last_status(), r.status().code());
      if (what == WatchFailure::Exit) return report(ctx, r.status());
      // Warn once when the coordinator goes away, then at most once a
      // minute while it stays away, not on every retry.
      auto now = std::chrono::steady_clock::now();
      if (failures++ == 0 || now - last_warn >= std::chrono::minutes(1)) {
        ctx.log.warn(r.status().message() + "; retrying");
        last_warn = now;
      }
      // A refusal is an answer: the coordinator is up, only busy.
      if (what == WatchFailure::Reconnect) {
        if (events && link != Link::Down &&
            !write_line(ctx, coordinator_event_line(false, r.status().message())))
          return cannot_write();
        link = Link::Down;
      }
      if (first && cached_line) {
        // Keep the node working while the coordinator is down.
        auto j = parse_json(*cached_line, cache);
        auto m = j ? parse_netmap(*j, cache) : Result<NetMap>(j.status());
        if (m) {
          if (!emit(*j, m->serial)) return cannot_write();
          if (count > 0 && emitted >= count) return 0;
        }
        cached_line.reset();
      }
      Backoff& b = what == WatchFailure::Backoff ? refused : backoff;
      std::this_thread::sleep_for(std::chrono::duration<double>(b.next(unit(rng))));
      continue;
    }
    first = false;
    cached_line.reset();
    backoff.reset();
    // Quick requests are answered even while long-polls are refused (too
    // many watches): only a long-poll taken again ends a refusal.
    if (!quick) refused.reset();
    if (link == Link::Up) failures = 0;
    if (link != Link::Up) {
      if (link == Link::Down)
        ctx.log.info("reconnected to the coordinator after " + std::to_string(failures) +
                     " failed attempt" + (failures == 1 ? "" : "s"));
      if (events && !write_line(ctx, coordinator_event_line(true))) return cannot_write();
      link = Link::Up;
      failures = 0;
    }
    if (r->status == 204) continue;
    auto body = parse_json(r->body, "coordinator map");
    if (!body) return report(ctx, body.status());
    std::optional<Json> j;
    std::vector<PunchEvent> punches;
    // An envelope; a coordinator that predates deltas answers a watch
    // without events with the bare map.
    if (events || body->contains("events")) {
      auto b = parse_watch_envelope(*body, "coordinator events");
      if (!b) return report(ctx, b.status());
      j = std::move(b->map);
      punches = std::move(b->punches);
      if (b->delta) {
        auto full = held ? apply_delta(*held, *b->delta, "coordinator delta")
                         : Result<Json>(data_error("coordinator delta: no map held"));
        if (full) {
          j = std::move(*full);
        } else {
          // Lost track (mesh-netmap(5), Deltas): the whole map next time.
          ctx.log.warn(full.status().message() + "; asking for the whole map");
          held.reset();
        }
      }
    } else {
      j = std::move(*body);
    }
    if (j) {
      auto m = parse_netmap(*j, "coordinator map");
      if (!m) return report(ctx, m.status());
      if (Status s = check_map_overlay(*j); !s) return report(ctx, s);
      if (m->serial != last) {
        if (!cache.empty()) {
          Status s = write_file_atomic(cache, dump_json(*j) + "\n", 0600);
          // With --events the cache is where the map goes: a map event for
          // a map that is not in it would be a lie.
          if (!s && events) return report(ctx, s);
          if (!s) ctx.log.warn("cannot write cache: " + s.message());
        }
        if (!emit(*j, m->serial)) return cannot_write();
      }
    }
    for (const auto& p : punches)
      if (!write_line(ctx, punch_event_line(p.from, p.name))) return cannot_write();
    if (count > 0 && emitted >= count) return 0;
  }
}

}  // namespace mesh::coord
