#!/usr/bin/env bats
# mesh-relay serve on loopback: coturn's own tools as clients (UDP, TCP,
# TLS; static users and REST secret), authentication, peer policy, quotas,
# STUN Binding, statistics, SIGHUP reload, SIGTERM, exit statuses.
bats_require_minimum_version 1.5.0
load helpers

setup() {
  T=$BATS_TEST_TMPDIR
  printf 'alice:alicepw\n# comment\nbob:0x%s\n' \
    "$(printf 'bob:mesh:bobpw' | md5sum | cut -c1-32)" >"$T/users"
  echo 'the-rest-secret' >"$T/secret"
  chmod 600 "$T/users" "$T/secret"
}

# serve [ARGS...]: start mesh-relay on 127.0.0.1, port 0; sets PORT.
serve() {
  start_daemon relay mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/users" \
    --auth-secret-file "$T/secret" --threads 2 --stats-file "$T/stats.json" "$@"
  wait_for_line "$T/relay.out" '^listening udp 127\.0\.0\.1:[0-9]+$' 10
  PORT=$(sed -n 's/^listening udp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out" | head -1)
}

zero_loss() {
  grep -q 'Total lost packets 0 (0.000000%)' <<<"$1" && grep -q 'tot_recv_msgs=100' <<<"$1"
}

@test "turnutils_uclient with a static user over UDP: no loss" {
  serve
  mrun -T 60 -s 0 turnutils_uclient -u alice -w alicepw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  zero_loss "$output"
}

@test "turnutils_uclient with a precomputed-key user and with REST credentials: no loss" {
  serve
  mrun -T 60 -s 0 turnutils_uclient -u bob -w bobpw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  zero_loss "$output"
  mrun -T 60 -s 0 turnutils_uclient -W the-rest-secret -u carol -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  zero_loss "$output"
}

@test "turnutils_uclient over TCP (static and REST): no loss" {
  serve --tcp
  grep -qx "listening tcp 127.0.0.1:$PORT" "$T/relay.out"
  mrun -T 60 -s 0 turnutils_uclient -t -u alice -w alicepw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  zero_loss "$output"
  mrun -T 60 -s 0 turnutils_uclient -t -W the-rest-secret -u dave -y -c -n 50 -m 2 -l 1200 -z 5 -p "$PORT" 127.0.0.1
  zero_loss "$output"
}

@test "turnutils_uclient over TLS: no loss" {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=relay \
    -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
  serve --tls-listen 127.0.0.1:0 --tls-cert "$T/cert.pem" --tls-key "$T/key.pem"
  tport=$(sed -n 's/^listening tls 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out")
  [ -n "$tport" ]
  mrun -T 60 -s 0 turnutils_uclient -t -S -u alice -w alicepw -y -c -n 50 -m 2 -l 1200 -z 5 -p "$tport" 127.0.0.1
  zero_loss "$output"
}

@test "unauthenticated, wrong password and expired REST credentials get 401" {
  serve
  mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT"
  [ "$output" = "error 401 Unauthorized" ]
  echo wrong >"$T/pw"
  mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT" --username alice --password-file "$T/pw"
  [ "$output" = "error 401 Unauthorized" ]
  mrun -s 0 mesh-relay credential --auth-secret-file "$T/secret" --name eve --ttl -60 --json
  jq -r .password <<<"$output" >"$T/pw"
  mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT" \
    --username "$(jq -r .username <<<"$output")" --password-file "$T/pw"
  [ "$output" = "error 401 Unauthorized" ]
  # coturn's client without credentials cannot allocate either.
  mrun -T 30 turnutils_uclient -y -c -n 2 -m 1 -p "$PORT" 127.0.0.1
  [[ "$output$stderr" == *"Cannot complete Allocation"* ]]
  mrun -s 0 mesh-relay credential --auth-secret-file "$T/secret" --name eve --ttl 60 --json
  jq -r .password <<<"$output" >"$T/pw"
  mrun -s 0 mesh-relay check --json --server "127.0.0.1:$PORT" \
    --username "$(jq -r .username <<<"$output")" --password-file "$T/pw"
  [ "$(jq -r .ok <<<"$output")" = true ]
  [[ "$(jq -r .relayed <<<"$output")" == 127.0.0.1:* ]]
}

@test "peers in denied ranges get 403 unless allowed" {
  serve
  echo alicepw >"$T/pw"
  mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT" --username alice \
    --password-file "$T/pw" --peer 198.51.100.7:9
  [ "$output" = "error 403 Forbidden" ]
  kill "$relay_pid"; wait "$relay_pid" || true
  serve --allow-peer 198.51.100.0/24
  mrun -s 0 mesh-relay check --server "127.0.0.1:$PORT" --username alice --password-file "$T/pw" \
    --peer 198.51.100.7:9
}

@test "allocation quota per user: 486" {
  serve --user-quota 1
  echo alicepw >"$T/pw"
  start_daemon holder mesh-relay check --server "127.0.0.1:$PORT" --username alice --password-file "$T/pw" --hold 20
  wait_until 10 grep -q '"allocations": 1' "$T/stats.json"
  mrun -s "$EX_TEMPFAIL" mesh-relay check --server "127.0.0.1:$PORT" --username alice --password-file "$T/pw"
  [ "$output" = "error 486 Allocation Quota Reached" ]
  echo bobpw >"$T/pw2"
  mrun -s 0 mesh-relay check --server "127.0.0.1:$PORT" --username bob --password-file "$T/pw2"
}

@test "STUN Binding is answered on the TURN port; RFC 5780 with an alternate address" {
  serve
  mrun -s 0 turnutils_stunclient -p "$PORT" 127.0.0.1
  [[ "$output" == *"UDP reflexive addr: 127.0.0.1:"* ]]
  kill "$relay_pid"; wait "$relay_pid" || true
  p1=$((20000 + RANDOM % 20000)); p2=$((p1 + 1))
  start_daemon relay2 mesh-relay serve --listen "127.0.0.1:$p1" --alt-listen "127.0.0.2:$p2" \
    --users-file "$T/users" --threads 1
  wait_for_line "$T/relay2.out" "^listening udp 127.0.0.2:$p2$" 10
  mrun -s 0 turnutils_natdiscovery -m -f -p "$p1" 127.0.0.1
  [[ "$output" == *"Endpoint Independent Mapping"* ]]
  [[ "$output" == *"Endpoint Independent Filtering"* ]]
}

@test "the stun client (RFC 3489, no magic cookie) gets its mapped address; with an alternate address, an open network" {
  serve
  sp=$((20000 + RANDOM % 20000))
  # It binds SP and SP+1; exit status is its NAT type code (no alternate
  # address: its change requests go unanswered, "Firewall").
  mrun -T 30 stun "127.0.0.1:$PORT" -v -p "$sp"
  out="$output$stderr"
  [[ "$out" == *"MappedAddress = 127.0.0.1:$sp"* ]]
  [[ "$out" == *"test I = 1"* ]]
  wait_until 5 jq -e '.binding_requests >= 1' "$T/stats.json"
  kill "$relay_pid"; wait "$relay_pid" || true
  p1=$((20000 + RANDOM % 20000)); p2=$((p1 + 1))
  start_daemon relay2 mesh-relay serve --listen "127.0.0.1:$p1" --alt-listen "127.0.0.2:$p2" \
    --users-file "$T/users" --threads 1
  wait_for_line "$T/relay2.out" "^listening udp 127.0.0.2:$p2$" 10
  mrun -T 30 stun "127.0.0.1:$p1" -v -p "$sp"
  out="$output$stderr"
  [[ "$out" == *"MappedAddress = 127.0.0.1:$sp"* ]]
  [[ "$out" == *"ChangedAddress = 127.0.0.2:$p2"* ]]
  [[ "$out" == *"Primary: Open"* ]]
}

@test "stats file and Prometheus metrics; SIGHUP reloads users; SIGTERM exits 0" {
  serve --metrics 127.0.0.1:0
  mport=$(sed -n 's/^listening metrics 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out")
  echo frankpw >"$T/pw"
  mrun -s "$EX_NOPERM" mesh-relay check --server "127.0.0.1:$PORT" --username frank --password-file "$T/pw"
  echo 'frank:frankpw' >>"$T/users"
  kill -HUP "$relay_pid"
  wait_until 10 mesh-relay check --server "127.0.0.1:$PORT" --username frank --password-file "$T/pw"
  mrun -s 0 curl -sf "http://127.0.0.1:$mport/metrics"
  grep -q '^mesh_relay_allocations_created_total [1-9]' <<<"$output"
  grep -q '^mesh_relay_auth_failures_total [1-9]' <<<"$output"
  mrun -s 0 curl -sf "http://127.0.0.1:$mport/stats"
  [ "$(jq -r .users <<<"$output")" = 3 ]
  wait_until 5 jq -e '.requests > 0' "$T/stats.json"
  kill -TERM "$relay_pid"
  rc=0
  wait "$relay_pid" || rc=$?
  [ "$rc" -eq 0 ]
}

@test "bad command lines and credentials files: documented exit statuses" {
  mrun -s "$EX_USAGE" mesh-relay serve --listen 127.0.0.1:0
  [[ "$stderr" == *"--users-file"* ]]
  mrun -s "$EX_USAGE" mesh-relay serve --listen nowhere --users-file "$T/users"
  mrun -s "$EX_NOINPUT" mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/missing"
  echo 'no-colon-here' >"$T/bad"
  mrun -s "$EX_DATAERR" mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/bad"
  [[ "$stderr" == *"bad:1:"* ]]
  mrun -s "$EX_USAGE" mesh-relay serve --listen 0.0.0.0:0 --users-file "$T/users"
  [[ "$stderr" == *"--relay-ip"* ]]
  mrun -s "$EX_USAGE" mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/users" --coalesce-us 20000
  mrun -s "$EX_USAGE" mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/users" --max-connections 0
  mrun -s "$EX_USAGE" mesh-relay serve --listen 127.0.0.1:0 --users-file "$T/users" --handshake-timeout 0
  mrun -s "$EX_USAGE" mesh-relay client --no-such-flag
  mrun -s "$EX_NOINPUT" mesh-relay client "$T/missing-map.json"
  echo '{"version": 1}' >"$T/badmap.json"
  mrun -s "$EX_DATAERR" mesh-relay client "$T/badmap.json"
  # --tls-ca is checked at start, before any map or session.
  mrun -s "$EX_NOINPUT" mesh-relay client --tls-ca "$T/missing.pem" "$T/badmap.json"
  echo 'not a certificate' >"$T/bad.pem"
  mrun -s "$EX_CONFIG" mesh-relay client --tls-ca "$T/bad.pem" "$T/badmap.json"
  [[ "$stderr" == *"cannot load the CA certificates"* ]]
}
