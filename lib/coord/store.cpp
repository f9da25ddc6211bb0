#include "coord/store.h"

#include <sqlite3.h>

#include <nlohmann/json.hpp>

namespace mesh::coord {
namespace {

// A prepared statement, finalised on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  int step() { return sqlite3_step(s_); }
  int64_t i64(int c) { return sqlite3_column_int64(s_, c); }
  std::string text(int c) {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, c))) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};


class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteStore() override;
  Status init();
  std::string describe() const override { return "sqlite:" + path_; }
  Status begin() override;
  Status commit() override;
  void rollback() override;
  bool in_transaction() const override { return in_tx_; }
  Result<std::optional<std::string>> get_meta(const std::string& key) override;
  Status set_meta(const std::string& key, const std::string& value) override;
  Result<std::vector<std::pair<std::string, std::string>>> load_meta() override;
  Status put_peer(int64_t id, const std::string& name, const std::string& key,
                  const std::string& record) override;
  Status set_map_serial(int64_t id, uint64_t serial, int64_t generated_at) override;
  Status delete_peer(int64_t id) override;
  Result<std::vector<StoredPeer>> load_peers() override;
  Status put_setup_key(int64_t id, const std::string& hash, const std::string& record) override;
  Result<std::vector<Json>> load_setup_keys() override;
  Status put_record(const std::string& kind, const std::string& key,
                    const std::string& record) override;
  Status delete_record(const std::string& kind, const std::string& key) override;
  Result<std::vector<std::pair<std::string, Json>>> load_records(const std::string& kind) override;
  Result<std::vector<std::string>> record_kinds() override;
  Result<int64_t> add_event(const Event& e) override;
  Result<std::vector<Event>> events(int64_t after_seq, int64_t limit,
                                    const std::string& action) override;
  Result<int64_t> prune_events(int64_t before_at, int64_t keep) override;
  Status clear() override {
    return exec("DELETE FROM meta; DELETE FROM peers; DELETE FROM map_serials; "
                "DELETE FROM setup_keys; DELETE FROM records; DELETE FROM events;");
  }

 private:
  Status exec(const std::string& sql);
  Status error(const std::string& what) const;
  sqlite3* db_;
  std::string path_;
  sqlite3_stmt* serial_stmt_ = nullptr;
  bool in_tx_ = false;
};

}  // namespace

Status for_each_logged_serial(const Json& what,
                              const std::function<void(uint32_t, uint64_t, int64_t)>& f) {
  try {
    if (what.contains("serials"))  // as written before serial_runs
      for (const auto& [id, v] : what["serials"].items())
        f(static_cast<uint32_t>(std::stoul(id)), v.at(0).get<uint64_t>(), v.at(1).get<int64_t>());
    if (what.contains("serial_runs"))
      for (const auto& run : what["serial_runs"]) {
        uint64_t serial = run.at(0).get<uint64_t>();
        int64_t at = run.at(1).get<int64_t>();
        for (const auto& id : run.at(2)) f(id.get<uint32_t>(), serial, at);
      }
  } catch (const std::exception& e) {
    return Status(Exit::Config, std::string("malformed map serials in the change log: ") + e.what());
  }
  return Status::ok();
}

bool fold_due(int64_t now, int64_t folded_at, int64_t last_change_at) {
  return now - folded_at >= 60'000 && (now - last_change_at >= 5'000 || now - folded_at >= 600'000);
}

Json Event::to_json() const {
  return Json{{"seq", seq},       {"time", at},       {"actor", actor},
              {"action", action}, {"target", target}, {"detail", detail}};
}

SqliteStore::~SqliteStore() {
  sqlite3_finalize(serial_stmt_);
  sqlite3_close_v2(db_);
}

Status SqliteStore::error(const std::string& what) const {
  return io_error(what + ": " + sqlite3_errmsg(db_));
}

Status SqliteStore::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown error";
    sqlite3_free(err);
    return io_error("database: " + m);
  }
  return Status::ok();
}

bool Store::is_postgres(const std::string& spec) {
  return spec.rfind("postgres://", 0) == 0 || spec.rfind("postgresql://", 0) == 0 ||
         spec.find("dbname=") != std::string::npos || spec.find("host=") != std::string::npos;
}

Result<std::unique_ptr<Store>> Store::open(const std::string& spec) {
  if (is_postgres(spec)) return open_postgres_store(spec);
  return open_sqlite_store(spec.rfind("sqlite:", 0) == 0 ? spec.substr(7) : spec);
}

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return Status(Exit::CantCreate, path + ": " + m);
  }
  auto s = std::make_unique<SqliteStore>(db, path);
  MESH_TRY(s->init());
  return std::unique_ptr<Store>(std::move(s));
}

