# Helpers for the tests of what we ship beside the programs (tests/e2e/092,
# 093): the installed tree, systemd units and the cron file run as their
# managers would run them, and the commands in README.md and the man pages.
# Load after helpers.
#
#   ship_install               `cmake --install` the build ($MESH_BIN) into a
#                              scratch root $R (prefix $R/usr/local), as the
#                              README installs it into /usr/local
#   ship_path TEXT             TEXT with the system paths a shipped file names
#                              (/usr/local/, /etc/, /var/lib/, /var/log/) moved
#                              under $R, and the interface names mesh0, wg0 and
#                              wg1 made unique to this run ($SHIP_IF0, ...)
#   unit_start NAME UNIT NS [INSTANCE]
#                              run UNIT's ExecStart= as systemd would (its
#                              Environment= and EnvironmentFile= substituted,
#                              %i the instance, StateDirectory= created,
#                              systemd's PATH), paths through ship_path, in
#                              namespace NS, as daemon NAME (start_daemon)
#   doc_commands FILE          the shell commands of a document: README.md's
#                              ```sh blocks, a man page's example blocks
#                              (.EX/.EE, .nf/.fi) in EXAMPLES and WALK-THROUGH,
#                              roff escapes undone, JSON examples left out
#   doc_json FILE              the JSON examples of FILE, each ended by a NUL
#   doc_run NS FILE SCRIPT     run SCRIPT (commands from FILE) in namespace NS
#                              with every mesh program wrapped: each call runs
#                              the real program, and a usage error (exit 64, or
#                              an unknown option or verb on stderr) is a
#                              "FAIL" line in $DOC_LOG

# systemd's PATH for system services (systemd.exec(5), "Environment
# variables in spawned processes"), and cron's (Debian cron(8): /usr/bin:/bin).
SYSTEMD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CRON_PATH=/usr/bin:/bin

ship_install() {
  R=$BATS_TEST_TMPDIR/root
  SHIP_IF0=$(wg_name s0) SHIP_IF1=$(wg_name s1) SHIP_IFM=$(wg_name sm)
  [ -f "$MESH_BIN/CMakeCache.txt" ] || { echo "MESH_BIN=$MESH_BIN is not a CMake build directory" >&2; return 1; }
  cmake --install "$MESH_BIN" --prefix "$R/usr/local" >"$BATS_TEST_TMPDIR/install.log" 2>&1 ||
    { cat "$BATS_TEST_TMPDIR/install.log" >&2; return 1; }
  mkdir -p "$R/etc/mesh" "$R/etc/default" "$R/var/lib" "$R/var/log"
}

ship_path() {
  sed -e "s#/usr/local/#$R/usr/local/#g" -e "s#/etc/#$R/etc/#g" -e "s#/var/lib/#$R/var/lib/#g" \
      -e "s#/var/log/#$R/var/log/#g" -e "s#\\bmesh0\\b#$SHIP_IFM#g" -e "s#\\bwg0\\b#$SHIP_IF0#g" \
      -e "s#\\bwg1\\b#$SHIP_IF1#g" <<<"$1"
}

# unit_value FILE KEY: the values of KEY= in unit FILE, one per line.
unit_value() { sed -n "s/^$2=//p" "$1"; }

