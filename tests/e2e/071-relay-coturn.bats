#!/usr/bin/env bats
# Interop: `mesh-relay client` against coturn's turnserver (started here with
# its own temporary configuration, never the system one) carries WireGuard
# between two peers behind symmetric NATs.
bats_require_minimum_version 1.5.0
load helpers
load ../lab/lab
load relay

@test "mesh-relay client carries WireGuard through coturn's turnserver" {
  require_root
  command -v turnserver >/dev/null || skip "coturn is not installed"
  lab_internet none
  lab_nat ra symmetric
  lab_nat rb symmetric
  lab_peer a ra
  lab_peer b rb
  lab_wg a 51820 100.64.0.1/10
  lab_wg b 51820 100.64.0.2/10
  secret='coturn-lab-secret'
  printf '%s\n' "$secret" >"$BATS_TEST_TMPDIR/secret"
  chmod 600 "$BATS_TEST_TMPDIR/secret"
  cat >"$BATS_TEST_TMPDIR/turnserver.conf" <<CONF
listening-ip=203.0.113.1
listening-port=3478
relay-ip=203.0.113.1
use-auth-secret
static-auth-secret=$secret
realm=mesh
fingerprint
no-tls
no-dtls
no-cli
allowed-peer-ip=203.0.113.1
pidfile=$BATS_TEST_TMPDIR/turnserver.pid
db=$BATS_TEST_TMPDIR/turndb
log-file=stdout
simple-log
CONF
  chmod 600 "$BATS_TEST_TMPDIR/turnserver.conf"
  # -c alone: with -n, coturn ignores the -c file too (it would run with
  # defaults on every address and without authentication).
  start_daemon turnserver ip netns exec "$(lab_ns inet)" turnserver -c "$BATS_TEST_TMPDIR/turnserver.conf"
  wait_until 15 eval "nsx inet ss -Hunl | grep -q 203.0.113.1:3478"

  # coturn really runs with that configuration: no credentials, no relay.
  run ip netns exec "$(lab_ns a)" mesh-relay check --server 203.0.113.1:3478
  [ "$status" -ne 0 ]
  [[ "$output" == "error 401"* ]]

  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
  relay_clients a b
  run jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json"

  [[ "$output" == 203.0.113.1:* ]]
  relay_wg_peer a b
  relay_wg_peer b a
  wait_until 30 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c3 -i0.2 -W2 100.64.0.1
  # WireGuard really went through coturn: both allocations relayed data.
  run nsx a wg show "${LAB_WG[a]}" transfer
  [[ "$output" != *$'\t0\t0'* ]]
}
