// The PostgreSQL store (mesh-coord serve --store postgres://...), shared by
// coordinator replicas. Same tables as the SQLite store, plus the change
// log replicas follow:
//
//   changes(seq, at, what)   one row per committed mutation, written in its
//                            transaction; `what` is a Change's JSON.
//   peer_seen(id, at)        when each peer was last seen by any replica
//                            (Store::put_last_seen), written outside the
//                            change log.
//
// Broadcasts (punch requests) are NOTIFYs on a second channel, sent on a
// connection of their own, so they neither wait for nor join a writer's
// transaction.
//
// Writers serialise on a transaction-scoped advisory lock taken by begin():
// a replica holding it sees every earlier commit, so it catches up from the
// change log, validates and allocates (setup-key use counts, addresses,
// names, serials) against the latest state, and commits before the next
// writer starts. Sequence numbers of the change log therefore follow commit
// order. NOTIFY (delivered at commit) wakes the other replicas' listeners.
#include <libpq-fe.h>
#include <poll.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <nlohmann/json.hpp>

#include "coord/store.h"

namespace mesh::coord {
namespace {

// Any fixed 64-bit number: the key of the writers' advisory lock.
constexpr const char* kWriterLock = "SELECT pg_advisory_xact_lock(7306086744577814845)";
// Folds (fold_serials) take their own: one at a time, without stopping writers.
constexpr const char* kFoldLock = "SELECT pg_try_advisory_xact_lock(7306086744577814846)";
constexpr const char* kChannel = "mesh_coord_changes";
constexpr const char* kBroadcastChannel = "mesh_coord_broadcast";

struct ResultDel {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, ResultDel>;

struct ConnDel {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDel>;

// "postgres://user:secret@host/db" -> "postgres://user@host/db": messages
// never carry the password.
std::string redact(const std::string& dsn) {
  auto scheme = dsn.find("://");
  if (scheme != std::string::npos) {
    auto at = dsn.find('@', scheme + 3);
    auto colon = dsn.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at)
      return dsn.substr(0, colon) + dsn.substr(at);
    return dsn;
  }
  std::string out;
  size_t i = 0;
  while (i < dsn.size()) {
    size_t j = dsn.find(' ', i);
    std::string part = dsn.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (part.rfind("password=", 0) != 0) out += (out.empty() ? "" : " ") + part;
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

// Array parameters are sent as text, {1,2,3}: this builds the inside.
void append_csv(std::string& list, const std::string& v) {
  if (!list.empty()) list += ',';
  list += v;
}

// The connection's last error, without libpq's trailing newline.
std::string pq_error(PGconn* c) {
  std::string m = PQerrorMessage(c);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

Result<Conn> connect(const std::string& dsn) {
  Conn c(PQconnectdb(dsn.c_str()));
  if (!c) return Status(Exit::Unavailable, redact(dsn) + ": out of memory");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    return Status(Exit::Unavailable, redact(dsn) + ": " + pq_error(c.get()));
  }
  // Quiet NOTICEs ("relation already exists, skipping") off stderr.
  PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
  return c;
}

class PgStore final : public Store {
 public:
  PgStore(Conn c, std::string dsn) : c_(std::move(c)), dsn_(std::move(dsn)) {}
  Status init();
  std::string describe() const override { return redact(dsn_); }
  bool shared() const override { return true; }

  Status begin() override {
    if (PQstatus(c_.get()) != CONNECTION_OK) PQreset(c_.get());
    MESH_TRY(run("BEGIN", {}, "begin"));
    in_tx_ = true;
    pending_ = Json::object();
    serial_runs_.clear();
    Status s = run(kWriterLock, {}, "writer lock");
    if (!s) rollback();
    return s;
  }

  Status commit() override {
    committed_ = 0;
    MESH_TRY(flush_serials());
    log_serial_runs();
    if (!pending_.empty()) {
      auto r = query("INSERT INTO changes(at, what) VALUES(extract(epoch from now())::bigint, $1) "
                     "RETURNING seq",
                     {dump_json(pending_)}, "change log");
      if (!r) return r.status();
      int64_t seq = std::atoll(PQgetvalue(r->get(), 0, 0));
      MESH_TRY(run(std::string("NOTIFY ") + kChannel + ", '" + std::to_string(seq) + "'", {},
                   "notify"));
      committed_ = seq;
    }
    Status s = run("COMMIT", {}, "commit");
    in_tx_ = false;
    bulk_ = false;
    pending_ = Json::object();
    if (!s) committed_ = 0;
    return s;
  }

  void rollback() override {
    serial_runs_.clear();
    serial_ids_.clear();
    serial_values_.clear();
    serial_ats_.clear();
    (void)run("ROLLBACK", {}, "rollback");
    in_tx_ = false;
    bulk_ = false;
    pending_ = Json::object();
  }
  bool in_transaction() const override { return in_tx_; }

  Result<std::optional<std::string>> get_meta(const std::string& key) override {
    MESH_ASSIGN(auto r, query("SELECT value FROM meta WHERE key=$1", {key}, "get_meta"));
    if (PQntuples(r.get()) == 0) return std::optional<std::string>();
    return std::optional<std::string>(text(r, 0, 0));
  }

  Status set_meta(const std::string& key, const std::string& value) override {
    MESH_TRY(run("INSERT INTO meta(key,value) VALUES($1,$2) ON CONFLICT(key) DO UPDATE SET "
                 "value=excluded.value",
                 {key, value}, "set_meta"));
    log()["meta"][key] = value;
    return Status::ok();
  }

  Result<std::vector<std::pair<std::string, std::string>>> load_meta() override {
    MESH_ASSIGN(auto r, query("SELECT key, value FROM meta ORDER BY key", {}, "load_meta"));
    std::vector<std::pair<std::string, std::string>> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) out.emplace_back(text(r, i, 0), text(r, i, 1));
    return out;
  }

  Status put_peer(int64_t id, const std::string& name, const std::string& key,
                  const std::string& record) override {
    MESH_TRY(run("INSERT INTO peers(id,name,public_key,record) VALUES($1,$2,$3,$4) ON CONFLICT(id) "
                 "DO UPDATE SET name=excluded.name, public_key=excluded.public_key, "
                 "record=excluded.record",
                 {std::to_string(id), name, key, record}, "put_peer"));
    MESH_ASSIGN(auto j, parse_json(record, "peer record"));
    log()["peers"][std::to_string(id)] = std::move(j);
    return Status::ok();
  }

  // A mutation's serials go to its change log entry (store.h); migrate's
  // (bulk_) to the table, batched in one statement (flush_serials).
  Status set_map_serial(int64_t id, uint64_t serial, int64_t at) override {
    if (!bulk_) {
      serial_runs_[{serial, at}].push_back(id);
      return Status::ok();
    }
    queue_serial_row(id, serial, at);
    return Status::ok();
  }

  void queue_serial_row(int64_t id, uint64_t serial, int64_t at) {
    append_csv(serial_ids_, std::to_string(id));
    append_csv(serial_values_, std::to_string(serial));
    append_csv(serial_ats_, std::to_string(at));
  }

  // A mutation gives all the maps it changes one serial: the log carries
  // them as runs [SERIAL, AT, [ID...]] (ascending, so a later serial for
  // the same id wins), not an object of 100,000 keys for a change that
  // reaches every map.
  void log_serial_runs() {
    if (serial_runs_.empty()) return;
    Json runs = Json::array();
    for (auto& [k, ids] : serial_runs_) runs.push_back(Json::array({k.first, k.second, std::move(ids)}));
    pending_["serial_runs"] = std::move(runs);
    serial_runs_.clear();
  }

  Status flush_serials() {
    if (serial_ids_.empty()) return Status::ok();
    std::vector<std::string> p{"{" + serial_ids_ + "}", "{" + serial_values_ + "}",
                               "{" + serial_ats_ + "}"};
    serial_ids_.clear();
    serial_values_.clear();
    serial_ats_.clear();
    // Last write per id wins, as row by row would; a peer deleted since
    // gets no row.
    return run("INSERT INTO map_serials(id,serial,at) SELECT DISTINCT ON (id) id, serial, at FROM "
               "unnest($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS t(id, serial, at, n) "
               "WHERE EXISTS (SELECT 1 FROM peers p WHERE p.id = t.id) "
               "ORDER BY id, n DESC ON CONFLICT(id) DO UPDATE SET serial=excluded.serial, at=excluded.at",
               p, "set_map_serial");
  }

  Status delete_peer(int64_t id) override {
    MESH_TRY(flush_serials());
    MESH_TRY(run("DELETE FROM peers WHERE id=$1", {std::to_string(id)}, "delete_peer"));
    MESH_TRY(run("DELETE FROM map_serials WHERE id=$1", {std::to_string(id)}, "delete_peer"));
    MESH_TRY(run("DELETE FROM peer_seen WHERE id=$1", {std::to_string(id)}, "delete_peer"));
    log()["peers"][std::to_string(id)] = nullptr;
    return Status::ok();
  }

  // The table's serials, then the change log's beyond the last fold, read
  // in one snapshot: a serial newer than the records read would let a map
  // keep it while its content changes.
  Result<std::vector<StoredPeer>> load_peers() override {
    MESH_TRY(flush_serials());
    const bool own = !in_tx_;
    if (own) MESH_TRY(run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", {}, "load_peers"));
    auto r = load_peers_in_snapshot();
    if (own) (void)run("COMMIT", {}, "load_peers");
    return r;
  }

  Result<std::vector<StoredPeer>> load_peers_in_snapshot() {
    MESH_ASSIGN(auto r, query("SELECT p.record, coalesce(m.serial, 0), coalesce(m.at, 0), p.id "
                              "FROM peers p LEFT JOIN map_serials m ON m.id = p.id ORDER BY p.id",
                              {}, "load_peers"));
    std::vector<StoredPeer> out;
    std::unordered_map<int64_t, size_t> at_row;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      MESH_ASSIGN(auto j, parse_json(text(r, i, 0), "peers.record"));
      out.push_back({std::move(j), std::strtoull(PQgetvalue(r.get(), i, 1), nullptr, 10),
                     std::atoll(PQgetvalue(r.get(), i, 2))});
      at_row[std::atoll(PQgetvalue(r.get(), i, 3))] = out.size() - 1;
    }
    MESH_ASSIGN(int64_t folded, folded_through());
    MESH_TRY(logged_serials_after(folded, [&](uint32_t id, uint64_t serial, int64_t at) {
                                    auto it = at_row.find(id);
                                    if (it == at_row.end()) return;  // deleted since
                                    out[it->second].serial = serial;
                                    out[it->second].generated_at = at;
                                  }).status());
    return out;
  }

  // Outside a transaction, not under the writers' lock: a fold of 100,000
  // rows takes about a second, which writers need not wait for. Mutations
  // write no map_serials row (a deletion removes one: a fold may leave a
  // deleted peer's row behind, never read), and a mark that lags the rows
  // only makes load_peers read more of the log. Another replica folding:
  // nothing to do.
  Status fold_serials() override {
    if (in_tx_) return fold_serials_locked();
    MESH_TRY(run("BEGIN", {}, "fold_serials"));
    auto got = query(kFoldLock, {}, "fold_serials");
    Status s = got ? Status::ok() : got.status();
    if (s && std::string_view(PQgetvalue(got->get(), 0, 0)) == "t") s = fold_serials_locked();
    if (s) s = run("COMMIT", {}, "fold_serials");
    if (!s) rollback();  // also drops the rows queued for flush_serials
    return s;
  }

  // Every serial logged after the last fold, last one per id, in one
  // statement; then the mark moves to the newest change read.
  Status fold_serials_locked() {
    MESH_ASSIGN(int64_t folded, folded_through());
    std::unordered_map<uint32_t, std::pair<uint64_t, int64_t>> last;
    MESH_ASSIGN(int64_t through,
                logged_serials_after(folded, [&](uint32_t id, uint64_t serial, int64_t at) {
                  last[id] = {serial, at};
                }));
    if (through == folded) return Status::ok();
    for (const auto& [id, v] : last) queue_serial_row(id, v.first, v.second);
    MESH_TRY(flush_serials());
    return run("INSERT INTO meta(key,value) VALUES('map_serials_folded',$1) ON CONFLICT(key) DO "
               "UPDATE SET value=excluded.value",
               {std::to_string(through)}, "fold_serials");
  }

  // Without a mark the table is a version-1 coordinator's, which wrote
  // every serial to it: complete through the log, pruned part included.
  Result<int64_t> folded_through() {
    MESH_ASSIGN(auto v, get_meta("map_serials_folded"));
    if (v) return std::atoll(v->c_str());
    MESH_ASSIGN(auto pruned, get_meta("changes_pruned_through"));
    return pruned ? std::atoll(pruned->c_str()) : int64_t{0};
  }

  // Calls f for each serial logged after change `after`, oldest first.
  // Returns the newest change read (`after` when none).
  Result<int64_t> logged_serials_after(int64_t after,
                                       const std::function<void(uint32_t, uint64_t, int64_t)>& f) {
    for (;;) {
      MESH_ASSIGN(auto batch, changes_after(after, 256));
      if (batch.empty()) return after;
      for (const auto& c : batch) {
        MESH_TRY(for_each_logged_serial(c.what, f));
        after = c.seq;
      }
    }
  }

  Status put_setup_key(int64_t id, const std::string& hash, const std::string& record) override {
    MESH_TRY(run("INSERT INTO setup_keys(id,hash,record) VALUES($1,$2,$3) ON CONFLICT(id) DO UPDATE "
                 "SET record=excluded.record",
                 {std::to_string(id), hash, record}, "put_setup_key"));
    MESH_ASSIGN(auto j, parse_json(record, "setup key record"));
    j["hash"] = hash;
    log()["setup_keys"][std::to_string(id)] = std::move(j);
    return Status::ok();
  }

  Result<std::vector<Json>> load_setup_keys() override {
    MESH_ASSIGN(auto r, query("SELECT record, hash FROM setup_keys ORDER BY id", {}, "load_setup_keys"));
    std::vector<Json> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      MESH_ASSIGN(auto j, parse_json(text(r, i, 0), "setup_keys.record"));
      j["hash"] = text(r, i, 1);
      out.push_back(std::move(j));
    }
    return out;
  }

