#include "coord/watch.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "coord/policy.h"

namespace mesh::coord {

Backoff::Backoff(double initial, double cap)
    : initial_(std::min(initial, cap)), cap_(cap), step_(initial_) {}

double Backoff::next(double u) {
  double d = step_ * (0.5 + 0.5 * std::clamp(u, 0.0, 1.0));
  step_ = std::min(step_ * 2, cap_);
  return d;
}

WatchFailure classify_watch_failure(int http, Exit code) {
  if (http == 0)
    return code == Exit::Unavailable || code == Exit::TempFail || code == Exit::IoErr
               ? WatchFailure::Reconnect
               : WatchFailure::Exit;
  if (http == 408 || http == 429 || http >= 500) return WatchFailure::Backoff;
  return WatchFailure::Exit;
}

std::string map_event_line(uint64_t serial) {
  return dump_json(Json{{"event", "map"}, {"serial", serial}}) + "\n";
}

std::string punch_event_line(const PublicKey& from, std::string_view name) {
  return dump_json(Json{{"event", "punch"}, {"from", from.to_base64()}, {"name", name}}) + "\n";
}

std::string coordinator_event_line(bool up, std::string_view error) {
  Json j{{"event", "coordinator"}, {"state", up ? "up" : "down"}};
  if (!up) {
    if (error.size() > kMaxEventError) {
      size_t n = kMaxEventError;
      // Do not cut a UTF-8 sequence: back up over continuation bytes.
      while (n > 0 && (static_cast<unsigned char>(error[n]) & 0xC0) == 0x80) --n;
      error = error.substr(0, n);
    }
    j["error"] = error;
  }
  return dump_json(j) + "\n";
}

Result<WatchBatch> parse_watch_envelope(const Json& j, std::string_view source) {
  JsonView v(j, std::string(source));
  if (!j.is_object()) return v.error("expected an object {\"map\", \"events\"}");
  WatchBatch b;
  if (j.contains("map")) b.map = j.at("map");
  if (j.contains("delta")) b.delta = j.at("delta");
  if (b.map && b.delta) return v.error("both a map and a delta");
  MESH_ASSIGN(auto evs, v.field("events"));
  MESH_ASSIGN(auto els, evs.elements());
  for (const auto& e : els) {
    MESH_ASSIGN(auto type, e.get_string("type"));
    if (type != "punch") continue;
    MESH_ASSIGN(auto from, e.get_string("from"));
    auto k = PublicKey::from_base64(from);
    if (!k) return e.error("from: " + k.status().message());
    MESH_ASSIGN(auto name, e.get_string("name"));
    if (!valid_name(name)) return e.error("name: invalid peer name");
    b.punches.push_back(PunchEvent{*k, std::move(name)});
  }
  return b;
}

}  // namespace mesh::coord
