#!/usr/bin/env bats
# mesh-punch probe in the NAT lab: authenticated hole punching from the
# WireGuard port (owned by wireguard-go), then WireGuard through the path.
bats_require_minimum_version 1.5.0
load helpers
load ../lab/lab

# probe_pair A B [ARGS...]: runs `mesh-punch probe` on A and B at the same
# time (maps from lab_map, candidates from lab_stun); results in
# $BATS_TEST_TMPDIR/NAME.probe.json, exit statuses in $probe_a_status/$probe_b_status.
probe_pair() {
  local a=$1 b=$2; shift 2
  lab_map "$a" "$b" >"$BATS_TEST_TMPDIR/$a.map.json"
  lab_map "$b" "$a" >"$BATS_TEST_TMPDIR/$b.map.json"
  local n pids=()
  for n in "$a" "$b"; do
    timeout 30 ip netns exec "$(lab_ns "$n")" mesh-punch probe --key "$BATS_TEST_TMPDIR/$n.key" \
      --port "${LAB_PORT[$n]}" --candidates "$BATS_TEST_TMPDIR/$n.endpoints.json" "$@" \
      "$BATS_TEST_TMPDIR/$n.map.json" >"$BATS_TEST_TMPDIR/$n.probe.json" \
      2>"$BATS_TEST_TMPDIR/$n.probe.err" 3>&- &
    pids+=($!)
  done
  wait "${pids[0]}" && probe_a_status=0 || probe_a_status=$?
  wait "${pids[1]}" && probe_b_status=0 || probe_b_status=$?
  cat "$BATS_TEST_TMPDIR/$a.probe.err" "$BATS_TEST_TMPDIR/$b.probe.err" >&2
}

# path NAME FIELD: FIELD of the first peer in NAME's probe result.
path() { jq -r ".peers[0].$2" "$BATS_TEST_TMPDIR/$1.probe.json"; }

# wg_peer NAME PEER: configure PEER on NAME's interface with the endpoint
# NAME's probe chose.
# TODO(lead): switch to `mesh-apply --endpoints NAME.probe.json` once the
# apply branch is merged; the endpoints document is its input.
wg_peer() {
  local n=$1 p=$2
  nsx "$n" wg set "${LAB_WG[$n]}" peer "${LAB_PUB[$p]}" endpoint "$(path "$n" endpoint)" \
    allowed-ips "${LAB_OVERLAY[$p]%/*}/32"
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
  probe_pair a b --timeout 10
  [ "$probe_a_status" -eq 0 ] && [ "$probe_b_status" -eq 0 ]
  # Each side picked the other NAT's public address and WireGuard's port.
  [ "$(path a status)" = direct ] && [ "$(path b status)" = direct ]
  [ "$(path a endpoint)" = "${LAB_WAN[r2]}:51820" ]
  [ "$(path b endpoint)" = "${LAB_WAN[r1]}:51820" ]
  [ "$(path a kind)" = srflx ]
  [ "$(path a public_key)" = "${LAB_PUB[b]}" ]
  jq -e '.peers[0].rtt_ms >= 0' "$BATS_TEST_TMPDIR/a.probe.json"
  # The document is a valid endpoints document with our own candidates.
  jq -e --arg k "${LAB_PUB[a]}" '.public_key == $k and (.candidates | length >= 2) and .nat.mapping == "endpoint-independent"' \
    "$BATS_TEST_TMPDIR/a.probe.json"
  wg_peer a b
  wg_peer b a
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c1 -W2 100.64.0.1
  nsx a wg show "${LAB_WG[a]}" endpoints | grep -q "${LAB_WAN[r2]}:51820"
  nsx b wg show "${LAB_WG[b]}" endpoints | grep -q "${LAB_WAN[r1]}:51820"
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
  probe_pair a b --timeout 10
  [ "$probe_a_status" -eq 0 ] && [ "$probe_b_status" -eq 0 ]
  [ "$(path a endpoint)" = "${LAB_ADDR[b]}:51821" ] && [ "$(path a kind)" = host ]
  [ "$(path b endpoint)" = "${LAB_ADDR[a]}:51820" ] && [ "$(path b kind)" = host ]
  wg_peer a b
  wg_peer b a
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
  nsx a wg show "${LAB_WG[a]}" endpoints | grep -q "${LAB_ADDR[b]}:51821"
}

