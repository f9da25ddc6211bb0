#!/usr/bin/env bats
# The whole mesh, as the demo runs it: mesh-coord and mesh-relay on an
# "internet", eight nodes behind mixed NATs (none, endpoint-independent with
# and without a firewall, symmetric twice, double NAT, two behind one NAT),
# each running mesh-up (which drives mesh-keygen, mesh-coord, mesh-punch,
# mesh-relay and mesh-apply), all started together. One topology for the
# whole file (setup_file), tests in order.
#
# The internet first drops UDP between eim's router (r1) and the router of
# lan1 and lan2 (r3): eim-lan1 and eim-lan2 start relayed, and a later test
# lifts the block and watches them move to direct without losing a ping.

load helpers
load ../lab/lab
load ../lab/mesh

setup_file() {
  require_root
  export BATS_TEST_TMPDIR=$BATS_FILE_TMPDIR
  mesh_lab_start
  nsx inet nft -f - <<NFT
table ip block {
  chain forward { type filter hook forward priority filter;
    ip saddr ${LAB_WAN[r1]} ip daddr ${LAB_WAN[r3]} meta l4proto udp drop
    ip saddr ${LAB_WAN[r3]} ip daddr ${LAB_WAN[r1]} meta l4proto udp drop
  }
}
NFT
  for n in "${MESH_LAB_NODES[@]}"; do mesh_lab_up "$n"; done
  echo "$COORD_URL" > "$BATS_FILE_TMPDIR/coord.url"
  save_lab
}

# setup_file and each test run in their own shells: the lab's state (daemons,
# namespaces, addresses) is carried between them in a file.
# (declare -g: the file is sourced inside functions.)
save_lab() {
  declare -p LAB_ADDR LAB_LAN LAB_ROUTER LAB_WAN LAB_NPEERS _lab_links _lab_routers \
    _mesh_pids _mesh_netns coord_pid up_lan2_pid |
    sed -e 's/^declare -- /declare -g /' -e 's/^declare -\([A-Za-z]*\) /declare -g\1 /' \
    > "$BATS_FILE_TMPDIR/lab.env"
}

teardown_file() {
  export BATS_TEST_TMPDIR=$BATS_FILE_TMPDIR
  source "$BATS_FILE_TMPDIR/lab.env"
  mesh_teardown
}

setup() {
  export BATS_TEST_TMPDIR=$BATS_FILE_TMPDIR
  source "$BATS_FILE_TMPDIR/lab.env"
  MESH_NODES=$BATS_FILE_TMPDIR/nodes
  COORD_URL=$(cat "$BATS_FILE_TMPDIR/coord.url")
  MESH_ADMIN_TOKEN=$(cat "$BATS_FILE_TMPDIR/coord/admin.token")
  export MESH_ADMIN_TOKEN
}

# Daemons and namespaces live for the whole file: a test only records what it started.
teardown() { save_lab; }

@test "every node enrols and every pair pings through WireGuard" {
  mesh_lab_wait_all 60 "${MESH_LAB_NODES[@]}"
}

# mesh-up's mesh-apply keeps the names in each node's own hosts file
# (/etc/netns/NS/hosts, which `ip netns exec` mounts over /etc/hosts).
v4_of() { nsx "$1" getent ahostsv4 "$2" | awk 'NR == 1 {print $1}'; }
name_is() { [ "$(v4_of "$1" "$2")" = "$3" ]; }

@test "every node resolves the others' names (NAME.mesh), and its own" {
  local a b
  for a in pub sym lan1; do
    for b in pub eim sym lan2; do
      wait_until 10 name_is "$a" "$b.mesh" "$(mesh_lab_ip "$b")"
    done
  done
  nsx pub ping -n -c 1 -W 2 lan1.mesh
  ! grep -q "mesh-apply" /etc/hosts || false
}

# What a pair should end as: the topology's rule, and the block above.
want_path() {
  case "$1-$2" in
    eim-lan1|lan1-eim|eim-lan2|lan2-eim) [ -e "$BATS_FILE_TMPDIR/unblocked" ] || { echo relayed; return; } ;;
  esac
  mesh_lab_expected "$1" "$2"
}
path_is() { [ "$(mesh_lab_path "$1" "$2")" = "$3" ]; }

