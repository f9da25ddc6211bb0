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
WG_CPU_RATE=${WG_CPU_RATE:-50M}               # fixed UDP rate for CPU per packet (every path carries it here)
BASE=${BASE:-}                                # another mesh-relay binary: mesh-base
WG_SERVERS=${WG_SERVERS:-mesh-relay coturn${BASE:+ mesh-base}}  # order of the relayed runs
RELAY_ARGS=${RELAY_ARGS:-}                    # extra mesh-relay serve flags
WG_LOSS=${WG_LOSS:-0.5}                       # loss (%) the throughput search allows
WG_STEPS=${WG_STEPS:-6}                       # its iperf3 runs (bisection steps)
WG_STEP_SECS=${WG_STEP_SECS:-2}               # seconds per step

# Busy CPU time of the whole machine in jiffies (user, nice, system, irq,
# softirq; not idle, iowait or steal): everything the path costs, kernel
# included, and robust to a host that steals time from this VM.
busy_jiffies() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# CPU time (jiffies, user + system: with tick accounting the softirq work a
# process's sends cause is charged to it) of the relay processes: mesh-relay
# servers and clients, coturn's turnserver. Idle ones add nothing.
relay_jiffies() {
  # cat: processes that exit meanwhile are skipped, not an error.
  cat /proc/[0-9]*/stat 2>/dev/null | awk '{ s = $0; sub(/^[^(]*\(/, "", s); c = s; sub(/\).*/, "", c)
         if (c == "mesh-relay" || c == "turnserver") { sub(/^[^)]*\) /, "", s); split(s, a, " "); t += a[12] + a[13] } }
       END { print t + 0 }'
}

# throughput HI: UDP throughput in the sense of RFC 2544 (the highest
# offered rate the path carries without loss; here with at most WG_LOSS %,
# as iperf3's own pacing loses a datagram now and then): bisection between
# 0 and HI Mbit/s in WG_STEPS runs. Prints the Mbit/s received at that rate.
# A path driven far past it (the WG_UDP_RATE run) wastes CPU on datagrams
# dropped on the way, so its received rate says more about the scheduler
# than about the path.
throughput() {
  local lo=0 hi=$1 mid best=0 i got loss
  for ((i = 0; i < WG_STEPS; i++)); do
    mid=$(( (lo + hi) / 2 ))
    read -r got loss < <(nsx a timeout $((WG_STEP_SECS + 20)) iperf3 -c 100.64.0.2 -u -b "${mid}M" \
      -l 1380 -t "$WG_STEP_SECS" -w 4M --pacing-timer 100 -J |
      jq -r '(.end.sum_received // .end.sum) | "\(.bits_per_second / 1e6) \(.lost_percent // 100)"')
    if awk -v l="${loss:-100}" -v m="$WG_LOSS" 'BEGIN {exit !(l <= m)}'; then
      lo=$mid best=$got
    else
      hi=$mid
    fi
  done
  echo "$best"
}

# UdpRcvbufErrors (and Udp6) of the lab's namespaces as "ns count" words.
udp_drops() {
  local ns
  for ns in a b inet; do
    printf '%s %s ' "$ns" "$(nsx "$ns" nstat -asz UdpRcvbufErrors Udp6RcvbufErrors 2>/dev/null | awk '/RcvbufErrors/ {t += $2} END {print t + 0}')"
  done
}

