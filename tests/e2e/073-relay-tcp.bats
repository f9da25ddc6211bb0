#!/usr/bin/env bats
# The client speaks TURN over TCP or TLS to the relay (a map "turn" entry
# with transport tcp or tls, for networks that block UDP toward the relay):
# WireGuard between two peers behind symmetric NATs goes through
# mesh-relay, and through coturn's turnserver, with the client-to-relay leg
# on TCP or TLS; a TLS server whose certificate does not verify is refused.
bats_require_minimum_version 1.5.0
load helpers
load ../lab/lab
load relay

setup() {
  require_root
  lab_internet none
  lab_nat ra symmetric
  lab_nat rb symmetric
  lab_peer a ra
  lab_peer b rb
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51820 100.64.0.2/10
  echo 'restsecret-for-tcp' >"$BATS_TEST_TMPDIR/secret"
  chmod 600 "$BATS_TEST_TMPDIR/secret"
  # UDP toward the relay's port is blocked on a's router: only TCP gets through.
  nsx ra nft -f - <<'NFT'
table ip blockudp {
  chain forward { type filter hook forward priority -10; udp dport 3478 drop; }
}
NFT
}

# tcp_session NS: the client in NS holds an established TCP connection to
# the relay (on port $RELAY_PORT, 3478 unless set).
tcp_session() {
  local port=${RELAY_PORT:-3478}
  nsx "$1" ss -Htn state established "( dport = :$port )" | grep -q "203.0.113.1:$port"
}

# tls_cert NAME: a self-signed certificate (its own CA) for the relay's
# address, as NAME.pem and NAME.key.
tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=relay \
    -addext "subjectAltName=IP:203.0.113.1" \
    -keyout "$BATS_TEST_TMPDIR/$1.key" -out "$BATS_TEST_TMPDIR/$1.pem" 2>/dev/null
}

tunnel_works() {
  relay_wg_peer a b
  relay_wg_peer b a
  wait_until 30 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c3 -i0.2 -W2 100.64.0.1
  tcp_session a
  tcp_session b
}

@test "mesh-relay client over TCP to mesh-relay serve --tcp carries WireGuard, and reconnects after a relay restart" {
  start_daemon relay ip netns exec "$(lab_ns inet)" mesh-relay serve --tcp \
    --listen 203.0.113.1:3478 --relay-ports 50000-50999 --auth-secret-file "$BATS_TEST_TMPDIR/secret"
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening tcp 203.0.113.1:3478$' 10
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" tcp >"$BATS_TEST_TMPDIR/turn.json"
  relay_clients a b
  tunnel_works

  # A restart closes the connections: the clients reconnect and re-allocate.
  kill "$relay_pid"
  old=$(jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json")
  start_daemon relay2 ip netns exec "$(lab_ns inet)" mesh-relay serve --tcp \
    --listen 203.0.113.1:3478 --relay-ports 51000-51999 --auth-secret-file "$BATS_TEST_TMPDIR/secret"
  wait_for_line "$BATS_TEST_TMPDIR/relay2.out" '^listening tcp 203.0.113.1:3478$' 10
  wait_until 40 relay_candidate_changed a "$old"
  wait_until 60 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c3 -i0.2 -W2 100.64.0.1
}

@test "mesh-relay client over TCP to coturn's turnserver carries WireGuard" {
  command -v turnserver >/dev/null || skip "coturn is not installed"
  start_daemon turnserver ip netns exec "$(lab_ns inet)" turnserver -n \
    --listening-ip 203.0.113.1 --listening-port 3478 --relay-ip 203.0.113.1 \
    --min-port 50000 --max-port 50999 --use-auth-secret \
    --static-auth-secret "$(cat "$BATS_TEST_TMPDIR/secret")" --realm mesh \
    --no-tls --no-dtls --no-cli --allowed-peer-ip 203.0.113.1 \
    --pidfile "$BATS_TEST_TMPDIR/turnserver.pid" --db "$BATS_TEST_TMPDIR/turndb" \
    --log-file stdout --simple-log
  wait_until 15 eval "nsx inet ss -Htnl | grep -q 203.0.113.1:3478"
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" tcp >"$BATS_TEST_TMPDIR/turn.json"
  relay_clients a b
  tunnel_works
}

@test "mesh-relay client over TLS to mesh-relay serve --tls-listen carries WireGuard; an unverified certificate is refused" {
  tls_cert relay
  tls_cert other
  start_daemon relay ip netns exec "$(lab_ns inet)" mesh-relay serve --listen 203.0.113.1:3478 \
    --tls-listen 203.0.113.1:5349 --tls-cert "$BATS_TEST_TMPDIR/relay.pem" --tls-key "$BATS_TEST_TMPDIR/relay.key" \
    --relay-ports 50000-50999 --auth-secret-file "$BATS_TEST_TMPDIR/secret"
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening tls 203.0.113.1:5349$' 10
  relay_turn_entry 203.0.113.1:5349 "$BATS_TEST_TMPDIR/secret" tls >"$BATS_TEST_TMPDIR/turn.json"

  # A certificate from another CA: no session, and the client says why.
  relay_write_map a b
  start_daemon client-a ip netns exec "$(lab_ns a)" mesh-relay client --keepalive 1 \
    --tls-ca "$BATS_TEST_TMPDIR/other.pem" --key "$BATS_TEST_TMPDIR/a.key" \
    --endpoints-out "$BATS_TEST_TMPDIR/a.endpoints.json" "$BATS_TEST_TMPDIR/a.map.json"
  wait_until 10 grep -q 'TLS handshake with 203.0.113.1:5349: certificate' "$BATS_TEST_TMPDIR/client-a.err"
  ! relay_has_candidate a
  kill "$client_a_pid"
  wait "$client_a_pid" 2>/dev/null || true

  RELAY_CLIENT_ARGS="--tls-ca $BATS_TEST_TMPDIR/relay.pem" relay_clients a b
  RELAY_PORT=5349 tunnel_works
}

@test "mesh-relay client over TLS to coturn's turnserver carries WireGuard" {
  command -v turnserver >/dev/null || skip "coturn is not installed"
  tls_cert relay
  start_daemon turnserver ip netns exec "$(lab_ns inet)" turnserver -n \
    --listening-ip 203.0.113.1 --listening-port 3478 --tls-listening-port 5349 --relay-ip 203.0.113.1 \
    --cert "$BATS_TEST_TMPDIR/relay.pem" --pkey "$BATS_TEST_TMPDIR/relay.key" \
    --min-port 50000 --max-port 50999 --use-auth-secret \
    --static-auth-secret "$(cat "$BATS_TEST_TMPDIR/secret")" --realm mesh \
    --no-dtls --no-cli --allowed-peer-ip 203.0.113.1 \
    --pidfile "$BATS_TEST_TMPDIR/turnserver.pid" --db "$BATS_TEST_TMPDIR/turndb" \
    --log-file stdout --simple-log
  wait_until 15 eval "nsx inet ss -Htnl | grep -q 203.0.113.1:5349"
  relay_turn_entry 203.0.113.1:5349 "$BATS_TEST_TMPDIR/secret" tls >"$BATS_TEST_TMPDIR/turn.json"
  RELAY_CLIENT_ARGS="--tls-ca $BATS_TEST_TMPDIR/relay.pem" relay_clients a b
  RELAY_PORT=5349 tunnel_works
}
