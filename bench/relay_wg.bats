#!/usr/bin/env bats
# bench/relay-wg runs this file: WireGuard (wireguard-go) throughput in the
# lab, direct vs through mesh-relay vs through coturn, with one allocation
# (peer a relayed, peer b public and sending to a's relayed address) and two
# allocations (both peers relayed). Figures go to fd 3 (the terminal);
# nothing here asserts a speed. See bench/relay-wg for the knobs.
bats_require_minimum_version 1.5.0
load ../tests/e2e/helpers
load ../tests/lab/lab
load ../tests/e2e/relay

WG_SECS=${WG_SECS:-5}
WG_REPEAT=${WG_REPEAT:-1}
WG_UDP_RATE=${WG_UDP_RATE:-2G}
BASE=${BASE:-}                                # another mesh-relay binary: mesh-base
WG_SERVERS=${WG_SERVERS:-mesh-relay coturn${BASE:+ mesh-base}}  # order of the relayed runs
RELAY_ARGS=${RELAY_ARGS:-}                    # extra mesh-relay serve flags

# measure LABEL: iperf3 TCP and UDP from a to b over the tunnel.
measure() {
  local label=$1 i tcp udp
  wait_until 30 nsx a ping -c1 -W1 100.64.0.2
  for ((i = 0; i < WG_REPEAT; i++)); do
    # -w 4M --pacing-timer 100: iperf3's defaults lose packets even without
    # a relay; -l 1380 keeps UDP datagrams inside WireGuard's MTU.
    tcp=$(nsx a timeout $((WG_SECS + 20)) iperf3 -c 100.64.0.2 -t "$WG_SECS" -w 4M -J |
      jq -r '.end.sum_received.bits_per_second / 1e6')
    udp=$(nsx a timeout $((WG_SECS + 20)) iperf3 -c 100.64.0.2 -u -b "$WG_UDP_RATE" -l 1380 \
      -t "$WG_SECS" -w 4M --pacing-timer 100 -J |
      jq -r '(.end.sum_received // .end.sum) as $r | "\($r.bits_per_second / 1e6) \($r.lost_percent // 0)"')
    echo "$label $tcp $udp" >>"$BATS_TEST_TMPDIR/wg.results"
    printf '%-22s tcp=%8.1f Mbit/s  udp=%8.1f Mbit/s loss=%s%%\n' "$label" "$tcp" ${udp} >&3
  done
}

direct_peers() {
  nsx a wg set "${LAB_WG[a]}" peer "${LAB_PUB[b]}" allowed-ips 100.64.0.2/32 \
    endpoint "${LAB_ADDR[b]}:51820"
  nsx b wg set "${LAB_WG[b]}" peer "${LAB_PUB[a]}" allowed-ips 100.64.0.1/32 \
    endpoint "${LAB_ADDR[a]}:51820"
}

