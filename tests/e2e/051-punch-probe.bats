#!/usr/bin/env bats
# mesh-punch probe in the NAT lab: authenticated hole punching from the
# WireGuard port (owned by wireguard-go), then WireGuard through the path.
load helpers
load ../lab/lab

# probe_nodes "A B C..." [ARGS...]: runs `mesh-punch probe` on every node at
# the same time, each with a map of all the others (lab_map) and its own
# candidates (lab_stun); results in $BATS_TEST_TMPDIR/NAME.probe.json, exit
# statuses in probe_status[NAME] (124 when killed after $probe_limit seconds,
# default 30).
declare -gA probe_status
probe_nodes() {
  local names=($1); shift
  local n m others pids=()
  for n in "${names[@]}"; do
    others=()
    for m in "${names[@]}"; do [ "$m" = "$n" ] || others+=("$m"); done
    lab_map "$n" "${others[@]}" >"$BATS_TEST_TMPDIR/$n.map.json"
  done
  for n in "${names[@]}"; do
    timeout "${probe_limit:-30}" ip netns exec "$(lab_ns "$n")" mesh-punch probe \
      --key "$BATS_TEST_TMPDIR/$n.key" --port "${LAB_PORT[$n]}" --candidates "$BATS_TEST_TMPDIR/$n.endpoints.json" "$@" \
      "$BATS_TEST_TMPDIR/$n.map.json" >"$BATS_TEST_TMPDIR/$n.probe.json" \
      2>"$BATS_TEST_TMPDIR/$n.probe.err" 3>&- &
    pids+=($!)
  done
  local i=0
  for n in "${names[@]}"; do
    wait "${pids[$i]}" && probe_status[$n]=0 || probe_status[$n]=$?
    i=$((i + 1))
    cat "$BATS_TEST_TMPDIR/$n.probe.err" >&2
  done
}

# peer_field NAME PEER FIELD: FIELD of PEER's entry in NAME's probe result.
peer_field() {
  jq -r --arg k "${LAB_PUB[$2]}" ".peers[] | select(.public_key == \$k) | .$3" \
    "$BATS_TEST_TMPDIR/$1.probe.json"
}

# path NAME FIELD: FIELD of the first peer in NAME's probe result.
path() { jq -r ".peers[0].$2" "$BATS_TEST_TMPDIR/$1.probe.json"; }

# wg_peer NAME: mesh-apply NAME's map with the endpoints its probe chose.
wg_peer() {
  lab_apply "$1" "$BATS_TEST_TMPDIR/$1.probe.json"
  [ "$status" -eq 0 ]
}

setup_pair() {  # setup_pair TYPE_A FILTER_A TYPE_B FILTER_B
  lab_internet
  lab_nat r1 "$1" "$2"
  lab_nat r2 "$3" "$4"
  lab_peer a r1
  lab_peer b r2
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51820 100.64.0.2/10
  lab_stun a 51820; [ "$status" -eq 0 ]
  lab_stun b 51820; [ "$status" -eq 0 ]
}

@test "probe: two peers behind two endpoint-independent NATs punch through, then WireGuard works" {
  require_root
  setup_pair eim drop eim drop
  probe_nodes "a b" --timeout 10
  [ "${probe_status[a]}" -eq 0 ]
  [ "${probe_status[b]}" -eq 0 ]
  # Each side picked the other NAT's public address and WireGuard's port.
  [ "$(path a status)" = direct ]
  [ "$(path b status)" = direct ]
  [ "$(path a endpoint)" = "${LAB_WAN[r2]}:51820" ]
  [ "$(path b endpoint)" = "${LAB_WAN[r1]}:51820" ]
  [ "$(path a kind)" = srflx ]
  [ "$(path a public_key)" = "${LAB_PUB[b]}" ]
  jq -e '.peers[0].rtt_ms >= 0' "$BATS_TEST_TMPDIR/a.probe.json"
  # The document is a valid endpoints document with our own candidates.
  jq -e --arg k "${LAB_PUB[a]}" '.public_key == $k and (.candidates | length >= 2) and .nat.mapping == "endpoint-independent"' \
    "$BATS_TEST_TMPDIR/a.probe.json"
  wg_peer a
  wg_peer b
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c1 -W2 100.64.0.1
  nsx a wg show "${LAB_WG[a]}" endpoints | grep -q "${LAB_WAN[r2]}:51820"
  nsx b wg show "${LAB_WG[b]}" endpoints | grep -q "${LAB_WAN[r1]}:51820"
}