  Status put_record(const std::string& kind, const std::string& key,
                    const std::string& record) override {
    MESH_TRY(run("INSERT INTO records(kind,key,record) VALUES($1,$2,$3) ON CONFLICT(kind,key) DO "
                 "UPDATE SET record=excluded.record",
                 {kind, key, record}, "put_record"));
    MESH_ASSIGN(auto j, parse_json(record, "record"));
    log()["records"][kind][key] = std::move(j);
    return Status::ok();
  }

  Status delete_record(const std::string& kind, const std::string& key) override {
    MESH_TRY(run("DELETE FROM records WHERE kind=$1 AND key=$2", {kind, key}, "delete_record"));
    log()["records"][kind][key] = nullptr;
    return Status::ok();
  }

  Result<std::vector<std::pair<std::string, Json>>> load_records(const std::string& kind) override {
    MESH_ASSIGN(auto r, query("SELECT key, record FROM records WHERE kind=$1 ORDER BY key", {kind},
                              "load_records"));
    std::vector<std::pair<std::string, Json>> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      MESH_ASSIGN(auto j, parse_json(text(r, i, 1), "records.record"));
      out.emplace_back(text(r, i, 0), std::move(j));
    }
    return out;
  }

  Result<std::vector<std::string>> record_kinds() override {
    MESH_ASSIGN(auto r, query("SELECT DISTINCT kind FROM records ORDER BY kind", {}, "record_kinds"));
    std::vector<std::string> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) out.push_back(text(r, i, 0));
    return out;
  }