# one_allocation SERVER: a's client relays to b's public endpoint; b sends
# straight to a's relayed address.
one_allocation() {
  rm -f "$BATS_TEST_TMPDIR"/{a,b}.endpoints.json
  printf '{"candidates":[{"endpoint":"%s:51820","kind":"host"}]}\n' "${LAB_ADDR[b]}" \
    >"$BATS_TEST_TMPDIR/b.endpoints.json"
  relay_write_map a b
  start_daemon client-a ip netns exec "$(lab_ns a)" "${RELAY_CLIENT:-mesh-relay}" client --keepalive 5 \
    --key "$BATS_TEST_TMPDIR/a.key" --endpoints-out "$BATS_TEST_TMPDIR/a.endpoints.json" \
    "$BATS_TEST_TMPDIR/a.map.json"
  wait_until 20 relay_has_candidate a
  relay_wg_peer a b
  local ra
  ra=$(jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json")
  nsx b wg set "${LAB_WG[b]}" peer "${LAB_PUB[a]}" allowed-ips 100.64.0.1/32 endpoint "$ra"
}

stop_clients() {
  local p
  for p in ${client_a_pid:-} ${client_b_pid:-} ${coordinator_pid:-}; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  client_a_pid= client_b_pid= coordinator_pid=
  rm -f "$BATS_TEST_TMPDIR"/{a,b}.endpoints.json "$BATS_TEST_TMPDIR"/{a,b}.map.json
}

@test "bench: WireGuard through mesh-relay and coturn vs direct" {
  require_root
  command -v iperf3 >/dev/null || skip "iperf3 is not installed"
  command -v turnserver >/dev/null || skip "coturn is not installed"
  lab_internet none
  lab_peer_public a
  lab_peer_public b
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51820 100.64.0.2/10
  start_daemon iperf3 nsx b iperf3 -s -B 100.64.0.2
  secret='bench-relay-wg-secret'
  printf '%s\n' "$secret" >"$BATS_TEST_TMPDIR/secret"
  chmod 600 "$BATS_TEST_TMPDIR/secret"
  ip -n "$(lab_ns inet)" link set lo up
  # Both relays in "inet", same settings: UDP, one relay thread, REST
  # credentials from the same secret, the lab's addresses allowed as peers.
  start_daemon relay ip netns exec "$(lab_ns inet)" mesh-relay serve \
    --listen 203.0.113.1:3478 --relay-ports 50000-50999 --threads 1 \
    --auth-secret-file "$BATS_TEST_TMPDIR/secret" --allow-peer 203.0.113.0/24 $RELAY_ARGS
  start_daemon turnserver ip netns exec "$(lab_ns inet)" turnserver -n \
    --listening-ip 203.0.113.2 --listening-port 3478 --relay-ip 203.0.113.2 \
    --min-port 50000 --max-port 50999 --relay-threads 1 \
    --use-auth-secret --static-auth-secret "$secret" --realm mesh \
    --no-tls --no-dtls --no-cli --pidfile "$BATS_TEST_TMPDIR/turnserver.pid" \
    --db "$BATS_TEST_TMPDIR/turndb" --log-file stdout --simple-log
  if [ -n "$BASE" ]; then
    # The same flags on 203.0.113.3: before/after figures in one run.
    ip -n "$(lab_ns inet)" addr add 203.0.113.3/32 dev lo
    start_daemon relaybase ip netns exec "$(lab_ns inet)" "$BASE" serve \
      --listen 203.0.113.3:3478 --relay-ports 50000-50999 --threads 1 \
      --auth-secret-file "$BATS_TEST_TMPDIR/secret" --allow-peer 203.0.113.0/24 $RELAY_ARGS
    wait_for_line "$BATS_TEST_TMPDIR/relaybase.out" '^listening udp 203.0.113.3:3478$' 10
  fi
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening udp 203.0.113.1:3478$' 10
  wait_until 15 eval "nsx inet ss -Hunl | grep -q 203.0.113.2:3478"
  echo "# $(nproc) cpus, load:$(uptime | sed 's/.*load average://'); WG_SECS=$WG_SECS WG_UDP_RATE=$WG_UDP_RATE RELAY_ARGS=$RELAY_ARGS" >&3

  direct_peers
  measure direct

  local name addr
  for name in $WG_SERVERS; do
    addr=203.0.113.1:3478
    [ "$name" = coturn ] && addr=203.0.113.2:3478
    RELAY_CLIENT=mesh-relay
    [ "$name" = mesh-base ] && addr=203.0.113.3:3478 RELAY_CLIENT=$BASE
    relay_turn_entry "$addr" "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
    one_allocation
    measure "$name-1-alloc"
    stop_clients
    relay_clients a b
    relay_wg_peer a b
    relay_wg_peer b a
    measure "$name-2-alloc"
    stop_clients
    direct_peers
  done
  echo "# load after:$(uptime | sed 's/.*load average://')" >&3
  awk '
    { n[$1]++; tcp[$1] += $2; udp[$1] += $3; loss[$1] += $4 }
    END {
      d = tcp["direct"] / n["direct"]; du = udp["direct"] / n["direct"]
      printf "%-20s %10s %8s %10s %8s %7s\n", "path", "tcp Mbit/s", "% direct", "udp Mbit/s", "% direct", "loss%"
      split("direct mesh-relay-1-alloc coturn-1-alloc mesh-base-1-alloc mesh-relay-2-alloc coturn-2-alloc mesh-base-2-alloc", o, " ")
      for (i = 1; i <= 7; i++) {
        k = o[i]; if (!n[k]) continue
        t = tcp[k] / n[k]; u = udp[k] / n[k]
        printf "%-20s %10.1f %7.1f%% %10.1f %7.1f%% %7.2f\n", k, t, 100 * t / d, u, 100 * u / du, loss[k] / n[k]
      }
    }' "$BATS_TEST_TMPDIR/wg.results" >&3
}