@test "pairs that can punch end direct, both ways; the others go through the relay" {
  local a b want bad=0
  for a in "${MESH_LAB_NODES[@]}"; do
    for b in "${MESH_LAB_NODES[@]}"; do
      [ "$a" = "$b" ] && continue
      want=$(want_path "$a" "$b")
      # (up to the third retry, 165 s after the first probe: see mesh-up(8),
      # Timers, on a NAT router without a firewall)
      wait_until 190 path_is "$a" "$b" "$want" ||
        { echo "$a -> $b: $(mesh_lab_path "$a" "$b") ($(mesh_lab_endpoint "$a" "$b")), want $want"; bad=1; }
    done
  done
  [ "$bad" -eq 0 ]
  # (a path that just changed may wait for WireGuard's next handshake)
  for a in "${MESH_LAB_NODES[@]}"; do
    for b in "${MESH_LAB_NODES[@]}"; do
      [ "$a" = "$b" ] || wait_until 10 mesh_lab_ping "$a" "$b" || { echo "$a -> $b: no ping reply"; false; }
    done
  done
  # Two nodes behind one NAT reach each other on their LAN addresses; a direct
  # path to a NATed node uses its router's public address, and through two
  # NATs the outer one's.
  endpoint_is() { [[ "$(mesh_lab_endpoint "$1" "$2")" == "$3:"* ]]; }
  wait_until 20 endpoint_is lan1 lan2 "${LAB_ADDR[lan2]}" ||
    { echo "lan1 -> lan2: $(mesh_lab_endpoint lan1 lan2) (lan2 is ${LAB_ADDR[lan2]})"; false; }
  wait_until 20 endpoint_is pub eim "${LAB_WAN[r1]}" ||
    { echo "pub -> eim: $(mesh_lab_endpoint pub eim) (r1 is ${LAB_WAN[r1]})"; false; }
  wait_until 20 endpoint_is pub dbl "${LAB_WAN[rc]}" ||
    { echo "pub -> dbl: $(mesh_lab_endpoint pub dbl) (the carrier NAT is ${LAB_WAN[rc]})"; false; }
}

