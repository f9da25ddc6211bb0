#!/usr/bin/env bats
# The measurements of bench/routes (see there).

bats_require_minimum_version 1.5.0
load ../tests/e2e/helpers
load ../tests/e2e/routes-lib

setup() { routes_lab; }

TRIALS=${ROUTES_TRIALS:-10}
QUIET=${ROUTES_QUIET_SECS:-30}
SECS=${ROUTES_SECS:-5}

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }

# median and max of the numbers on stdin
stats() { sort -n | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                                       printf "median %d ms, max %d ms (n=%d)", m, v[NR], NR}'; }

@test "bench: HA failover/failback and routed vs direct throughput" {
  lan_maps
  # The bench's traffic: iperf3 (tcp/5201) to the LAN host and to r1 itself.
  for r in r1 r2; do
    jq '.firewall.forward += [{"sources":["100.64.0.11/32"],"destinations":["198.51.100.0/24"],"proto":"tcp","ports":[5201]}]
        | .firewall.inbound += [{"sources":["100.64.0.11/32"],"proto":"tcp","ports":[5201]}]' \
      "$D/$r.json" >"$D/$r.tmp" && mv "$D/$r.tmp" "$D/$r.json"
  done
  apply r1; apply r2; apply c1
  start_daemon watch nsx c1 mesh-apply routes --watch --interface "$IF_c1"
  start_daemon ping nsx c1 ping -D -n -i 0.02 -W 1 198.51.100.10
  wait_until 10 grep -q 'bytes from' "$D/ping.out"

  # Quiet: the primary is fine, traffic flows, nothing may move.
  sleep "$QUIET"
  quiet_moves=$(grep -c . "$D/watch.out" || true)

  : >"$D/failover"; : >"$D/failback"
  local t n0 k0 kill_ms up_ms
  for t in $(seq "$TRIALS"); do
    n0=$(grep -c . "$D/watch.out" || true)
    kill_ms=$(ms_now)
    ip -n "${MESH_RUN}r1" link set "$(dev_of r1 u)" down
    # The first reply after the kill came through r2 (replies already in
    # flight through r1 arrive within 200 ms).
    wait_until 30 awk -v k="$kill_ms" -F'[][]' '/bytes from/ && $2 * 1000 > k + 200 {f = 1} END {exit !f}' "$D/ping.out"
    awk -v k="$kill_ms" -F'[][]' '/bytes from/ && $2 * 1000 > k + 200 {printf "%d\n", $2 * 1000 - k; exit}' \
      "$D/ping.out" >>"$D/failover"
    wait_until 30 sh -c "[ \$(grep -c failover '$D/watch.out') -ge $t ]"
    up_ms=$(ms_now)
    ip -n "${MESH_RUN}r1" link set "$(dev_of r1 u)" up
    wait_until 60 sh -c "[ \$(grep -c failback '$D/watch.out') -ge $t ]"
    echo $(( $(ms_now) - up_ms )) >>"$D/failback"
    sleep 1
  done
  extra=$(( $(grep -c . "$D/watch.out") - 2 * TRIALS ))

  # Throughput: through r1 into the LAN, and to r1 itself.
  start_daemon iperf_h nsx h iperf3 -s -1
  start_daemon iperf_r nsx r1 iperf3 -s -1 -B 100.64.0.1
  wait_until 10 nsx h sh -c 'ss -ltn | grep -q ":5201 "'
  wait_until 10 nsx r1 sh -c 'ss -ltn | grep -q ":5201 "'
  routed=$(nsx c1 timeout $((SECS + 20)) iperf3 -c 198.51.100.10 -t "$SECS" -J | jq '.end.sum_received.bits_per_second / 1e6')
  direct=$(nsx c1 timeout $((SECS + 20)) iperf3 -c 100.64.0.1 -t "$SECS" -J | jq '.end.sum_received.bits_per_second / 1e6')

  {
    echo "# bench/routes ($(date -u +%FT%TZ), $(nproc) CPUs, wireguard-go, watcher interval 250 ms, dead-after 2000 ms, hold-down 3000 ms)"
    echo "failover (primary uplink down -> first reply via secondary): $(stats <"$D/failover")"
    echo "failback (primary back -> moved back): $(stats <"$D/failback")"
    echo "moves while the primary was fine: $quiet_moves in ${QUIET}s; unexpected moves during the trials: $extra"
    printf 'TCP c1 -> LAN host via routing peer r1: %.0f Mbit/s; c1 -> r1 peer to peer: %.0f Mbit/s; ratio routed/direct %.2f\n' \
      "$routed" "$direct" "$(echo "$routed / $direct" | bc -l)"
  } >&3
  [ "$quiet_moves" -eq 0 ]
  [ "$extra" -eq 0 ]
}
