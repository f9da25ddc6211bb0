#include <nlohmann/json.hpp>

#include "common.h"
#include "coord/migrate.h"
#include "verbs.h"

namespace mesh::coord {

int cmd_migrate(Context& ctx, int argc, char** argv) {
  CLI::App app("Copy a coordinator's state to another store (SQLite to PostgreSQL), all or nothing");
  MigrateOptions o;
  bool json = false;
  app.add_option("--from", o.from, "source: sqlite:DIR (DIR/coord.db) or postgres://...")->required();
  app.add_option("--to", o.to, "target: postgres://..., a libpq DSN, or sqlite:DIR")->required();
  app.add_flag("--force", o.force, "replace the state the target already holds");
  app.add_flag("--json", json, "print the summary as one JSON document");
  if (int rc = parse_args(app, ctx, argc, argv); rc >= 0) return rc;
  auto r = migrate_store(o);
  if (!r) return report(ctx, r.status());
  if (json) return print_json(ctx, *r);
  ctx.out << "migrated " << (*r)["peers"] << " peers, " << (*r)["setup_keys"] << " setup keys, "
          << (*r)["records"] << " records, " << (*r)["events"] << " events and " << (*r)["meta"]
          << " settings from " << (*r)["from"].get<std::string>() << " to "
          << (*r)["to"].get<std::string>() << "\n"
          << std::flush;
  return ctx.out ? 0 : report(ctx, io_error("cannot write to standard output"));
}

}  // namespace mesh::coord
