// Persistence of the coordinator's state: SQLite (STATE/coord.db, the
// embedded default) or PostgreSQL (mesh-coord serve --store postgres://...,
// shared by replicas).
//
// Durability: SQLite runs a WAL journal with synchronous=FULL, PostgreSQL
// commits with the server's synchronous_commit (on by default), so a
// transaction is on disk before commit returns, and every write the server
// acknowledges survives kill -9 and power loss. Every mutation is one
// transaction: nothing is half-written. The in-memory model is the
// authority at run time; the store is read once at start, and replicas on a
// shared store follow each other through its change log (Change).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
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

// A change another replica committed (PostgreSQL store): its sequence
// number in the change log and what it wrote, as
// {"peers":{ID:RECORD|null}, "serial_runs":[[SERIAL,AT,[ID...]]...] (ascending;
//  older entries: "serials":{ID:[SERIAL,AT]}),
//  "setup_keys":{ID:RECORD}, "meta":{KEY:VALUE}, "records":{KIND:{KEY:RECORD|null}}}
// (members only when written; RECORDs are the stored JSON documents, a
// setup key's with its "hash").
struct Change {
  int64_t seq = 0;
  Json what;
};

// When a replica folds (Store::fold_serials), times in monotonic ms: a fold
// upserts a row per map the log's changes reached (after one reaching
// 100,000 maps, about a second of the database's CPU), so at most once a
// minute and once no change came for 5 s, not amid a burst whose pushes it
// would slow; after 10 minutes at the latest.
bool fold_due(int64_t now, int64_t folded_at, int64_t last_change_at);

// Calls f(id, serial, generated_at) for each map serial a change assigned
// ("serial_runs", or the older "serials"), in the order written: a later
// call for the same id wins. An error for a malformed entry.
Status for_each_logged_serial(const Json& what,
                              const std::function<void(uint32_t, uint64_t, int64_t)>& f);

// Wakes a replica when another one commits (PostgreSQL LISTEN/NOTIFY, on a
// connection of its own). A wake-up is only a hint: the change log is the
// truth, so a replica that reconnects catches up from it.
// It also receives the replicas' broadcasts (Broadcaster).
class ChangeListener {
 public:
  virtual ~ChangeListener() = default;
  // Waits up to `timeout_ms` for a notification. True when a change
  // notification came; returns early (false) when only broadcasts came. An
  // error when the connection is lost (it reconnects on the next call;
  // broadcasts sent meanwhile are lost).
  virtual Result<bool> wait(int timeout_ms) = 0;
  // The broadcasts' payloads received so far (this replica's own included),
  // oldest first; each is returned once.
  virtual std::vector<std::string> take_broadcasts() { return {}; }
};

// Ephemeral messages to every replica's ChangeListener, outside the change
// log and any transaction (PostgreSQL NOTIFY on a channel of its own, on a
// connection of its own): at most once, lost when a listener is
// disconnected, never stored. Payloads up to kMaxBroadcast bytes.
// Thread-safe.
class Broadcaster {
 public:
  virtual ~Broadcaster() = default;
  virtual Status send(const std::string& payload) = 0;
};
inline constexpr size_t kMaxBroadcast = 7900;  // PostgreSQL NOTIFY takes < 8000

// The coordinator's store: SQLite (the embedded default, STATE/coord.db) or
// PostgreSQL (shared by replicas). Same tables and schema version in both.
// Not thread-safe: the caller serialises calls.
class Store {
 public:
  // SPEC: "postgres://...", "postgresql://..." or a libpq key=value DSN
  // (host=... dbname=...) opens PostgreSQL; anything else is the path of a
  // SQLite database file.
  static Result<std::unique_ptr<Store>> open(const std::string& spec);
  static bool is_postgres(const std::string& spec);
  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // "sqlite:PATH" or "postgres://HOST/DB" (no password): for messages.
  virtual std::string describe() const = 0;
  // True when several coordinators may share this store (replicas).
  virtual bool shared() const { return false; }

  // One transaction; commit() makes it durable. rollback() is safe to call
  // after a failure. On a shared store begin() also takes the store-wide
  // writer lock (held until commit or rollback), so writers on different
  // replicas run one at a time and each sees every earlier commit.
  virtual Status begin() = 0;
  virtual Status commit() = 0;
  virtual void rollback() = 0;
  virtual bool in_transaction() const = 0;

  virtual Result<std::optional<std::string>> get_meta(const std::string& key) = 0;
  virtual Status set_meta(const std::string& key, const std::string& value) = 0;
  virtual Result<std::vector<std::pair<std::string, std::string>>> load_meta() = 0;