Status SqliteStore::init() {
  sqlite3_busy_timeout(db_, 5000);
  // WAL + synchronous=FULL: the WAL is fsync'd at every commit, so a
  // committed (acknowledged) write survives a crash of the process or host.
  MESH_TRY(exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
  MESH_TRY(exec("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS peers(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
      "  public_key TEXT NOT NULL UNIQUE, record TEXT NOT NULL);"
      // Map serials change for thousands of peers at once (a policy change):
      // a narrow table keeps that transaction small.
      "CREATE TABLE IF NOT EXISTS map_serials(id INTEGER PRIMARY KEY, serial INTEGER NOT NULL,"
      "  at INTEGER NOT NULL);"
      "CREATE TABLE IF NOT EXISTS setup_keys(id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE,"
      "  record TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS records(kind TEXT NOT NULL, key TEXT NOT NULL,"
      "  record TEXT NOT NULL, PRIMARY KEY(kind, key));"
      "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT,"
      "  at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
      "  detail TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS events_action ON events(action);"
      // The audit is pruned by age (prune_events).
      "CREATE INDEX IF NOT EXISTS events_at ON events(at);"));
  MESH_ASSIGN(auto v, get_meta("schema_version"));
  if (v && std::atoi(v->c_str()) > kSchemaVersion)
    return Status(Exit::Config, path_ + ": schema version " + *v +
                                    " is newer than this mesh-coord's (" +
                                    std::to_string(kSchemaVersion) + ")");
  if (!v || std::atoi(v->c_str()) < kSchemaVersion)
    MESH_TRY(set_meta("schema_version", std::to_string(kSchemaVersion)));
  return Status::ok();
}

Status SqliteStore::begin() {
  MESH_TRY(exec("BEGIN IMMEDIATE"));
  in_tx_ = true;
  return Status::ok();
}

Status SqliteStore::commit() {
  Status s = exec("COMMIT");
  if (s) in_tx_ = false;
  return s;
}

void SqliteStore::rollback() {
  (void)exec("ROLLBACK");
  in_tx_ = false;
}

Result<std::vector<std::pair<std::string, std::string>>> SqliteStore::load_meta() {
  Stmt st(db_, "SELECT key, value FROM meta ORDER BY key");
  if (!st.ok()) return error("load_meta");
  std::vector<std::pair<std::string, std::string>> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.emplace_back(st.text(0), st.text(1));
  if (rc != SQLITE_DONE) return error("load_meta");
  return out;
}

Result<std::vector<std::string>> SqliteStore::record_kinds() {
  Stmt st(db_, "SELECT DISTINCT kind FROM records ORDER BY kind");
  if (!st.ok()) return error("record_kinds");
  std::vector<std::string> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.push_back(st.text(0));
  if (rc != SQLITE_DONE) return error("record_kinds");
  return out;
}

Result<std::optional<std::string>> SqliteStore::get_meta(const std::string& key) {
  Stmt st(db_, "SELECT value FROM meta WHERE key=?");
  if (!st.ok()) return error("get_meta");
  st.bind(1, key);
  int rc = st.step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(st.text(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return error("get_meta");
}

Status SqliteStore::set_meta(const std::string& key, const std::string& value) {
  Stmt st(db_, "INSERT INTO meta(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value");
  if (!st.ok()) return error("set_meta");
  st.bind(1, key).bind(2, value);
  return st.step() == SQLITE_DONE ? Status::ok() : error("set_meta");
}

Status SqliteStore::put_peer(int64_t id, const std::string& name, const std::string& key,
                       const std::string& record) {
  Stmt st(db_,
          "INSERT INTO peers(id,name,public_key,record) VALUES(?,?,?,?) ON CONFLICT(id) DO UPDATE "
          "SET name=excluded.name, public_key=excluded.public_key, record=excluded.record");
  if (!st.ok()) return error("put_peer");
  st.bind(1, id).bind(2, name).bind(3, key).bind(4, record);
  return st.step() == SQLITE_DONE ? Status::ok() : error("put_peer");
}

Status SqliteStore::set_map_serial(int64_t id, uint64_t serial, int64_t at) {
  // Prepared once: a policy change writes one row per changed map.
  if (!serial_stmt_ &&
      sqlite3_prepare_v3(db_, "INSERT OR REPLACE INTO map_serials(id,serial,at) VALUES(?,?,?)", -1,
                         SQLITE_PREPARE_PERSISTENT, &serial_stmt_, nullptr) != SQLITE_OK)
    return error("set_map_serial");
  sqlite3_reset(serial_stmt_);
  sqlite3_bind_int64(serial_stmt_, 1, id);
  sqlite3_bind_int64(serial_stmt_, 2, static_cast<int64_t>(serial));
  sqlite3_bind_int64(serial_stmt_, 3, at);
  return sqlite3_step(serial_stmt_) == SQLITE_DONE ? Status::ok() : error("set_map_serial");
}

Status SqliteStore::delete_peer(int64_t id) {
  for (const char* sql : {"DELETE FROM peers WHERE id=?", "DELETE FROM map_serials WHERE id=?"}) {
    Stmt st(db_, sql);
    if (!st.ok()) return error("delete_peer");
    st.bind(1, id);
    if (st.step() != SQLITE_DONE) return error("delete_peer");
  }
  return Status::ok();
}

Result<std::vector<StoredPeer>> SqliteStore::load_peers() {
  Stmt st(db_,
          "SELECT p.record, coalesce(m.serial, 0), coalesce(m.at, 0) FROM peers p "
          "LEFT JOIN map_serials m ON m.id = p.id ORDER BY p.id");
  if (!st.ok()) return error("load_peers");
  std::vector<StoredPeer> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    auto j = parse_json(st.text(0), "peers.record");
    if (!j) return Status(Exit::Config, j.status().message());
    out.push_back({std::move(*j), static_cast<uint64_t>(st.i64(1)), st.i64(2)});
  }
  if (rc != SQLITE_DONE) return error("load_peers");
  return out;
}

Status SqliteStore::put_setup_key(int64_t id, const std::string& hash, const std::string& record) {
  Stmt st(db_,
          "INSERT INTO setup_keys(id,hash,record) VALUES(?,?,?) ON CONFLICT(id) DO UPDATE SET "
          "record=excluded.record");
  if (!st.ok()) return error("put_setup_key");
  st.bind(1, id).bind(2, hash).bind(3, record);
  return st.step() == SQLITE_DONE ? Status::ok() : error("put_setup_key");
}

Result<std::vector<Json>> SqliteStore::load_setup_keys() {
  Stmt st(db_, "SELECT record, hash FROM setup_keys ORDER BY id");
  if (!st.ok()) return error("load_setup_keys");
  std::vector<Json> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    auto j = parse_json(st.text(0), "setup_keys.record");
    if (!j) return Status(Exit::Config, j.status().message());
    (*j)["hash"] = st.text(1);
    out.push_back(std::move(*j));
  }
  if (rc != SQLITE_DONE) return error("load_setup_keys");
  return out;
}

Status SqliteStore::put_record(const std::string& kind, const std::string& key,
                         const std::string& record) {
  Stmt st(db_,
          "INSERT INTO records(kind,key,record) VALUES(?,?,?) ON CONFLICT(kind,key) DO UPDATE SET "
          "record=excluded.record");
  if (!st.ok()) return error("put_record");
  st.bind(1, kind).bind(2, key).bind(3, record);
  return st.step() == SQLITE_DONE ? Status::ok() : error("put_record");
}

Status SqliteStore::delete_record(const std::string& kind, const std::string& key) {
  Stmt st(db_, "DELETE FROM records WHERE kind=? AND key=?");
  if (!st.ok()) return error("delete_record");
  st.bind(1, kind).bind(2, key);
  return st.step() == SQLITE_DONE ? Status::ok() : error("delete_record");
}

Result<std::vector<std::pair<std::string, Json>>> SqliteStore::load_records(const std::string& kind) {
  Stmt st(db_, "SELECT key, record FROM records WHERE kind=? ORDER BY key");
  if (!st.ok()) return error("load_records");
  st.bind(1, kind);
  std::vector<std::pair<std::string, Json>> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    auto j = parse_json(st.text(1), "records.record");
    if (!j) return Status(Exit::Config, j.status().message());
    out.emplace_back(st.text(0), std::move(*j));
  }
  if (rc != SQLITE_DONE) return error("load_records");
  return out;
}

