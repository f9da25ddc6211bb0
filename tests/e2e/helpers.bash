# Shared helper for every tests/e2e/*.bats file. Load it with
#   load helpers
# It puts the programs under test ($MESH_BIN, default build/) first on PATH,
# gives each test a scratch directory, and provides:
#   mrun [-T SECONDS] [-s STATUS] CMD...   run CMD under `timeout` (default 30 s)
#                                  with stdout in $output and stderr in $stderr;
#                                  with -s, fail unless the exit status is STATUS
#   start_daemon NAME CMD...       start CMD in the background (fd 3 closed,
#                                  stdout to $BATS_TEST_TMPDIR/NAME.out, stderr
#                                  to NAME.err); its pid is remembered and it is
#                                  killed in teardown
#   wait_until SECONDS CMD...      poll CMD every 0.05 s until it succeeds (fails after SECONDS)
#   wait_for_line FILE REGEX [SECONDS]   wait until FILE has a line matching REGEX
#   netns_add NAME                 create namespace ${MESH_RUN}NAME, removed in teardown;
#                                  it gets its own hosts file (/etc/netns/NS/hosts, a copy
#                                  of /etc/hosts that `ip netns exec` mounts over it), so
#                                  mesh-apply's DNS names inside never reach the machine's
#                                  /etc/hosts
#   nsx NAME CMD...                run CMD inside namespace ${MESH_RUN}NAME
#   veth_link NS1 ADDR1 NS2 ADDR2  connect two namespaces with a veth pair
#   wg_name SUFFIX                 a WireGuard interface name unique to this run
# Namespaces and interfaces carry the per-run prefix $MESH_RUN so parallel
# or leftover runs never collide; only processes started here are killed.

# Outside bats (scripts/demo sources this file too) there is no such function.
if declare -F bats_require_minimum_version >/dev/null; then bats_require_minimum_version 1.5.0; fi

MESH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MESH_BIN="${MESH_BIN:-$MESH_ROOT/build}"
PATH="$MESH_BIN:$MESH_ROOT/bin:$PATH"
export PATH MESH_ROOT MESH_BIN

# Per-file run prefix: short (interface names are limited to 15 bytes).
if [ -z "${MESH_RUN:-}" ]; then
  MESH_RUN="m$(printf '%04x' $(( (RANDOM << 1 ^ $$) & 0xffff )))"
  export MESH_RUN
fi

_mesh_pids=()
_mesh_netns=()
_mesh_cleanups=()

mrun() {
  local t=30 want=""
  while [ $# -gt 0 ]; do
    case "$1" in
      -T) t=$2; shift 2 ;;
      -s) want=$2; shift 2 ;;
      *) break ;;
    esac
  done
  run --separate-stderr timeout --kill-after=5 "$t" "$@"
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "mrun: timed out after ${t}s: $*" >&2
    return 1
  fi
  if [ -n "$want" ] && [ "$status" -ne "$want" ]; then
    {
      echo "mrun: expected exit status $want, got $status: $*"
      echo "--- stdout"; printf '%s\n' "$output"
      echo "--- stderr"; printf '%s\n' "$stderr"
    } >&2
    return 1
  fi
  return 0
}

start_daemon() {
  local name=$1; shift
  # Run `nsx NS CMD` as `ip netns exec`, which execs CMD: the remembered pid
  # is then the daemon's own, so a test can signal it.
  if [ "$1" = nsx ]; then set -- ip netns exec "${MESH_RUN}$2" "${@:3}"; fi
  "$@" >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" 3>&- &
  local pid=$!
  _mesh_pids+=("$pid")
  eval "${name//-/_}_pid=$pid"
}

# Registers a command to run in teardown (in reverse order).
on_teardown() { _mesh_cleanups+=("$*"); }

wait_until() {
  local secs=$1; shift
  local deadline=$(( $(date +%s%N) + secs * 1000000000 ))
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(date +%s%N)" -ge "$deadline" ]; then
      echo "wait_until: gave up after ${secs}s: $*" >&2
      return 1
    fi
    sleep 0.05
  done
}

wait_for_line() {
  local file=$1 re=$2 secs=${3:-10}
  wait_until "$secs" grep -Eq -- "$re" "$file"
}

netns_add() {
  local ns="${MESH_RUN}$1"
  ip netns add "$ns"
  _mesh_netns+=("$ns")
  ip -n "$ns" link set lo up
  mkdir -p "/etc/netns/$ns"
  cp /etc/hosts "/etc/netns/$ns/hosts"
}

nsx() {
  local ns="${MESH_RUN}$1"; shift
  ip netns exec "$ns" "$@"
}

veth_link() {
  local a=$1 aaddr=$2 b=$3 baddr=$4
  local ia="${MESH_RUN}${a:0:3}${b:0:3}" ib="${MESH_RUN}${b:0:3}${a:0:3}"
  ip link add "${ia:0:15}" netns "${MESH_RUN}$a" type veth peer name "${ib:0:15}" netns "${MESH_RUN}$b"
  ip -n "${MESH_RUN}$a" addr add "$aaddr" dev "${ia:0:15}"
  ip -n "${MESH_RUN}$b" addr add "$baddr" dev "${ib:0:15}"
  ip -n "${MESH_RUN}$a" link set "${ia:0:15}" up
  ip -n "${MESH_RUN}$b" link set "${ib:0:15}" up
}

wg_name() { local n="${MESH_RUN}${1}"; echo "${n:0:15}"; }

require_root() {
  [ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, nftables)"
}

mesh_teardown() {
  local i
  for (( i=${#_mesh_cleanups[@]}-1; i>=0; i-- )); do eval "${_mesh_cleanups[$i]}" || true; done
  for pid in "${_mesh_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${_mesh_pids[@]}"; do
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for ns in "${_mesh_netns[@]}"; do
    # Processes started inside the namespace by this test (e.g. wireguard-go,
    # which daemonises) are ours: end them before removing it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    sleep 0.1
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  # mesh-apply's memo and lock files of this run's interfaces, which went
  # with their namespaces (mesh-apply(8), FILES).
  rm -f "${MESH_APPLY_STATE_DIR:-/run/mesh-apply}/${MESH_RUN}"*.state \
        "${MESH_APPLY_STATE_DIR:-/run/mesh-apply}/${MESH_RUN}"*.lock
  _mesh_pids=(); _mesh_netns=(); _mesh_cleanups=()
}

teardown() { mesh_teardown; }

# Exit statuses (lib/core/exit.h), for readable assertions.
EX_OK=0 EX_FAILURE=1 EX_USAGE=64 EX_DATAERR=65 EX_NOINPUT=66 EX_UNAVAILABLE=69
EX_SOFTWARE=70 EX_CANTCREATE=73 EX_IOERR=74 EX_TEMPFAIL=75 EX_NOPERM=77 EX_CONFIG=78
