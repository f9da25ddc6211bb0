// Persistence of the coordinator's state in SQLite (STATE/coord.db).
//
// Durability: WAL journal with synchronous=FULL, so a transaction is on disk
// (fsync'd WAL) before commit returns, and every write the server
// acknowledges survives kill -9 and power loss. Every mutation is one
// transaction: nothing is half-written. The in-memory model is the
// authority at run time; the store is read once at start.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"
#include "core/status.h"

namespace mesh::coord {

struct Event {
  int64_t seq = 0;
  int64_t at = 0;
  std::string actor;   // "admin", "peer:NAME", "setup-key:ID", "system"
  std::string action;  // "peer.join", "policy.set", ...
  std::string target;
  Json detail;
  Json to_json() const;
};

struct StoredPeer {
  Json record;
  uint64_t serial = 0;
  int64_t generated_at = 0;
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // One transaction; commit() fsyncs. rollback() is safe to call after a failure.
  Status begin();
  Status commit();
  void rollback();

  Result<std::optional<std::string>> get_meta(const std::string& key);
  Status set_meta(const std::string& key, const std::string& value);

  Status put_peer(int64_t id, const std::string& name, const std::string& key,
                  const std::string& record);
  Status set_map_serial(int64_t id, uint64_t serial, int64_t generated_at);
  Status delete_peer(int64_t id);
  Result<std::vector<StoredPeer>> load_peers();

  Status put_setup_key(int64_t id, const std::string& hash, const std::string& record);
  Result<std::vector<Json>> load_setup_keys();

  // Named records of other kinds (users, routes, ...): one JSON document per
  // (kind, key). New kinds need no schema change; every store implements these.
  Status put_record(const std::string& kind, const std::string& key, const std::string& record);
  Status delete_record(const std::string& kind, const std::string& key);
  Result<std::vector<std::pair<std::string, Json>>> load_records(const std::string& kind);

  Result<int64_t> add_event(const Event& e);
  Result<std::vector<Event>> events(int64_t after_seq, int64_t limit, const std::string& action);
  // Deletes audit events older than `before_at` (unix seconds; 0: none by
  // age) and all but the newest `keep` (0: none by count). Returns how many
  // went. Sequence numbers are never reused, so `events --after` still works.
  Result<int64_t> prune_events(int64_t before_at, int64_t keep);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Status exec(const std::string& sql);
  Status error(const std::string& what) const;
  sqlite3* db_;
  sqlite3_stmt* serial_stmt_ = nullptr;
};

}  // namespace mesh::coord