# measure LABEL: iperf3 TCP, UDP (overloaded and the throughput search) and
# CPU per packet, from a to b over the tunnel.
measure() {
  local label=$1 i tcp udp c0 c1 r0 r1 cpu rcpu thr
  wait_until 30 nsx a ping -c1 -W1 100.64.0.2
  for ((i = 0; i < WG_REPEAT; i++)); do
    tcp=$(nsx a timeout $((WG_SECS + 20)) iperf3 -c 100.64.0.2 -t "$WG_SECS" -w 4M -J |
      jq -r '.end.sum_received.bits_per_second / 1e6')
    udp=$(nsx a timeout $((WG_SECS + 20)) iperf3 -c 100.64.0.2 -u -b "$WG_UDP_RATE" -l 1380 \
      -t "$WG_SECS" -w 4M --pacing-timer 100 -J |
      jq -r '(.end.sum_received // .end.sum) as $r | "\($r.bits_per_second / 1e6) \($r.lost_percent // 0)"')
    # CPU per packet at a rate every path carries: microseconds of busy CPU
    # per 1380-byte datagram received.
    c0=$(busy_jiffies) r0=$(relay_jiffies)
    cpu=$(nsx a timeout $((WG_SECS + 20)) iperf3 -c 100.64.0.2 -u -b "$WG_CPU_RATE" -l 1380 \
      -t "$WG_SECS" -w 4M --pacing-timer 100 -J | jq -r '(.end.sum_received // .end.sum).bytes / 1380')
    c1=$(busy_jiffies) r1=$(relay_jiffies)
    rcpu=$(awk -v j=$((r1 - r0)) -v n="$cpu" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (n > 0 ? j * 1e6 / hz / n : 0)}')
    cpu=$(awk -v j=$((c1 - c0)) -v n="$cpu" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (n > 0 ? j * 1e6 / hz / n : 0)}')
    # Bisection up to 1.5 times the better of TCP and the overloaded UDP run;
    # where datagrams were dropped meanwhile (receive buffers overflowed,
    # per namespace), printed beside it.
    local drops0 drops1
    drops0=$(udp_drops)
    thr=$(throughput "$(awk -v t="$tcp" -v u="${udp%% *}" 'BEGIN {printf "%d", 1.5 * (t > u ? t : u) + 1}')")
    drops1=$(udp_drops)
    echo "$label $tcp $udp $cpu $rcpu $thr" >>"$BATS_TEST_TMPDIR/wg.results"
    echo "#   $label: UDP receive-buffer drops during the search: $(awk -v a="$drops0" -v b="$drops1" 'BEGIN {
      n = split(a, x, " "); split(b, y, " "); for (i = 1; i < n; i += 2) printf "%s=%d ", x[i], y[i + 1] - x[i + 1] }')" >&3
    printf '%-22s tcp=%8.1f Mbit/s  udp=%8.1f Mbit/s loss=%s%%  udp<=%s%%=%8.1f Mbit/s  cpu=%s us/pkt (relay %s) at %s\n' \
      "$label" "$tcp" ${udp} "$WG_LOSS" "$thr" "$cpu" "$rcpu" "$WG_CPU_RATE" >&3
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
    --auth-secret-file "$BATS_TEST_TMPDIR/secret" --allow-peer 203.0.113.0/24 --max-bps 0 $RELAY_ARGS
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
      --auth-secret-file "$BATS_TEST_TMPDIR/secret" --allow-peer 203.0.113.0/24 --max-bps 0 $RELAY_ARGS
    wait_for_line "$BATS_TEST_TMPDIR/relaybase.out" '^listening udp 203.0.113.3:3478$' 10
  fi
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening udp 203.0.113.1:3478$' 10
  wait_until 15 eval "nsx inet ss -Hunl | grep -q 203.0.113.2:3478"
  echo "# $(nproc) cpus, load:$(uptime | sed 's/.*load average://'); WG_SECS=$WG_SECS WG_UDP_RATE=$WG_UDP_RATE RELAY_ARGS=$RELAY_ARGS LAB_WG_TUNE=${LAB_WG_TUNE:-1}" >&3

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
    measure direct  # again after each relay: the host's load drifts
  done
  echo "# load after:$(uptime | sed 's/.*load average://')" >&3
  awk '
    { n[$1]++; tcp[$1] += $2; udp[$1] += $3; loss[$1] += $4; cpu[$1] += $5; rcpu[$1] += $6; thr[$1] += $7 }
    END {
      d = tcp["direct"] / n["direct"]; du = udp["direct"] / n["direct"]; dc = cpu["direct"] / n["direct"]
      dt = thr["direct"] / n["direct"]
      printf "%-20s %10s %8s %10s %8s %7s %10s %8s %10s %8s %12s\n", "path", "tcp Mbit/s", "% direct", "udp Mbit/s", "% direct", "loss%", "udp<=" loss_max "%", "% direct", "cpu us/pkt", "x direct", "relay us/pkt"
      split("direct mesh-relay-1-alloc coturn-1-alloc mesh-base-1-alloc mesh-relay-2-alloc coturn-2-alloc mesh-base-2-alloc", o, " ")
      for (i = 1; i <= 7; i++) {
        k = o[i]; if (!n[k]) continue
        t = tcp[k] / n[k]; u = udp[k] / n[k]; c = cpu[k] / n[k]; r = thr[k] / n[k]
        printf "%-20s %10.1f %7.1f%% %10.1f %7.1f%% %7.2f %10.1f %7.1f%% %10.2f %8.2f %12.2f\n", k, t, 100 * t / d, u, 100 * u / du, loss[k] / n[k], r, (dt > 0 ? 100 * r / dt : 0), c, (dc > 0 ? c / dc : 0), rcpu[k] / n[k]
      }
    }' loss_max="$WG_LOSS" "$BATS_TEST_TMPDIR/wg.results" >&3
}
