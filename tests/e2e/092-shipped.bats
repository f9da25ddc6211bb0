#!/usr/bin/env bats
# What we ship beside the programs, used as shipped: `cmake --install` into a
# scratch root, then the systemd units (systemd-analyze verify, and each
# ExecStart= run as systemd runs it in a lab namespace), the cron file (its
# job under cron's environment) and bash completion loaded on demand.

load helpers
load apply-lib
load shipped

setup() {
  require_root
  cd "$BATS_TEST_TMPDIR"
  ship_install
}

@test "systemd units pass systemd-analyze verify as installed" {
  # An offline root: the installed units under $R/usr/local, systemd's own
  # units (the targets they name), and the commands they run.
  mkdir -p "$R/usr/lib/systemd" "$R/usr/bin"
  cp -a /usr/lib/systemd/system "$R/usr/lib/systemd/"
  cp /usr/bin/kill "$R/usr/bin/kill"
  ln -sfn usr/bin "$R/bin"
  for u in mesh-coord.service mesh-relay.service mesh-up@.service; do
    [ -f "$R/usr/local/lib/systemd/system/$u" ] || { echo "$u not installed"; false; }
  done
  mrun -s 0 systemd-analyze verify --man=no --root="$R" \
    mesh-coord.service mesh-relay.service mesh-up@mesh0.service
  [ -z "$stderr" ] || { echo "$stderr"; false; }
}

# The lab: a server namespace (203.0.113.1) and a node (203.0.113.2).
ship_lab() {
  netns_add srv
  netns_add node
  veth_link srv 203.0.113.1/24 node 203.0.113.2/24
  NODE=(ip netns exec "${MESH_RUN}node")   # for mrun
  SRV=(ip netns exec "${MESH_RUN}srv")     # admin verbs run on the coordinator's host
  mesh-keygen token -o "$R/etc/mesh/relay.secret"
}

coord_unit_start() {
  # /etc/default/mesh-coord as mesh-coord.service's comment describes it.
  printf '%s\n' 'MESH_COORD_ARGS="--stun 203.0.113.1:3478 --turn 203.0.113.1:3478"' >"$R/etc/default/mesh-coord"
  unit_start coord mesh-coord.service srv
  wait_for_line "$BATS_TEST_TMPDIR/coord.out" '^listening on http://0\.0\.0\.0:8420$' 10 ||
    { cat "$BATS_TEST_TMPDIR/coord.err"; false; }
}

@test "mesh-coord.service: its ExecStart serves /v1/info and enrols with its admin token" {
  ship_lab
  coord_unit_start
  kill -0 "$coord_pid"
  mrun -s 0 "${NODE[@]}" curl -sSf --max-time 5 http://203.0.113.1:8420/v1/info
  [[ "$(jq -r .coordinator_public_key <<<"$output")" =~ ^[A-Za-z0-9+/]{43}=$ ]]
  # Its state went where the unit says, with the admin token.
  [ "$(stat -c %a "$R/var/lib/mesh-coord")" = 700 ]
  export MESH_ADMIN_TOKEN=$(cat "$R/var/lib/mesh-coord/admin.token")
  mrun -s 0 "${SRV[@]}" mesh-coord setup-key create --server http://203.0.113.1:8420 --name n -o sk
  mesh-keygen genkey -o n1.key
  mrun -s 0 "${NODE[@]}" mesh-coord join --server http://203.0.113.1:8420 --setup-key-file sk \
    --key n1.key --name n1
  printf '%s\n' "$output" >n1.json
  # The relay settings of /etc/default/mesh-coord reach the maps.
  mrun -s 0 "${NODE[@]}" mesh-coord map --registration n1.json --key n1.key
  [ "$(jq -r '.turn[0].server' <<<"$output")" = 203.0.113.1:3478 ]
  [ "$(jq -r '.stun[0]' <<<"$output")" = 203.0.113.1:3478 ]
}

