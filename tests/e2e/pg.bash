# A real PostgreSQL server for the coordinator's PostgreSQL tests (Debian's
# postgresql-15, installed by scripts/deps). Load it after helpers:
#   load helpers
#   load pg
#   setup_file()    { pg_start; }
#   teardown_file() { pg_stop; }
# Functions:
#   pg_start          initdb into a fresh directory /tmp/mesh-pg.XXXXXX owned by
#                     the unprivileged user $PG_USER (default nobody) and start
#                     the server with pg_ctl as that user, listening only on a
#                     Unix socket in that directory; exports PG_DIR
#   pg_createdb NAME  create database NAME; prints its DSN (postgresql:// URI)
#   pg_sql NAME SQL   run SQL in database NAME with psql (unaligned, no headers)
#   pg_stop           stop the server (immediate) and remove its directory
# PostgreSQL refuses to run as root, hence the other user; the directory is
# outside the bats tree because bats' temporary directories are root's 0700.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-nobody}

pg_as() { (cd / && runuser -u "$PG_USER" -- "$@"); }

pg_start() {
  [ -x "$PG_BIN/initdb" ] || skip "PostgreSQL 15 is not installed (scripts/deps installs postgresql-15)"
  PG_DIR=$(mktemp -d /tmp/mesh-pg.XXXXXX)
  export PG_DIR
  chown "$PG_USER" "$PG_DIR"
  chmod 0755 "$PG_DIR"
  pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U mesh -A trust -E UTF8 --no-instructions \
    >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  # Unix socket only (no TCP), in the test's own directory; fsync and
  # synchronous_commit stay on, as in production: an acknowledged write must
  # survive the tests' kill -9.
  pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-c listen_addresses='' -c unix_socket_directories='$PG_DIR' -c max_connections=200" \
    start >/dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
}

pg_dsn() { echo "postgresql:///$1?host=$PG_DIR&user=mesh"; }

pg_createdb() {
  pg_as "$PG_BIN/createdb" -h "$PG_DIR" -U mesh "$1" >&2
  pg_dsn "$1"
}

pg_sql() {
  local db=$1; shift
  pg_as psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_DIR" -U mesh -d "$db" -c "$*"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] || return 0
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
}
