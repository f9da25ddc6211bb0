#!/usr/bin/env bats
# mesh-relay serve's limits on loopback: the relay host's own services are
# not TURN peers (only relay ports are), default quotas, and the TCP/TLS
# listener's connection cap, handshake and idle timeouts and output cap.
# Clients: mesh-relay check, coturn's turnutils_uclient, and raw sockets
# (bash /dev/tcp, socat) for the misbehaving ones.
bats_require_minimum_version 1.5.0
load helpers

setup() {
  T=$BATS_TEST_TMPDIR
  echo 'alice:alicepw' >"$T/users"
  echo alicepw >"$T/pw"
  chmod 600 "$T/users" "$T/pw"
  # A STUN Binding request (RFC 8489: magic cookie, 12-byte transaction id).
  BINDING='\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl'
}

# serve [ARGS...]: mesh-relay on 127.0.0.1, port 0; sets PORT.
serve() {
  start_daemon relay mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/users" \
    --threads 2 --stats-file "$T/stats.json" "$@"
  wait_for_line "$T/relay.out" '^listening udp 127\.0\.0\.1:[0-9]+$' 10
  PORT=$(sed -n 's/^listening udp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out" | head -1)
}

stat() { jq -r ".$1" "$T/stats.json"; }

# binding_on FD: a Binding request on the open connection FD; its answer
# (a Binding success with our transaction id) must come back.
binding_on() {
  local fd=$1 hex len
  printf "$BINDING" >&"$fd"
  hex=$(timeout 5 head -c 20 <&"$fd" | od -An -tx1 | tr -d ' \n')
  [[ "$hex" == 0101????2112a4426162636465666768696a6b6c ]]
  len=$((16#${hex:4:4}))
  [ "$(timeout 5 head -c "$len" <&"$fd" | wc -c)" -eq "$len" ]
}

@test "the relay host's own services are not peers (403); allocations still reach each other" {
  serve
  # 127.0.0.1 is this relay's address: its TURN port (port 0 put it in the
  # relay range), DNS, a port below the range and a port of the range that no
  # allocation holds are refused, even with --allow-peer...
  for peer in "127.0.0.1:$PORT" 127.0.0.1:53 127.0.0.1:49151 127.0.0.1:50000; do
    mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT" --username alice \
      --password-file "$T/pw" --peer "$peer"
    [ "$output" = "error 403 Forbidden" ]
  done
  kill "$relay_pid"; wait "$relay_pid" || true
  serve --allow-peer 127.0.0.0/8
  mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT" --username alice \
    --password-file "$T/pw" --peer "127.0.0.1:$PORT"
  [ "$output" = "error 403 Forbidden" ]
  # ...while two allocations of this relay relay to each other (coturn's
  # client, client to client: each binds a channel to the other's relayed
  # address on 127.0.0.1).
  mrun -T 60 -s 0 turnutils_uclient -u alice -w alicepw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  grep -q 'Total lost packets 0 (0.000000%)' <<<"$output"
  grep -q 'tot_recv_msgs=100' <<<"$output"
  [ "$(stat forbidden_peers)" -ge 1 ]
}

@test "default quotas: the 11th allocation of one user gets 486" {
  serve
  for i in $(seq 10); do
    start_daemon "holder$i" mesh-relay check --server "127.0.0.1:$PORT" --username alice \
      --password-file "$T/pw" --hold 30
  done
  wait_until 15 jq -e '.allocations == 10' "$T/stats.json"
  mrun -s "$EX_TEMPFAIL" mesh-relay check --server "127.0.0.1:$PORT" --username alice --password-file "$T/pw"
  [ "$output" = "error 486 Allocation Quota Reached" ]
}

@test "TCP: connections beyond --max-connections are closed at once; existing ones keep working" {
  serve --tcp --max-connections 2
  exec {a}<>"/dev/tcp/127.0.0.1/$PORT"
  exec {b}<>"/dev/tcp/127.0.0.1/$PORT"
  binding_on "$a"
  wait_until 5 jq -e '.connections == 2' "$T/stats.json"
  # The third is accepted and closed: EOF at once, not a hang.
  exec {c}<>"/dev/tcp/127.0.0.1/$PORT"
  mrun -T 5 -s 0 cat <&"$c"
  [ -z "$output" ]
  binding_on "$a"
  wait_until 5 jq -e '.connections_refused >= 1' "$T/stats.json"
  exec {a}>&- {b}>&- {c}>&-
  # Slots are freed when connections close.
  wait_until 5 jq -e '.connections == 0' "$T/stats.json"
  exec {d}<>"/dev/tcp/127.0.0.1/$PORT"
  binding_on "$d"
  exec {d}>&-
}

@test "TCP and TLS: a silent connection is closed after --handshake-timeout, an idle one after --idle-timeout" {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=relay \
    -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
  serve --tcp --tls-listen 127.0.0.1:0 --tls-cert "$T/cert.pem" --tls-key "$T/key.pem" \
    --handshake-timeout 1 --idle-timeout 2
  tport=$(sed -n 's/^listening tls 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out")
  exec {s}<>"/dev/tcp/127.0.0.1/$PORT"
  exec {t}<>"/dev/tcp/127.0.0.1/$tport"
  # Neither says a word (no TLS ClientHello either): both are closed, EOF.
  mrun -T 6 -s 0 cat <&"$s"
  mrun -T 6 -s 0 cat <&"$t"
  # One that spoke TURN once but holds no allocation: closed when idle.
  exec {i}<>"/dev/tcp/127.0.0.1/$PORT"
  binding_on "$i"
  start=$(date +%s)
  mrun -T 8 -s 0 cat <&"$i"
  [ $(( $(date +%s) - start )) -ge 1 ]
  wait_until 5 jq -e '.connections_timed_out >= 3' "$T/stats.json"
  exec {s}>&- {t}>&- {i}>&-
}

@test "TCP: a client that sends requests and never reads is disconnected; memory stays bounded" {
  serve --tcp
  # 2^21 Binding requests (40 MiB) whose 64 MiB of answers are never read.
  printf "$BINDING" >"$T/reqs"
  for _ in $(seq 21); do cat "$T/reqs" "$T/reqs" >"$T/reqs2"; mv "$T/reqs2" "$T/reqs"; done
  [ "$(stat -c %s "$T/reqs" 2>/dev/null || wc -c <"$T/reqs")" -eq $((20 << 21)) ]
  hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$relay_pid/status"; }
  before=$(hwm)
  # socat -u only writes: the relay must close the connection (socat then
  # fails to write) rather than queue every answer.
  mrun -T 60 socat -u "FILE:$T/reqs" "TCP:127.0.0.1:$PORT"
  wrote=$status
  after=$(hwm)
  echo "VmHWM ${before} kB -> ${after} kB" >&3
  [ "$wrote" -ne 0 ]
  wait_until 5 jq -e '.connections_overflowed >= 1' "$T/stats.json"
  # The output cap is 4 MiB; socket buffers and allocator slack come on top.
  [ $((after - before)) -lt $((24 * 1024)) ]
  # The relay still answers.
  exec {a}<>"/dev/tcp/127.0.0.1/$PORT"
  binding_on "$a"
  exec {a}>&-
}