@test "mesh-relay.service: its ExecStart answers STUN and allocates with coordinator credentials" {
  ship_lab
  # /etc/default/mesh-relay as mesh-relay.service's comment describes it.
  echo 'MESH_RELAY_IP=203.0.113.1' >"$R/etc/default/mesh-relay"
  unit_start relay mesh-relay.service srv
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening ' 10 ||
    { cat "$BATS_TEST_TMPDIR/relay.err"; false; }
  kill -0 "$relay_pid"
  # A STUN binding from the node sees the node's address.
  mrun -s 0 "${NODE[@]}" mesh-punch stun --server 203.0.113.1:3478 --port 40000 --no-nat-tests --json
  [[ "$(jq -r '.stun[0].mapped' <<<"$output")" == 203.0.113.2:* ]]
  # A TURN allocation with a credential minted from the shared secret (as
  # the coordinator does) relays on the configured address.
  mesh-relay credential --auth-secret-file "$R/etc/mesh/relay.secret" --name n1 --ttl 600 --json >cred.json
  jq -r .password cred.json >pw
  mrun -s 0 "${NODE[@]}" mesh-relay check --server 203.0.113.1:3478 \
    --username "$(jq -r .username cred.json)" --password-file pw
  [[ "$output" == *203.0.113.1:* ]]
}

@test "mesh-up@.service: its ExecStart enrols a node against mesh-coord.service and brings the interface up" {
  ship_lab
  coord_unit_start
  inst=$(wg_name up)
  on_teardown "nsx node mesh-apply down --interface $inst >/dev/null 2>&1"
  export MESH_ADMIN_TOKEN=$(cat "$R/var/lib/mesh-coord/admin.token")
  mrun -s 0 "${SRV[@]}" mesh-coord setup-key create --server http://203.0.113.1:8420 --name nodes \
    -o "$R/etc/mesh/$inst.setup-key"
  echo 'MESH_SERVER=http://203.0.113.1:8420' >"$R/etc/mesh/$inst.env"
  unit_start up "mesh-up@.service" node "$inst"
  st=$R/var/lib/mesh/$inst
  wait_until 20 test -s "$st/registration.json" || { cat "$BATS_TEST_TMPDIR/up.err"; false; }
  wait_until 20 test -s "$st/apply.json" || { cat "$BATS_TEST_TMPDIR/up.err" "$st/apply.err"; false; }
  kill -0 "$up_pid"
  ip -n "${MESH_RUN}node" -o addr show dev "$inst" | grep -q ' 100\.64\.'
  mrun -s 0 mesh-up status --state "$st" --json
  [ "$(jq -r .node.interface <<<"$output")" = "$inst" ]
  # Stopping the service (SIGTERM) takes the interface down.
  kill "$up_pid"
  wait_until 15 bash -c "! ip -n ${MESH_RUN}node link show $inst"
}

# cron_job FILE: the environment lines and the command of the (one) job
# of a cron.d file, paths through ship_path: CRON_ENV (array) and CRON_CMD.
cron_job() {
  local l
  CRON_ENV=() CRON_CMD=""
  while IFS= read -r l; do
    [[ "$l" =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ "$l" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]]; then
      CRON_ENV+=("${BASH_REMATCH[1]}=$(ship_path "${BASH_REMATCH[2]}")")
    else
      # crontab(5), /etc/cron.d: five time fields, the user, the command.
      read -r _ _ _ _ _ user CRON_CMD <<<"$l"
      [ "$user" = root ]
      CRON_CMD=$(ship_path "$CRON_CMD")
    fi
  done <"$1"
  [ -n "$CRON_CMD" ]
}