  Result<int64_t> add_event(const Event& e) override {
    std::vector<std::string> p{std::to_string(e.at), e.actor, e.action, e.target,
                               dump_json(e.detail)};
    if (e.seq != 0) {
      // Migration keeps sequence numbers; the sequence moves past them.
      p.push_back(std::to_string(e.seq));
      MESH_TRY(run("INSERT INTO events(at,actor,action,target,detail,seq) VALUES($1,$2,$3,$4,$5,$6)",
                   p, "add_event"));
      MESH_TRY(run("SELECT setval(pg_get_serial_sequence('events','seq'), "
                   "greatest($1::bigint, (SELECT last_value FROM events_seq_seq)))",
                   {std::to_string(e.seq)}, "add_event"));
      return e.seq;
    }
    MESH_ASSIGN(auto r, query("INSERT INTO events(at,actor,action,target,detail) "
                              "VALUES($1,$2,$3,$4,$5) RETURNING seq",
                              p, "add_event"));
    return static_cast<int64_t>(std::atoll(PQgetvalue(r.get(), 0, 0)));
  }

  Result<std::vector<Event>> events(int64_t after, int64_t limit, const std::string& action) override {
    MESH_ASSIGN(auto r, query("SELECT seq,at,actor,action,target,detail FROM events WHERE seq>$1 AND "
                              "($2='' OR action=$2 OR action LIKE $2 || '.%') ORDER BY seq LIMIT $3",
                              {std::to_string(after), action, std::to_string(limit)}, "events"));
    std::vector<Event> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      Event e;
      e.seq = std::atoll(PQgetvalue(r.get(), i, 0));
      e.at = std::atoll(PQgetvalue(r.get(), i, 1));
      e.actor = text(r, i, 2);
      e.action = text(r, i, 3);
      e.target = text(r, i, 4);
      auto j = parse_json(text(r, i, 5), "events.detail");
      e.detail = j ? *j : Json::object();
      out.push_back(std::move(e));
    }
    return out;
  }