@test "probe: a peer behind a symmetric NAT is reported relay-needed within the timeout" {
  require_root
  setup_pair symmetric drop eim drop
  local t0=$SECONDS
  probe_pair a b --timeout 2
  [ "$probe_a_status" -eq 0 ] && [ "$probe_b_status" -eq 0 ]
  [ "$(path a status)" = relay-needed ] && [ "$(path a endpoint)" = null ]
  [ "$(path b status)" = relay-needed ]
  [ $((SECONDS - t0)) -le 10 ]
}

@test "probe: router without an input firewall (conntrack collision): short-TTL opening packets win" {
  require_root
  setup_pair eim open eim open
  lab_map a b >"$BATS_TEST_TMPDIR/a.map.json"
  lab_map b a >"$BATS_TEST_TMPDIR/b.map.json"
  # b starts 0.3 s after a. Naive probing (no opening packets): a's first
  # packets reach r2 before b sent anything, r2 accepts them locally and the
  # conntrack entry they leave makes r2 give b a different port: no path.
  timeout 30 ip netns exec "$(lab_ns a)" mesh-punch probe --key "$BATS_TEST_TMPDIR/a.key" --port 51820 \
    --timeout 3 --open-ttl 0 "$BATS_TEST_TMPDIR/a.map.json" >"$BATS_TEST_TMPDIR/a.probe.json" 3>&- &
  local pa=$!
  sleep 0.3
  mrun ip netns exec "$(lab_ns b)" mesh-punch probe --key "$BATS_TEST_TMPDIR/b.key" --port 51820 \
    --timeout 3 --open-ttl 0 "$BATS_TEST_TMPDIR/b.map.json"
  wait "$pa"
  [ "$(jq -r '.peers[0].status' <<<"$output")" = relay-needed ]
  [ "$(path a status)" = relay-needed ]
  # The lab reproduces the collision: r2 holds an entry for a's packets to
  # its own port 51820 (no NAT), and b's mapping towards r1 got another port.
  local w1=${LAB_WAN[r1]//./\\.} w2=${LAB_WAN[r2]//./\\.}
  nsx r2 grep -Eq "src=$w1 dst=$w2 sport=51820 dport=51820 \\[UNREPLIED\\] src=$w2 dst=$w1 sport=51820 dport=51820" \
    /proc/net/nf_conntrack
  # Fresh routers (the bogus entries live 30 s); same stagger, with opening
  # packets (TTL 2: past our own NAT, expired before the other one) during a
  # 1 s window: both mappings exist before any packet arrives.
  mesh_teardown
  setup_pair eim open eim open
  lab_map a b >"$BATS_TEST_TMPDIR/a.map.json"
  lab_map b a >"$BATS_TEST_TMPDIR/b.map.json"
  timeout 30 ip netns exec "$(lab_ns a)" mesh-punch probe --key "$BATS_TEST_TMPDIR/a.key" --port 51820 \
    --timeout 10 --open-window 1000 "$BATS_TEST_TMPDIR/a.map.json" >"$BATS_TEST_TMPDIR/a.probe.json" 3>&- &
  pa=$!
  sleep 0.3
  mrun -s 0 ip netns exec "$(lab_ns b)" mesh-punch probe --key "$BATS_TEST_TMPDIR/b.key" --port 51820 \
    --timeout 10 --open-window 1000 "$BATS_TEST_TMPDIR/b.map.json"
  printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/b.probe.json"
  wait "$pa"
  [ "$(jq -r '.peers[0].endpoint' <<<"$output")" = "${LAB_WAN[r1]}:51820" ]
  [ "$(path a endpoint)" = "${LAB_WAN[r2]}:51820" ]
  wg_peer a b
  wg_peer b a
  wait_until 20 nsx a ping -c1 -W1 100.64.0.2
}