@test "probe --follow: candidates that reach the map file while probing are used" {
  require_root
  setup_pair eim drop eim drop
  # Neither map has the other's candidates when the probes start: without
  # --follow both would end relay-needed (two NATs that drop unsolicited
  # traffic need checks from both sides).
  local n t0=$SECONDS
  lab_map a b | jq '.peers[].endpoints = []' >"$BATS_TEST_TMPDIR/a.map.json"
  lab_map b a | jq '.peers[].endpoints = []' >"$BATS_TEST_TMPDIR/b.map.json"
  for n in a b; do
    timeout 30 ip netns exec "$(lab_ns "$n")" mesh-punch probe --follow --timeout 15 \
      --key "$BATS_TEST_TMPDIR/$n.key" --port 51820 "$BATS_TEST_TMPDIR/$n.map.json" \
      >"$BATS_TEST_TMPDIR/$n.probe.json" 2>"$BATS_TEST_TMPDIR/$n.probe.err" 3>&- &
    eval "pid_$n=\$!"
  done
  # The maps are replaced (as mesh-coord watch --cache does) while the probes
  # run, a's first, b's half a second later.
  sleep 1
  lab_map a b >"$BATS_TEST_TMPDIR/a.map.new"
  mv "$BATS_TEST_TMPDIR/a.map.new" "$BATS_TEST_TMPDIR/a.map.json"
  sleep 0.5
  lab_map b a >"$BATS_TEST_TMPDIR/b.map.new"
  mv "$BATS_TEST_TMPDIR/b.map.new" "$BATS_TEST_TMPDIR/b.map.json"
  wait "$pid_a"
  wait "$pid_b"
  [ "$(path a status)" = direct ]
  [ "$(path b status)" = direct ]
  [ "$(path a endpoint)" = "${LAB_WAN[r2]}:51820" ]
  [ "$(path b endpoint)" = "${LAB_WAN[r1]}:51820" ]
  # Both stopped once confirmed, not at the 15 s limit.
  [ $((SECONDS - t0)) -lt 12 ]
  mrun -s 64 mesh-punch probe --follow --key "$BATS_TEST_TMPDIR/a.key" --port 51820 - </dev/null
  [[ "$stderr" == *"--follow needs a map file"* ]]
}

@test "probe: two peers behind the same NAT use their LAN addresses" {
  require_root
  lab_internet
  lab_nat r1 eim drop
  lab_peer a r1
  lab_peer b r1
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51821 100.64.0.2/10
  lab_stun a 51820; [ "$status" -eq 0 ]
  lab_stun b 51821; [ "$status" -eq 0 ]
  probe_nodes "a b" --timeout 10
  [ "${probe_status[a]}" -eq 0 ]
  [ "${probe_status[b]}" -eq 0 ]
  [ "$(path a endpoint)" = "${LAB_ADDR[b]}:51821" ]
  [ "$(path a kind)" = host ]
  [ "$(path b endpoint)" = "${LAB_ADDR[a]}:51820" ]
  [ "$(path b kind)" = host ]
  wg_peer a
  wg_peer b
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
  nsx a wg show "${LAB_WG[a]}" endpoints | grep -q "${LAB_ADDR[b]}:51821"
}

@test "probe: a peer behind a symmetric NAT is reported relay-needed within the timeout" {
  require_root
  setup_pair symmetric drop eim drop
  # --timeout 2: each probe must give up by itself (a probe still running
  # after 15 s is killed and its status is 124, not 0).
  probe_limit=15 probe_nodes "a b" --timeout 2
  [ "${probe_status[a]}" -eq 0 ]
  [ "${probe_status[b]}" -eq 0 ]
  [ "$(path a status)" = relay-needed ]
  [ "$(path a endpoint)" = null ]
  [ "$(path b status)" = relay-needed ]
}

# probe_staggered ARGS...: probe on a, then 0.3 s later on b (maps from
# lab_map); results in NAME.probe.json.
probe_staggered() {
  lab_map a b >"$BATS_TEST_TMPDIR/a.map.json"
  lab_map b a >"$BATS_TEST_TMPDIR/b.map.json"
  local n pids=()
  local t0=$SECONDS
  for n in a b; do
    timeout 30 ip netns exec "$(lab_ns "$n")" mesh-punch probe --key "$BATS_TEST_TMPDIR/$n.key" \
      --port 51820 "$@" "$BATS_TEST_TMPDIR/$n.map.json" >"$BATS_TEST_TMPDIR/$n.probe.json" 3>&- &
    pids+=($!)
    sleep 0.3
  done
  wait "${pids[@]}"
}