  Result<int64_t> prune_events(int64_t before_at, int64_t keep) override {
    int64_t n = 0;
    if (before_at > 0) {
      MESH_ASSIGN(auto r, query("DELETE FROM events WHERE at<$1", {std::to_string(before_at)},
                                "prune_events"));
      n += std::atoll(PQcmdTuples(r.get()));
    }
    if (keep > 0) {
      MESH_ASSIGN(auto r, query("DELETE FROM events WHERE seq<=(SELECT max(seq) FROM events)-$1",
                                {std::to_string(keep)}, "prune_events"));
      n += std::atoll(PQcmdTuples(r.get()));
    }
    return n;
  }

  Result<int64_t> last_change() override {
    MESH_ASSIGN(auto r, query("SELECT coalesce(max(seq), 0) FROM changes", {}, "last_change"));
    return static_cast<int64_t>(std::atoll(PQgetvalue(r.get(), 0, 0)));
  }

  Result<std::vector<Change>> changes_after(int64_t seq, size_t limit) override {
    if (PQstatus(c_.get()) != CONNECTION_OK) PQreset(c_.get());
    MESH_ASSIGN(auto pr, query("SELECT value FROM meta WHERE key='changes_pruned_through'", {},
                               "changes"));
    if (PQntuples(pr.get()) == 1 && std::atoll(PQgetvalue(pr.get(), 0, 0)) > seq)
      return Status(Exit::NoInput, "the change log after " + std::to_string(seq) + " was pruned");
    MESH_ASSIGN(auto r, query("SELECT seq, what FROM changes WHERE seq>$1 ORDER BY seq LIMIT $2",
                              {std::to_string(seq), std::to_string(limit)}, "changes"));
    std::vector<Change> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      MESH_ASSIGN(auto j, parse_json(text(r, i, 1), "changes.what"));
      out.push_back({std::atoll(PQgetvalue(r.get(), i, 0)), std::move(j)});
    }
    return out;
  }

  int64_t committed_change() const override { return committed_; }

  Result<int64_t> prune_changes(int64_t before_at) override {
    // Under the writer lock, so the mark and the deletion are one step for
    // every reader.
    MESH_TRY(begin());
    // Changes not yet folded hold the only copy of their serials.
    auto r = query("WITH gone AS (DELETE FROM changes WHERE at<$1 AND seq<(SELECT max(seq) FROM "
                   "changes) AND seq<=coalesce((SELECT value::bigint FROM meta WHERE "
                   "key='map_serials_folded'), 0) RETURNING seq) "
                   "SELECT count(*), coalesce(max(seq), 0) FROM gone",
                   {std::to_string(before_at)}, "prune_changes");
    if (!r) {
      rollback();
      return r.status();
    }
    int64_t n = std::atoll(PQgetvalue(r->get(), 0, 0));
    int64_t through = std::atoll(PQgetvalue(r->get(), 0, 1));
    if (n > 0) {
      Status s = run("INSERT INTO meta(key,value) VALUES('changes_pruned_through',$1) ON "
                     "CONFLICT(key) DO UPDATE SET value=excluded.value",
                     {std::to_string(through)}, "prune_changes");
      if (!s) {
        rollback();
        return s;
      }
    }
    pending_ = Json::object();  // pruning is not a change replicas apply
    MESH_TRY(commit());
    return n;
  }

  Status clear() override {
    MESH_TRY(run("TRUNCATE meta, peers, map_serials, setup_keys, records, events, changes, "
                 "peer_seen RESTART IDENTITY",
                 {}, "clear"));
    bulk_ = true;
    pending_ = Json::object();
    return Status::ok();
  }

  Result<std::unique_ptr<ChangeListener>> listen() override;
  Result<std::unique_ptr<Broadcaster>> broadcaster() override;

  Status put_last_seen(const std::vector<std::pair<int64_t, int64_t>>& seen) override {
    if (seen.empty()) return Status::ok();
    std::string ids, ats;
    for (const auto& [id, at] : seen) {
      append_csv(ids, std::to_string(id));
      append_csv(ats, std::to_string(at));
    }
    if (PQstatus(c_.get()) != CONNECTION_OK) PQreset(c_.get());
    // Peers deleted meanwhile are skipped (no row for a peer that is gone).
    return run("INSERT INTO peer_seen(id, at) SELECT t.id, max(t.at) FROM "
               "unnest($1::bigint[], $2::bigint[]) AS t(id, at) "
               "WHERE t.id IN (SELECT id FROM peers) GROUP BY t.id "
               "ON CONFLICT(id) DO UPDATE SET at=greatest(peer_seen.at, excluded.at)",
               {"{" + ids + "}", "{" + ats + "}"}, "put_last_seen");
  }

  Result<std::map<int64_t, int64_t>> last_seen(const std::vector<int64_t>& ids) override {
    std::map<int64_t, int64_t> out;
    if (ids.empty()) return out;
    std::string list;
    for (int64_t id : ids) append_csv(list, std::to_string(id));
    MESH_ASSIGN(auto r, query("SELECT id, at FROM peer_seen WHERE id = ANY($1::bigint[])",
                              {"{" + list + "}"}, "last_seen"));
    for (int i = 0; i < PQntuples(r.get()); ++i)
      out[std::atoll(PQgetvalue(r.get(), i, 0))] = std::atoll(PQgetvalue(r.get(), i, 1));
    return out;
  }

 private:
  // What this transaction changed, for the change log (not after clear()).
  Json& log() { return bulk_ ? scratch_ = Json::object() : pending_; }

  Result<Res> query(const std::string& sql, const std::vector<std::string>& params,
                    const char* what) {
    std::vector<const char*> v;
    for (const auto& p : params) v.push_back(p.c_str());
    // Without parameters PQexec, which also runs several statements (schema).
    Res r(v.empty() ? PQexec(c_.get(), sql.c_str())
                    : PQexecParams(c_.get(), sql.c_str(), static_cast<int>(v.size()), nullptr,
                                   v.data(), nullptr, nullptr, 0));
    auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      return Status(Exit::IoErr, std::string("database: ") + what + ": " + pq_error(c_.get()));
    }
    return r;
  }

  Status run(const std::string& sql, const std::vector<std::string>& params, const char* what) {
    return query(sql, params, what).status();
  }

  static std::string text(const Res& r, int row, int col) {
    return std::string(PQgetvalue(r.get(), row, col),
                       static_cast<size_t>(PQgetlength(r.get(), row, col)));
  }

  Conn c_;
  std::string dsn_;
  bool in_tx_ = false;
  Json pending_ = Json::object();
  Json scratch_;
  std::string serial_ids_, serial_values_, serial_ats_;  // pending, comma-separated
  std::map<std::pair<uint64_t, int64_t>, std::vector<int64_t>> serial_runs_;  // for the change log
  bool bulk_ = false;
  int64_t committed_ = 0;
};