  virtual Status put_peer(int64_t id, const std::string& name, const std::string& key,
                          const std::string& record) = 0;
  // On a shared store a mutation's serials go to its change log entry only
  // (one row each would cost a change reaching 100,000 maps ~0.8 s in its
  // transaction): the map_serials table is brought up to date from the log
  // by fold_serials, load_peers adds what the log holds beyond it, and
  // prune_changes keeps every change not yet folded. (Writes outside a
  // mutation, migrate's, go to the table.)
  virtual Status set_map_serial(int64_t id, uint64_t serial, int64_t generated_at) = 0;
  virtual Status delete_peer(int64_t id) = 0;
  virtual Result<std::vector<StoredPeer>> load_peers() = 0;
  // Shared stores: writes the serials of the changes logged since the last
  // fold to map_serials, in the open transaction or one of its own (which
  // does not stop writers). Not a change replicas apply.
  virtual Status fold_serials() { return Status::ok(); }

  virtual Status put_setup_key(int64_t id, const std::string& hash, const std::string& record) = 0;
  virtual Result<std::vector<Json>> load_setup_keys() = 0;

  // Named records of other kinds (users, routes, ...): one JSON document per
  // (kind, key). New kinds need no schema change; every store implements these.
  virtual Status put_record(const std::string& kind, const std::string& key,
                            const std::string& record) = 0;
  virtual Status delete_record(const std::string& kind, const std::string& key) = 0;
  virtual Result<std::vector<std::pair<std::string, Json>>> load_records(const std::string& kind) = 0;
  // Every kind that has records (for migration).
  virtual Result<std::vector<std::string>> record_kinds() = 0;

  // e.seq 0: the next sequence number; otherwise that one (migration).
  virtual Result<int64_t> add_event(const Event& e) = 0;
  virtual Result<std::vector<Event>> events(int64_t after_seq, int64_t limit,
                                            const std::string& action) = 0;
  // Deletes audit events older than `before_at` (unix seconds; 0: none by
  // age) and all but the newest `keep` (0: none by count). Returns how many
  // went. Sequence numbers are never reused, so `events --after` still works.
  virtual Result<int64_t> prune_events(int64_t before_at, int64_t keep) = 0;

  // ---- replication (shared stores; a private store has no change log)
  // The newest change's sequence number (0: none).
  virtual Result<int64_t> last_change() { return int64_t{0}; }
  // Changes after `seq`, oldest first, at most `limit`. An error with
  // Exit::NoInput when changes after `seq` were pruned (reload everything).
  virtual Result<std::vector<Change>> changes_after(int64_t, size_t) {
    return std::vector<Change>{};
  }
  // The sequence number of the change the last commit() logged (0: none).
  virtual int64_t committed_change() const { return 0; }
  // Deletes changes older than `before_at` (unix seconds).
  virtual Result<int64_t> prune_changes(int64_t) { return int64_t{0}; }
  // Deletes every row, in the open transaction (migrate --force). On a
  // shared store the transaction is then not logged as a change: replicas
  // must be restarted after it.
  virtual Status clear() = 0;
  virtual Result<std::unique_ptr<ChangeListener>> listen() {
    return Status(Exit::Unavailable, "this store has no change notifications");
  }
  virtual Result<std::unique_ptr<Broadcaster>> broadcaster() {
    return Status(Exit::Unavailable, "this store has no broadcasts");
  }
  // When peers were last seen (unix seconds), shared by the replicas for
  // the ephemeral-peer janitor: not a change (no log entry, no writers'
  // lock), and a newer time never goes back. A private store keeps none.
  virtual Status put_last_seen(const std::vector<std::pair<int64_t, int64_t>>&) {
    return Status::ok();
  }
  // The stored times of `ids` (ids never stored are absent).
  virtual Result<std::map<int64_t, int64_t>> last_seen(const std::vector<int64_t>&) {
    return std::map<int64_t, int64_t>{};
  }

 protected:
  Store() = default;
};

// Implementations (store.cpp, store_pg.cpp).
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);
Result<std::unique_ptr<Store>> open_postgres_store(const std::string& dsn);

// The schema version both stores write to meta "schema_version"; a store
// holding a newer one is refused (written by a newer coordinator).
// 2: a PostgreSQL store's map_serials trails its change log (fold_serials),
// which a version-1 coordinator would not read.
inline constexpr int kSchemaVersion = 2;

}  // namespace mesh::coord