# EnvironmentFile= lines: KEY=VALUE, optional quotes, comments (systemd.exec(5)).
_env_file_lines() {
  local l k v
  while IFS= read -r l || [ -n "$l" ]; do
    [[ "$l" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    k=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
    if [[ "$v" =~ ^\"(.*)\"$ || "$v" =~ ^\'(.*)\'$ ]]; then v=${BASH_REMATCH[1]}; fi
    printf '%s=%s\n' "$k" "$v"
  done <"$1"
}

unit_start() {
  local name=$1 unit=$2 ns=$3 inst=${4:-} f line file env=() fenv=() exec_line cmd
  f="$R/usr/local/lib/systemd/system/$unit"
  [ -f "$f" ] || { echo "unit_start: $unit is not installed" >&2; return 1; }
  while IFS= read -r line; do
    line=$(ship_path "${line//%i/$inst}")
    case "$line" in
      Environment=*) env+=("${line#Environment=}") ;;
      EnvironmentFile=*)
        file=${line#EnvironmentFile=}
        if [ -f "${file#-}" ]; then mapfile -t -O "${#fenv[@]}" fenv < <(_env_file_lines "${file#-}")
        elif [[ "$file" != -* ]]; then echo "unit_start: $unit: no $file" >&2; return 1; fi ;;
      ExecStart=*) exec_line=${line#ExecStart=} ;;
      StateDirectory=*)
        for file in ${line#StateDirectory=}; do
          mkdir -p "$R/var/lib/$file"
          chmod "$(unit_value "$f" StateDirectoryMode || true)" "$R/var/lib/$file" 2>/dev/null || chmod 0755 "$R/var/lib/$file"
        done ;;
    esac
  done <"$f"
  # Settings from EnvironmentFile= override Environment= (systemd.exec(5)).
  env+=("${fenv[@]}")
  # ${VAR} is one word, $VAR is split at white space (systemd.service(5),
  # "Command lines"): the same as "${VAR}" and an unquoted $VAR in bash.
  exec_line=$(sed -E 's/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/"${\1}"/g' <<<"$exec_line")
  mapfile -t cmd < <(env -i "${env[@]}" /bin/bash -c 'eval "set -- $1"; printf "%s\n" "$@"' _ "$exec_line")
  echo "unit_start $unit: ${cmd[*]}" >&2
  start_daemon "$name" ip netns exec "${MESH_RUN}$ns" env -i PATH="$(ship_path "$SYSTEMD_PATH")" \
    "${env[@]}" "${cmd[@]}"
}

# --- documents ----------------------------------------------------------------

# The example blocks of FILE with roff undone: for README.md its ```sh
# blocks; for a man page the .EX/.EE and .nf/.fi blocks of its EXAMPLES,
# EXAMPLE and WALK-THROUGH sections. One "#@block N" line before each block.
_doc_blocks() {
  case "$1" in
    *.md) awk '/^```sh[[:space:]]*$/ {on=1; printf "#@block %d\n", ++n; next}
               /^```/ {on=0} on' "$1" ;;
    *) awk '/^\.SH / {sec=($2 ~ /^"?(EXAMPLES?|WALK-THROUGH)"?$/); on=0; next}
            sec && /^\.(EX|nf)/ {on=1; printf "#@block %d\n", ++n; next}
            /^\.(EE|fi)/ {on=0; next}
            on && !/^\.[A-Za-z]/' "$1" |
       sed -e 's/\\-/-/g' -e 's/\\e/\\/g' -e 's/\\(lq/"/g' -e 's/\\(rq/"/g' -e 's/\\&//g' -e "s/\\\\(aq/'/g" ;;
  esac
}

# A JSON example starts with "{" in the first column and ends with "}" there.
doc_commands() { _doc_blocks "$1" | awk '/^\{/ {j=1} !j; j && /^\}/ {j=0}'; }
doc_json() {
  _doc_blocks "$1" | awk '/^\{/ {j=1; buf=""} j {buf = buf $0 "\n"} j && /^\}/ {j=0; printf "%s%c", buf, 0}'
}

# The wrappers doc_run puts in front of a document's commands.
_doc_prelude() {
  cat <<'EOF'
DOC_TOP=$BASHPID
# Programs the examples name. Each runs for real: a daemon (one that is
# still running after a few seconds) is stopped then; so is one started in
# the background, later, after the commands that follow it.
doc_check() {
  local prog=$1 t=4 rc i err=$DOC_DIR/.err.$BASHPID
  shift
  [ "$BASHPID" = "$DOC_TOP" ] || t=15
  # "..." stands for arguments the example leaves out.
  case " $* " in *" ... "*) echo "skip $prog $*" >>"$DOC_LOG"; return 0 ;; esac
  for i in 1 2 3 4; do
    timeout -k 2 "$t" "$prog" "$@" 2>"$err"; rc=$?
    # A coordinator the example started in the background a moment ago may
    # not listen yet (an operator types slower): ask again.
    [ "$rc" = 69 ] && [[ " $* " == *" --server "* ]] || break
    sleep 0.3
  done
  cat "$err" >&2
  if [ "$rc" = 64 ] || grep -Eqi "unknown (option|command)|not expected|unrecognized" "$err"; then
    echo "FAIL $prog $* => exit $rc: $(head -c 300 "$err" | tr '\n' ' ')" >>"$DOC_LOG"
  else
    echo "ok $rc $prog $*" >>"$DOC_LOG"
  fi
  rm -f "$err"
  return 0
}
# After a command started in the background: wait (at most 5 s) until a
# new socket listens, as an operator waits for a daemon to come up.
DOC_LISTEN=$(ss -Hlntu | wc -l)
doc_settle() {
  local i
  for i in $(seq 50); do
    [ "$(ss -Hlntu | wc -l)" -gt "$DOC_LISTEN" ] && break
    sleep 0.1
  done
  DOC_LISTEN=$(ss -Hlntu | wc -l)
}
mesh-keygen() { doc_check mesh-keygen "$@"; }
mesh-coord() { doc_check mesh-coord "$@"; }
mesh-punch() { doc_check mesh-punch "$@"; }
mesh-relay() { doc_check mesh-relay "$@"; }
mesh-apply() { doc_check mesh-apply "$@"; }
mesh-up() { doc_check mesh-up "$@"; }
# Other tools run for real, bounded in time.
wg() { timeout -k 1 5 wg "$@"; }
wg-quick() { timeout -k 1 5 wg-quick "$@"; }
turnutils_uclient() { timeout -k 1 5 turnutils_uclient "$@"; }
# What would change this machine is checked, not run: the scripts exist,
# the unit is shipped, the install goes into the scratch root.
sudo() { "$@"; }
scripts/deps() { doc_script deps; }
scripts/build() { doc_script build; }
scripts/demo() { doc_script demo; }
scripts/test() { doc_script test; }
doc_script() {
  if [ -x "$MESH_ROOT/scripts/$1" ]; then echo "ok 0 scripts/$1" >>"$DOC_LOG"
  else echo "FAIL scripts/$1: no such script" >>"$DOC_LOG"; fi
}
cmake() {
  if [ "$1 $2 $3" = "--install build --prefix" ]; then
    command cmake --install "$MESH_BIN" --prefix "$DOC_ROOT$4" >/dev/null && echo "ok 0 cmake $*" >>"$DOC_LOG"
  else echo "FAIL cmake $*: not the documented install" >>"$DOC_LOG"; fi
}
systemctl() {
  local u=${*: -1}
  case "$u" in *@*) u=${u%%@*}@.service ;; *.service) ;; *) u=$u.service ;; esac
  if [ -f "$MESH_ROOT/dist/systemd/$u" ]; then echo "ok 0 systemctl $*" >>"$DOC_LOG"
  else echo "FAIL systemctl $*: no dist/systemd/$u" >>"$DOC_LOG"; fi
}
EOF
}

doc_run() {
  local ns=$1 doc=$2 script=$3
  DOC_DIR=$BATS_TEST_TMPDIR/doc.$(basename "$doc")
  DOC_LOG=$DOC_DIR.log
  mkdir -p "$DOC_DIR"
  : >"$DOC_LOG"
  # A daemon started in the background gets time to come up (doc_settle).
  { _doc_prelude; sed -E 's/(^|[^&])&[[:space:]]*$/\1\&\ndoc_settle/' <<<"$script"; echo wait; } >"$DOC_DIR.sh"
  # The examples' placeholders: a coordinator URL and a peer's key.
  ( cd "$DOC_DIR" &&
    ip netns exec "${MESH_RUN}$ns" env DOC_DIR="$DOC_DIR" DOC_LOG="$DOC_LOG" DOC_ROOT="$R" \
      MESH_ROOT="$MESH_ROOT" MESH_BIN="$MESH_BIN" PATH="$R/usr/local/bin:$PATH" \
      URL=http://203.0.113.1:8420 PEER_KEY="${DOC_PEER_KEY:-$(mesh-keygen genkey | mesh-keygen pubkey)}" \
      timeout -k 5 120 bash "$DOC_DIR.sh" </dev/null >"$DOC_DIR.out" 2>"$DOC_DIR.err" ) || true
}

# doc_lab NS: a namespace owning the documents' addresses (203.0.113.1,
# 203.0.113.2, 192.0.2.10, on lo): their traffic stays in it.
doc_lab() {
  netns_add "$1"
  local a
  for a in 203.0.113.1 203.0.113.2 192.0.2.10; do ip -n "${MESH_RUN}$1" addr add "$a/32" dev lo; done
}