@test "probe: router without an input firewall (conntrack collision): short-TTL opening packets win" {
  require_root
  setup_pair eim open eim open
  # b starts 0.3 s after a. Naive probing (no opening packets): a's first
  # packets reach r2 before b sent anything, r2 accepts them locally and the
  # conntrack entry they leave makes r2 give b a different port: no path.
  probe_staggered --timeout 3 --open-ttl 0
  [ "$(path a status)" = relay-needed ]
  [ "$(path b status)" = relay-needed ]
  # The lab reproduces the collision: r2 holds an entry for a's packets to
  # its own port 51820 (no NAT).
  local w1=${LAB_WAN[r1]//./\\.} w2=${LAB_WAN[r2]//./\\.}
  nsx r2 grep -Eq "src=$w1 dst=$w2 sport=51820 dport=51820 \\[UNREPLIED\\] src=$w2 dst=$w1 sport=51820 dport=51820" \
    /proc/net/nf_conntrack
  # Fresh routers (the bogus entries live 30 s); same stagger, with opening
  # packets (TTL 2: past our own NAT, expired before the other one) during a
  # 2 s window: both mappings exist before any packet arrives.
  mesh_teardown
  setup_pair eim open eim open
  probe_staggered --timeout 10 --open-window 2000
  [ "$(path a endpoint)" = "${LAB_WAN[r2]}:51820" ]
  [ "$(path b endpoint)" = "${LAB_WAN[r1]}:51820" ]
  wg_peer a
  wg_peer b
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
}

@test "probe: after a collision, a router without an input firewall maps our new flows to another port: the probe reports it as prflx, and a filtering peer punches through it" {
  require_root
  lab_internet
  lab_nat r1 eim open
  lab_nat r2 eim drop
  lab_peer a r1
  lab_peer b r2
  lab_peer_public c
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51820 100.64.0.2/10
  lab_wg c 51820 100.64.0.3/10
  local n
  for n in a b c; do lab_stun "$n" 51820; [ "$status" -eq 0 ]; done
  # b's and c's full-TTL checks reach r1 while a sends nothing: r1 takes
  # them for itself and keeps the entries that collide with a's mapping.
  for n in b c; do
    lab_map "$n" a >"$BATS_TEST_TMPDIR/$n.map.json"
    nsx "$n" mesh-punch probe --key "$BATS_TEST_TMPDIR/$n.key" --port 51820 --timeout 1 --open-ttl 0 \
      "$BATS_TEST_TMPDIR/$n.map.json" >/dev/null
  done
  # a and the public c: r1 maps a's flow to c to another port, which c sees
  # and a reports among its candidates.
  probe_nodes "a c" --timeout 5
  [ "$(path a status)" = direct ]
  moved=$(jq -r --arg w "${LAB_WAN[r1]}" \
    '.candidates[] | select(.kind == "prflx" and (.endpoint | startswith($w + ":"))) | .endpoint' \
    "$BATS_TEST_TMPDIR/a.probe.json")
  [ -n "$moved" ] && [ "$moved" != "${LAB_WAN[r1]}:51820" ]
  [ "$(path c endpoint)" = "$moved" ]
  cp "$BATS_TEST_TMPDIR/a.probe.json" "$BATS_TEST_TMPDIR/a.moved.json"
  # Linux reuses that mapping for a's next flows: b, which knows only the
  # port STUN showed, finds no path ...
  probe_nodes "a b" --timeout 3
  [ "$(path a status)" = relay-needed ]
  [ "$(path b status)" = relay-needed ]
  # ... and with the candidates a's probe reported, punches through.
  cp "$BATS_TEST_TMPDIR/a.moved.json" "$BATS_TEST_TMPDIR/a.endpoints.json"
  probe_nodes "a b" --timeout 10
  [ "$(path a status)" = direct ]
  [ "$(path b endpoint)" = "$moved" ]
  wg_peer a
  wg_peer b
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
}

@test "probe: two nodes on the same port behind one NAT get distinct mappings (NetBird #2703)" {
  require_root
  lab_internet
  lab_nat r1 eim drop
  lab_nat r2 eim drop
  lab_peer a r1
  lab_peer b r1
  lab_peer c r2
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51820 100.64.0.2/10
  lab_wg c 51820 100.64.0.3/10
  local n
  for n in a b c; do lab_stun "$n" 51820; [ "$status" -eq 0 ]; done
  # r1 gave a and b different public ports for the same listen port.
  local sa sb
  sa=$(jq -r '.candidates[] | select(.kind == "srflx") | .endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json")
  sb=$(jq -r '.candidates[] | select(.kind == "srflx") | .endpoint' "$BATS_TEST_TMPDIR/b.endpoints.json")
  [ "${sa%:*}" = "${LAB_WAN[r1]}" ]
  [ "${sb%:*}" = "${LAB_WAN[r1]}" ]
  [ "$sa" != "$sb" ]
  probe_nodes "a b c" --timeout 10
  for n in a b c; do [ "${probe_status[$n]}" -eq 0 ]; done
  [ "$(peer_field c a endpoint)" = "$sa" ]
  [ "$(peer_field c b endpoint)" = "$sb" ]
  [ "$(peer_field a b kind)" = host ]
  [ "$(peer_field a b endpoint)" = "${LAB_ADDR[b]}:51820" ]
  for n in a b c; do lab_apply "$n" "$BATS_TEST_TMPDIR/$n.probe.json"; [ "$status" -eq 0 ]; done
  wait_until 20 nsx c ping -c1 -W1 100.64.0.1
  wait_until 20 nsx c ping -c1 -W1 100.64.0.2
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
}
