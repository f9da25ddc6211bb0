#!/usr/bin/env bats
# The client speaks TURN over TCP to the relay (a map "turn" entry with
# transport tcp, for networks that block UDP toward the relay): WireGuard
# between two peers behind symmetric NATs goes through mesh-relay, and
# through coturn's turnserver, with the client-to-relay leg on TCP.
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

# tcp_session NS: the client in NS holds an established TCP connection to the relay.
tcp_session() {
  nsx "$1" ss -Htn state established "( dport = :3478 )" | grep -q 203.0.113.1:3478
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