Status PgStore::init() {
  // Replicas starting together create the schema one at a time.
  MESH_TRY(begin());
  Status s = run(
      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS peers(id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
      "  public_key TEXT NOT NULL UNIQUE, record TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS map_serials(id BIGINT PRIMARY KEY, serial BIGINT NOT NULL,"
      "  at BIGINT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS setup_keys(id BIGINT PRIMARY KEY, hash TEXT NOT NULL UNIQUE,"
      "  record TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS records(kind TEXT NOT NULL, key TEXT NOT NULL,"
      "  record TEXT NOT NULL, PRIMARY KEY(kind, key));"
      "CREATE TABLE IF NOT EXISTS events(seq BIGSERIAL PRIMARY KEY,"
      "  at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
      "  detail TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS events_action ON events(action);"
      "CREATE INDEX IF NOT EXISTS events_at ON events(at);"
      "CREATE TABLE IF NOT EXISTS changes(seq BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL,"
      "  what TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS changes_at ON changes(at);"
      "CREATE TABLE IF NOT EXISTS peer_seen(id BIGINT PRIMARY KEY, at BIGINT NOT NULL);",
      {}, "schema");
  auto v = s ? get_meta("schema_version") : Result<std::optional<std::string>>(s);
  if (!v) {
    rollback();
    return v.status();
  }
  if (*v && std::atoi((*v)->c_str()) > kSchemaVersion) {
    rollback();
    return Status(Exit::Config, describe() + ": schema version " + **v +
                                    " is newer than this mesh-coord's (" +
                                    std::to_string(kSchemaVersion) + ")");
  }
  if (!*v || std::atoi((*v)->c_str()) < kSchemaVersion) {
    if (Status w = set_meta("schema_version", std::to_string(kSchemaVersion)); !w) {
      rollback();
      return w;
    }
  }
  pending_ = Json::object();
  return commit();
}

class PgListener final : public ChangeListener {
 public:
  explicit PgListener(std::string dsn) : dsn_(std::move(dsn)) {}

  Result<bool> wait(int timeout_ms) override {
    if (!c_ || PQstatus(c_.get()) != CONNECTION_OK) {
      c_.reset();
      MESH_ASSIGN(c_, connect(dsn_));
      std::string sql = std::string("LISTEN ") + kChannel + "; LISTEN " + kBroadcastChannel;
      Res r(PQexec(c_.get(), sql.c_str()));
      if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        c_.reset();
        return Status(Exit::Unavailable, "LISTEN failed");
      }
      // Changes may have come while we were away: the caller catches up.
      return true;
    }
    bool got = drain();
    if (got || !broadcasts_.empty()) return got;
    pollfd p{PQsocket(c_.get()), POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0) return false;
    if (n == 0) return false;
    if (!PQconsumeInput(c_.get())) {
      c_.reset();
      return Status(Exit::Unavailable, "change notifications: connection lost");
    }
    return drain();
  }

 private:
  bool drain() {
    bool got = false;
    while (PGnotify* n = PQnotifies(c_.get())) {
      if (std::string_view(n->relname) == kBroadcastChannel)
        broadcasts_.emplace_back(n->extra);
      else
        got = true;
      PQfreemem(n);
    }
    return got;
  }
  std::vector<std::string> take_broadcasts() override { return std::exchange(broadcasts_, {}); }
  std::string dsn_;
  Conn c_;
  std::vector<std::string> broadcasts_;
};