Result<int64_t> SqliteStore::add_event(const Event& e) {
  // seq NULL: AUTOINCREMENT picks the next one.
  Stmt st(db_, "INSERT INTO events(seq,at,actor,action,target,detail) VALUES(nullif(?,0),?,?,?,?,?)");
  if (!st.ok()) return error("add_event");
  st.bind(1, e.seq).bind(2, e.at).bind(3, e.actor).bind(4, e.action).bind(5, e.target)
      .bind(6, dump_json(e.detail));
  if (st.step() != SQLITE_DONE) return error("add_event");
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
}

Result<std::vector<Event>> SqliteStore::events(int64_t after, int64_t limit, const std::string& action) {
  Stmt st(db_,
          "SELECT seq,at,actor,action,target,detail FROM events WHERE seq>? AND (?='' OR "
          "action=? OR action LIKE ? || '.%') ORDER BY seq LIMIT ?");
  if (!st.ok()) return error("events");
  st.bind(1, after).bind(2, action).bind(3, action).bind(4, action).bind(5, limit);
  std::vector<Event> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    Event e;
    e.seq = st.i64(0);
    e.at = st.i64(1);
    e.actor = st.text(2);
    e.action = st.text(3);
    e.target = st.text(4);
    auto j = parse_json(st.text(5), "events.detail");
    e.detail = j ? *j : Json::object();
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return error("events");
  return out;
}

Result<int64_t> SqliteStore::prune_events(int64_t before_at, int64_t keep) {
  int64_t n = 0;
  if (before_at > 0) {
    Stmt st(db_, "DELETE FROM events WHERE at<?");
    if (!st.ok()) return error("prune_events");
    st.bind(1, before_at);
    if (st.step() != SQLITE_DONE) return error("prune_events");
    n += sqlite3_changes(db_);
  }
  if (keep > 0) {
    Stmt st(db_, "DELETE FROM events WHERE seq<=(SELECT MAX(seq) FROM events)-?");
    if (!st.ok()) return error("prune_events");
    st.bind(1, keep);
    if (st.step() != SQLITE_DONE) return error("prune_events");
    n += sqlite3_changes(db_);
  }
  return n;
}

}  // namespace mesh::coord
