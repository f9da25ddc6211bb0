#!/usr/bin/env bats
# mesh-relay serve when both peers are relayed through it (two allocations
# in one worker): datagrams to one of its own relayed addresses are handed
# to the receiving allocation without the kernel, under the receiving
# side's rules. Clients: coturn's turnutils_uclient in client-to-client mode
# (-y: each allocation sends to the other's relayed address) over UDP and
# TCP, and our load generator (build/bench_relay_load), whose --b-side
# decides what the receiving allocation installs toward the sender.
bats_require_minimum_version 1.5.0
load helpers

setup() {
  T=$BATS_TEST_TMPDIR
  echo 'alice:alicepw' >"$T/users"
  chmod 600 "$T/users"
  LOAD=$MESH_BIN/bench_relay_load
  [ -x "$LOAD" ] || skip "build/bench_relay_load is not built"
}

# serve [ARGS...]: one worker (both allocations in it), live stats on /stats.
serve() {
  start_daemon relay mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/users" \
    --threads 1 --metrics 127.0.0.1:0 "$@"
  wait_for_line "$T/relay.out" '^listening metrics 127\.0\.0\.1:[0-9]+$' 10
  PORT=$(sed -n 's/^listening udp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out" | head -1)
  MPORT=$(sed -n 's/^listening metrics 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out")
}

stat() { curl -sf "http://127.0.0.1:$MPORT/stats" | jq -r ".$1"; }

# settled: the counters stopped moving (the clients are done).
settled() {
  local before
  before=$(curl -sf "http://127.0.0.1:$MPORT/stats" | jq -c 'del(.uptime_s)')
  sleep 0.3
  [ "$before" = "$(curl -sf "http://127.0.0.1:$MPORT/stats" | jq -c 'del(.uptime_s)')" ]
}

@test "turnutils_uclient client-to-client over UDP and TCP: no loss, relayed inside the server" {
  serve --tcp
  mrun -T 60 -s 0 turnutils_uclient -u alice -w alicepw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  grep -q 'Total lost packets 0 (0.000000%)' <<<"$output"
  grep -q 'tot_recv_msgs=100' <<<"$output"
  wait_until 10 settled
  udp=$(stat internal_packets)
  # Every datagram goes from one allocation to the other (-y): inside.
  [ "$udp" -ge 100 ]
  mrun -T 60 -s 0 turnutils_uclient -t -u alice -w alicepw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  grep -q 'Total lost packets 0 (0.000000%)' <<<"$output"
  grep -q 'tot_recv_msgs=100' <<<"$output"
  wait_until 10 settled
  [ "$(stat internal_packets)" -ge $((udp + 100)) ]
}

@test "internal hop: the receiver's channel gives ChannelData, a permission Data indications, nothing without one" {
  serve
  # B with a channel to A's relayed address: ChannelData arrives.
  mrun -T 30 -s 0 "$LOAD" "127.0.0.1:$PORT" alice alicepw 500 1 200
  sent=$(jq -r .sent <<<"$output")
  got=$(jq -r .received <<<"$output")
  [ "$sent" -gt 0 ]
  [ "$got" -gt 0 ]
  wait_until 10 settled
  [ "$(stat internal_packets)" -ge "$got" ]
  [ "$(stat peer_to_client_packets)" -eq "$(stat internal_packets)" ]
  base=$(stat internal_packets)
  # B with a permission only: Data indications (the generator counts only those).
  mrun -T 30 -s 0 "$LOAD" "127.0.0.1:$PORT" alice alicepw 500 1 200 --b-side permission
  [ "$(jq -r .received <<<"$output")" -gt 0 ]
  wait_until 10 settled
  [ "$(stat internal_packets)" -gt "$base" ]
  base=$(stat internal_packets)
  dropped=$(stat dropped_packets)
  # B without a permission for A's relayed address: B gets nothing, and the
  # server counts the drops.
  mrun -T 30 -s 0 "$LOAD" "127.0.0.1:$PORT" alice alicepw 500 1 200 --b-side none
  sent=$(jq -r .sent <<<"$output")
  [ "$sent" -gt 0 ]
  [ "$(jq -r .received <<<"$output")" -eq 0 ]
  wait_until 10 settled
  [ "$(stat internal_packets)" -eq "$base" ]
  [ "$(stat dropped_packets)" -ge $((dropped + sent)) ]
}

@test "without self relay, our own relayed addresses are refused peers (403)" {
  serve --no-self-relay
  mrun -T 30 -s 69 "$LOAD" "127.0.0.1:$PORT" alice alicepw 500 1 200
  [[ "$stderr" == *"channel bind failed"* ]]
  wait_until 10 settled
  [ "$(stat forbidden_peers)" -ge 1 ]
  [ "$(stat internal_packets)" -eq 0 ]
}