@test "cron: the mesh-apply job applies the cached map and the relay's endpoints in cron's environment" {
  apply_pair
  standard_maps
  # mesh-up's state directory: the map gives no endpoint for b; the relay
  # client's endpoints document (relay.json) does. No direct paths yet.
  st=$R/var/lib/mesh/$SHIP_IFM
  mkdir -p "$st"
  cp "$D/a.key" "$st/node.key"
  write_map "$st/map.json" "$PA" 100.64.0.1/10 51820 "[$(peer_json b "$PB" 100.64.0.2/32 "")]" \
    '[{"sources":["100.64.0.0/10"],"proto":"icmp"}]'
  jq -n --arg k "$PB" '{version:1, peers:[{public_key:$k, status:"relayed", endpoint:"198.51.100.2:51820", kind:"relay"}]}' \
    >"$st/relay.json"
  on_teardown "nsx a mesh-apply down --interface $SHIP_IFM >/dev/null 2>&1"
  cron_job "$MESH_ROOT/dist/cron/mesh-apply"
  echo "cron: ${CRON_ENV[*]} $CRON_CMD" >&2
  # cron(8) runs the job with /bin/sh and its own small environment.
  mrun -T 60 "${NA[@]}" env -i PATH="$CRON_PATH" SHELL=/bin/sh HOME=/root LOGNAME=root \
    "${CRON_ENV[@]}" /bin/sh -c "$CRON_CMD"
  [ "$status" -eq 0 ] || { cat "$R/var/log/mesh-apply.log"; false; }
  [ "$(tail -1 "$R/var/log/mesh-apply.log" | jq -r .changed)" = true ]
  [ "$(nsx a wg show "$SHIP_IFM" endpoints | awk '{print $2}')" = 198.51.100.2:51820 ]
  # The firewall table is there too (nft is in /usr/sbin).
  nsx a nft list table inet "mesh_$SHIP_IFM" >/dev/null
  # It is a working tunnel: b takes a's map as usual, and they ping.
  write_map "$D/b.json" "$PB" 100.64.0.2/10 51820 \
    "[$(peer_json a "$PA" 100.64.0.1/32 198.51.100.1:51820)]" '[{"sources":["100.64.0.1/32"],"proto":"any"}]'
  apply_b "$D/b.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  # Once mesh-up has found a direct path (paths.json), it wins over the
  # relay's endpoint, as in mesh-up's own apply: here the relay moved to a
  # local port and the direct path is the address WireGuard already has,
  # so the run changes nothing, and still logs its summary.
  jq -n --arg k "$PB" '{version:1, peers:[{public_key:$k, status:"relayed", endpoint:"127.0.0.1:40001", kind:"relay"}]}' \
    >"$st/relay.json"
  jq -n --arg k "$PB" '{version:1, peers:[{public_key:$k, status:"direct", endpoint:"198.51.100.2:51820", kind:"host"}]}' \
    >"$st/paths.json"
  mrun -T 60 -s 0 "${NA[@]}" env -i PATH="$CRON_PATH" SHELL=/bin/sh HOME=/root LOGNAME=root \
    "${CRON_ENV[@]}" /bin/sh -c "$CRON_CMD"
  [ "$(tail -1 "$R/var/log/mesh-apply.log" | jq -r .changed)" = false ]
  [ "$(nsx a wg show "$SHIP_IFM" endpoints | awk '{print $2}')" = 198.51.100.2:51820 ]
  [ "$(wc -l <"$R/var/log/mesh-apply.log")" -eq 2 ]
}

@test "bash completion is loaded on demand for every program" {
  # bash-completion's loader looks for a file named after the command in
  # each XDG_DATA_DIRS entry's bash-completion/completions (/usr/local/share
  # first by default): here the scratch root's.
  for p in mesh-keygen mesh-coord mesh-punch mesh-relay mesh-apply mesh-up; do
    [ -e "$R/usr/local/share/bash-completion/completions/$p" ] || echo "no completion file for $p"
  done
  cat >complete.sh <<'EOF'
source /usr/share/bash-completion/bash_completion
# What bash does on the first TAB after PROG in a new shell: the default
# completion (complete -D) loads PROG's file; then PROG's own function runs.
p=$1
_completion_loader "$p" "" "$p"
f=$(complete -p "$p" 2>/dev/null | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
COMP_WORDS=("$p" "") COMP_CWORD=1 COMP_LINE="$p " COMP_POINT=${#COMP_LINE} COMPREPLY=()
"$f" "$p" "" "$p"
echo "$p: ${COMPREPLY[*]}"
EOF
  # A shell each: loading one program's file must not be what makes another work.
  out=""
  for p in mesh-keygen mesh-coord mesh-punch mesh-relay mesh-apply mesh-up; do
    mrun -s 0 env -i HOME="$BATS_TEST_TMPDIR" PATH="$R/usr/local/bin:/usr/bin:/bin" \
      XDG_DATA_DIRS="$R/usr/local/share:/usr/share" bash complete.sh "$p"
    out+="$output"$'\n'
  done
  output=$out
  echo "$output"
  has() { local l w; l=$(grep "^$1: " <<<"$output"); for w in "${@:2}"; do [[ " $l " == *" $w "* ]] || { echo "no '$w' for $1"; return 1; }; done; }
  has mesh-keygen genkey pubkey genpsk pair token
  has mesh-coord serve join map watch announce punch setup-key peer policy events
  has mesh-punch stun probe
  has mesh-relay serve client check credential
  has mesh-apply down
  has mesh-up status
}