@test "mesh-up status --json agrees with wg show on every node" {
  local n out key ep path bad=0
  for n in "${MESH_LAB_NODES[@]}"; do
    mrun -s 0 ip netns exec "$(lab_ns "$n")" mesh-up status --state "$MESH_NODES/$n" --json
    out=$output
    [ "$(jq -r .node.name <<<"$out")" = "$n" ]
    [ "$(jq -r .node.agent <<<"$out")" = running ]
    [ "$(jq -r .node.coordinator.state <<<"$out")" = up ]
    [ "$(jq '.peers | length' <<<"$out")" -eq $(( ${#MESH_LAB_NODES[@]} - 1 )) ]
    while read -r key ep; do
      [ "$ep" = "(none)" ] && ep=null
      path=$(jq -r --arg k "$key" '.peers[] | select(.public_key == $k) | "\(.endpoint) \(.path)"' <<<"$out")
      [ "$path" = "$ep $(mesh_lab_path_of "$ep")" ] || { echo "$n: wg says $key at $ep, status says $path"; bad=1; }
    done < <(nsx "$n" wg show "$(wg_name "$n")" endpoints)
  done
  [ "$bad" -eq 0 ]
  # The table names every peer, and a missing state directory is exit 66.
  mrun -s 0 ip netns exec "$(lab_ns pub)" mesh-up status --state "$MESH_NODES/pub"
  for n in eim sym dbl lan2; do [[ "$output" == *$'\n'"$n "* ]]; done
  mrun -s 66 mesh-up status --state "$BATS_FILE_TMPDIR/nowhere"
  mrun -s 64 mesh-up status --bogus
}

@test "paths stay put: for 10 s, pings between the punched nodes lose nothing and stay direct" {
  # Nodes keep probing (retries of relayed peers, peers asking for probes),
  # and a probe only sees a peer that probes at the same moment: a working
  # direct path must survive the probes that miss it.
  local nodes=(pub open lan1 lan2) pids=() a b bad=0 got i key ep
  for a in "${nodes[@]}"; do
    for b in "${nodes[@]}"; do
      [ "$a" = "$b" ] && continue
      ip netns exec "$(lab_ns "$a")" ping -n -q -c 50 -i 0.2 -W 1 -w 15 "$(mesh_lab_ip "$b")" \
        > "$BATS_FILE_TMPDIR/steady.$a-$b" 2>&1 &
      pids+=($!)
    done
  done
  # Meanwhile, every 0.5 s: each node's WireGuard endpoints.
  declare -A name
  for a in "${nodes[@]}"; do name[$(mesh_lab_pubkey "$a")]=$a; done
  for i in $(seq 1 20); do
    for a in "${nodes[@]}"; do
      nsx "$a" wg show "$(wg_name "$a")" endpoints | sed "s/^/$a /"
    done >> "$BATS_FILE_TMPDIR/steady.endpoints"
    sleep 0.5
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  got=$(while read -r a key ep; do
      [ -n "${name[$key]:-}" ] || continue
      [ "$(mesh_lab_path_of "$ep")" = direct ] || echo "$a -> ${name[$key]}: went through $ep"
    done < "$BATS_FILE_TMPDIR/steady.endpoints" | sort -u)
  [ -z "$got" ] || { echo "$got"; bad=1; }
  for a in "${nodes[@]}"; do
    for b in "${nodes[@]}"; do
      [ "$a" = "$b" ] && continue
      got=$(awk '/packets transmitted/ {print $4}' "$BATS_FILE_TMPDIR/steady.$a-$b")
      [ "${got:-0}" -eq 50 ] || { echo "$a -> $b: ${got:-0} of 50 replies"; bad=1; }
      [ "$(mesh_lab_path "$a" "$b")" = direct ] || { echo "$a -> $b: $(mesh_lab_endpoint "$a" "$b")"; bad=1; }
    done
  done
  [ "$bad" -eq 0 ]
}

@test "a relayed pair moves to direct without losing a ping at 20/s once its NATs allow it" {
  path_is eim lan1 relayed && path_is lan1 eim relayed
  ip netns exec "$(lab_ns eim)" ping -n -q -i 0.05 -c 400 -W 1 -w 30 "$(mesh_lab_ip lan1)" \
    > "$BATS_FILE_TMPDIR/upgrade.ping" 2>&1 &
  pinger=$!
  sleep 1
  nsx inet nft delete table ip block
  touch "$BATS_FILE_TMPDIR/unblocked"
  # A host address change wakes the retries at once (else: the next retry).
  nsx eim ip addr add 198.18.0.9/32 dev lo
  wait_until 20 path_is eim lan1 direct
  wait_until 10 path_is lan1 eim direct
  wait "$pinger" || true
  cat "$BATS_FILE_TMPDIR/upgrade.ping"
  got=$(awk '/packets transmitted/ {print $1, $4}' "$BATS_FILE_TMPDIR/upgrade.ping")
  [ "$got" = "400 400" ]
}

@test "the policy is enforced by port: allowed connects, denied does not" {
  start_daemon web nsx pub socat TCP-LISTEN:$MESH_LAB_POLICY_PORT_OK,fork,reuseaddr EXEC:'echo allowed'
  start_daemon other nsx pub socat TCP-LISTEN:$MESH_LAB_POLICY_PORT_DENIED,fork,reuseaddr EXEC:'echo denied'
  ip=$(mesh_lab_ip pub)
  wait_until 5 nsx pub ss -Htln "sport = :$MESH_LAB_POLICY_PORT_OK"
  run nsx eim socat -T2 - TCP:$ip:$MESH_LAB_POLICY_PORT_OK,connect-timeout=3
  [ "$output" = allowed ]
  run nsx eim socat -T2 - TCP:$ip:$MESH_LAB_POLICY_PORT_DENIED,connect-timeout=3
  [ "$status" -ne 0 ]
  [ "$output" != denied ]
  # The same port is reachable from pub itself (the listener is up; the mesh firewall refused).
  run nsx pub socat -T2 - TCP:127.0.0.1:$MESH_LAB_POLICY_PORT_DENIED,connect-timeout=3
  [ "$output" = denied ]
}

@test "with the coordinator stopped, tunnels stay up and a changed NAT mapping reconnects" {
  kill "$coord_pid"
  wait_until 10 bash -c "! kill -0 $coord_pid"
  sleep 2
  mesh_lab_all_ping pub eim lan1 lan2
  # eim's NAT now maps to other ports: new conntrack state, a different port range.
  wan_if=$(nsx r1 ip -o -4 addr show | awk -v a="${LAB_WAN[r1]}/30" '$4 == a {print $2}')
  nsx r1 nft flush chain ip lab postrouting
  nsx r1 nft add rule ip lab postrouting oifname "$wan_if" meta l4proto udp snat to "${LAB_WAN[r1]}:45000-45999"
  nsx r1 nft add rule ip lab postrouting oifname "$wan_if" masquerade
  nsx r1 conntrack -F >/dev/null 2>&1 || true
  wait_until 40 mesh_lab_ping eim pub
  wait_until 40 mesh_lab_ping pub eim
  [[ "$(mesh_lab_endpoint pub eim)" == "${LAB_WAN[r1]}:45"* ]]
}

@test "the coordinator comes back and a new node joins; everyone sees it" {
  start_daemon coord2 nsx inet mesh-coord serve --listen "${COORD_URL#http://}" \
    --state "$BATS_FILE_TMPDIR/coord" --relay-secret-file "$BATS_FILE_TMPDIR/relay.secret" \
    --stun 203.0.113.1:3478 --stun 203.0.113.2:3479 --turn 203.0.113.1:3478
  wait_for_line "$BATS_FILE_TMPDIR/coord2.out" '^listening on http://' 15
  coord_pid=$coord2_pid
  lab_nat r4 eim drop
  lab_peer late r4
  mesh_lab_up late
  mesh_lab_wait_all 60 pub eim lan1 late
}

@test "a deleted node is cut off within 2 seconds, its agent frozen, at every peer that pings it" {
  local ip n pids=() last worst=0 d
  ip=$(mesh_lab_ip lan2)
  for n in pub lan1 open; do mesh_lab_ping "$n" lan2; done
  # The revoked node does not cooperate: its agent is stopped, its WireGuard answers.
  kill -STOP "$up_lan2_pid"
  for n in pub lan1 open; do
    ip netns exec "$(lab_ns "$n")" ping -n -D -i 0.02 -W 1 "$ip" > "$BATS_FILE_TMPDIR/revoke.$n" 2>&1 &
    pids+=($!)
  done
  sleep 0.5
  t0=$(date +%s.%N)
  nsx inet mesh-coord peer delete --server "$COORD_URL" lan2 >/dev/null
  sleep 3
  kill "${pids[@]}"; wait "${pids[@]}" || true
  kill -CONT "$up_lan2_pid"
  for n in pub lan1 open; do
    last=$(awk '/bytes from/ {gsub(/[\[\]]/, "", $1); t=$1} END {print t}' "$BATS_FILE_TMPDIR/revoke.$n")
    d=$(echo "$last - $t0" | bc -l)
    echo "$n: last reply $d s after the delete"
    (( $(echo "$d < 2" | bc -l) ))
  done
  ! mesh_lab_ping pub lan2
  ! mesh_lab_ping lan1 lan2
  # Its name goes with the next map too.
  wait_until 10 name_is pub lan2.mesh ""
  name_is pub lan1.mesh "$(mesh_lab_ip lan1)"
}

@test "no shell error in any node's log" {
  ! grep -E "unbound variable|syntax error|command not found|bad substitution|integer expression expected|line [0-9]+: " "$BATS_FILE_TMPDIR"/up-*.err
}
