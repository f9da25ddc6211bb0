#include "coord/migrate.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "coord/store.h"

namespace mesh::coord {
namespace {

// "sqlite:DIR" names a state directory (its coord.db); other specs go to
// Store::open as they are.
Result<std::string> resolve(const std::string& spec, bool must_exist) {
  if (Store::is_postgres(spec)) return spec;
  if (spec.rfind("sqlite:", 0) != 0)
    return usage_error("'" + spec + "': expected sqlite:DIR, postgres://... or a libpq DSN");
  std::string dir = spec.substr(7);
  if (dir.empty()) return usage_error("'" + spec + "': sqlite: needs the state directory");
  std::string db = dir + "/coord.db";
  struct stat st{};
  if (must_exist && ::stat(db.c_str(), &st) != 0)
    return Status(Exit::NoInput, db + ": no coordinator database");
  return "sqlite:" + db;
}

// Holds state: anything but the schema version.
Result<bool> holds_state(Store& s) {
  MESH_ASSIGN(auto meta, s.load_meta());
  for (const auto& [k, v] : meta)
    if (k != "schema_version") return true;
  MESH_ASSIGN(auto peers, s.load_peers());
  MESH_ASSIGN(auto keys, s.load_setup_keys());
  MESH_ASSIGN(auto kinds, s.record_kinds());
  MESH_ASSIGN(auto evs, s.events(0, 1, ""));
  return !peers.empty() || !keys.empty() || !kinds.empty() || !evs.empty();
}

Status copy(Store& src, Store& dst, Json& out) {
  MESH_TRY(dst.clear());
  MESH_ASSIGN(auto meta, src.load_meta());
  for (const auto& [k, v] : meta) MESH_TRY(dst.set_meta(k, v));
  MESH_ASSIGN(auto peers, src.load_peers());
  for (const auto& p : peers) {
    int64_t id = p.record.at("id").get<int64_t>();
    MESH_TRY(dst.put_peer(id, p.record.at("name").get<std::string>(),
                          p.record.at("public_key").get<std::string>(), dump_json(p.record)));
    if (p.serial) MESH_TRY(dst.set_map_serial(id, p.serial, p.generated_at));
  }
  MESH_ASSIGN(auto keys, src.load_setup_keys());
  for (auto k : keys) {
    std::string hash = k.at("hash").get<std::string>();
    k.erase("hash");
    MESH_TRY(dst.put_setup_key(k.at("id").get<int64_t>(), hash, dump_json(k)));
  }
  MESH_ASSIGN(auto kinds, src.record_kinds());
  size_t records = 0;
  for (const auto& kind : kinds) {
    MESH_ASSIGN(auto rows, src.load_records(kind));
    for (const auto& [key, rec] : rows) MESH_TRY(dst.put_record(kind, key, dump_json(rec)));
    records += rows.size();
  }
  size_t events = 0;
  for (int64_t after = 0;;) {
    MESH_ASSIGN(auto batch, src.events(after, 10000, ""));
    if (batch.empty()) break;
    for (const auto& e : batch) MESH_TRY(dst.add_event(e).status());
    after = batch.back().seq;
    events += batch.size();
  }
  out["meta"] = meta.size();
  out["peers"] = peers.size();
  out["setup_keys"] = keys.size();
  out["records"] = records;
  out["events"] = events;
  return Status::ok();
}

}  // namespace

Result<Json> migrate_store(const MigrateOptions& opt) {
  MESH_ASSIGN(auto from, resolve(opt.from, true));
  MESH_ASSIGN(auto to, resolve(opt.to, false));
  if (from == to) return usage_error("--from and --to are the same store");
  MESH_ASSIGN(auto src, Store::open(from));
  MESH_ASSIGN(auto dst, Store::open(to));
  // The source is read in one transaction too: a consistent snapshot even
  // if a coordinator still runs on it (stop it first all the same).
  MESH_TRY(src->begin());
  Status s = dst->begin();
  if (!s) {
    src->rollback();
    return s;
  }
  Json out{{"from", src->describe()}, {"to", dst->describe()}};
  auto held = holds_state(*dst);
  if (!held)
    s = held.status();
  else if (*held && !opt.force)
    s = Status(Exit::CantCreate, dst->describe() +
                                     " already holds coordinator state; --force replaces it");
  if (s) s = copy(*src, *dst, out);
  if (s) s = dst->commit();
  if (!s) dst->rollback();
  src->rollback();
  if (!s) return s;
  return out;
}

}  // namespace mesh::coord
