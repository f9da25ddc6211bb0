// Pure pieces of `mesh-coord watch` (man/mesh-coord.8, watch): the
// reconnect backoff, the event lines of --events and the long-poll
// envelope of GET /v1/map?events=1.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/exit.h"
#include "core/json.h"
#include "core/key.h"
#include "core/status.h"

namespace mesh::coord {

// Reconnect delays: the step starts at `initial` seconds and doubles after
// every failure up to `cap`; each delay is a random fraction in [0.5, 1.0]
// of the current step (so spread watchers do not reconnect in lockstep and
// no delay exceeds `cap`). reset() after a success.
class Backoff {
 public:
  Backoff(double initial, double cap);
  // `u` is uniform in [0, 1] (the caller's random source). Returns the
  // delay in seconds and advances the step.
  double next(double u);
  void reset() { step_ = initial_; }
  double step() const { return step_; }

 private:
  double initial_, cap_, step_;
};

// What `watch` does after a failed request. `http` is the status of the
// answer (0: none came), `code` the failure's exit status. Reconnect: no
// answer (the coordinator is down or restarting), retry soon. Backoff: a
// transient refusal (408, 429, 5xx), retry later and later. Exit: a
// permanent one (401/403: unknown, deleted or disabled peer, or a response
// the coordinator key does not authenticate; 404; other 4xx).
enum class WatchFailure { Reconnect, Backoff, Exit };
WatchFailure classify_watch_failure(int http, Exit code);

// One event line of `watch --events`: a compact JSON object and "\n", at
// most kMaxEventLine bytes, well under PIPE_BUF (4096), so one write(2) of
// it to a pipe is atomic and lines of several writers never interleave.
inline constexpr size_t kMaxEventLine = 2048;
inline constexpr size_t kMaxEventError = 200;  // bytes of an error message kept

std::string map_event_line(uint64_t serial);
std::string punch_event_line(const PublicKey& from, std::string_view name);
// state "up", or "down" with the error (cut to kMaxEventError bytes at a
// UTF-8 character boundary).
std::string coordinator_event_line(bool up, std::string_view error = {});

struct PunchEvent {
  PublicKey from;
  std::string name;
};

// The answer to GET /v1/map?events=1 or ?delta=1: {"map"?: MAP, "delta"?:
// DELTA, "events": [...]} (mesh-netmap(5), Deltas: apply_delta in delta.h).
// Events of other types are skipped (newer coordinators may send more);
// a punch event with a bad key or peer name is a DataErr.
struct WatchBatch {
  std::optional<Json> map, delta;
  std::vector<PunchEvent> punches;
};
Result<WatchBatch> parse_watch_envelope(const Json& j, std::string_view source);

}  // namespace mesh::coord