class PgBroadcaster final : public Broadcaster {
 public:
  explicit PgBroadcaster(std::string dsn) : dsn_(std::move(dsn)) {}

  Status send(const std::string& payload) override {
    if (payload.size() > kMaxBroadcast)
      return Status(Exit::Software, "broadcast of " + std::to_string(payload.size()) + " bytes");
    std::lock_guard lk(mu_);
    if (!c_ || PQstatus(c_.get()) != CONNECTION_OK) {
      // A database that is down would make every sender wait for a connect
      // timeout: one attempt per few seconds.
      auto now = std::chrono::steady_clock::now();
      if (now < retry_at_) return Status(Exit::Unavailable, "broadcasts: database unavailable");
      retry_at_ = now + std::chrono::seconds(3);
      c_.reset();
      MESH_ASSIGN(c_, connect(dsn_));
    }
    const char* params[2] = {kBroadcastChannel, payload.c_str()};
    Res r(PQexecParams(c_.get(), "SELECT pg_notify($1, $2)", 2, nullptr, params, nullptr, nullptr,
                       0));
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      std::string m = pq_error(c_.get());
      c_.reset();
      return Status(Exit::Unavailable, "broadcast: " + m);
    }
    return Status::ok();
  }

 private:
  std::string dsn_;
  std::mutex mu_;
  Conn c_;
  std::chrono::steady_clock::time_point retry_at_{};
};

Result<std::unique_ptr<ChangeListener>> PgStore::listen() {
  return std::unique_ptr<ChangeListener>(new PgListener(dsn_));
}

Result<std::unique_ptr<Broadcaster>> PgStore::broadcaster() {
  return std::unique_ptr<Broadcaster>(new PgBroadcaster(dsn_));
}

}  // namespace

Result<std::unique_ptr<Store>> open_postgres_store(const std::string& dsn) {
  MESH_ASSIGN(auto c, connect(dsn));
  auto s = std::make_unique<PgStore>(std::move(c), dsn);
  MESH_TRY(s->init());
  return std::unique_ptr<Store>(std::move(s));
}

}  // namespace mesh::coord
