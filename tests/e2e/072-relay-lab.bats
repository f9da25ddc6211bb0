#!/usr/bin/env bats
# Lab: two peers behind symmetric NATs (no punching possible) get a
# WireGuard tunnel through mesh-relay, and it comes back by itself after the
# relay is killed and restarted.
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
  echo 'restsecret-for-the-lab' >"$BATS_TEST_TMPDIR/secret"
  chmod 600 "$BATS_TEST_TMPDIR/secret"
}

start_relay() {
  start_daemon relay ip netns exec "$(lab_ns inet)" mesh-relay serve \
    --listen 203.0.113.1:3478 --relay-ports 50000-50999 \
    --auth-secret-file "$BATS_TEST_TMPDIR/secret" --threads 2 --coalesce-us 50
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening udp 203.0.113.1:3478$' 10
}

@test "two peers behind symmetric NATs talk WireGuard through mesh-relay, and recover after a relay restart" {
  start_relay
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
  relay_clients a b
  relay_wg_peer a b
  relay_wg_peer b a
  wait_until 30 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c3 -i0.2 -W2 100.64.0.1

  # The relayed addresses are on the relay, the local endpoints on loopback.
  run jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json"
  [[ "$output" == 203.0.113.1:50* ]]
  run jq -r '.peers[0].status + " " + .peers[0].kind + " " + .peers[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json"
  [[ "$output" == "relayed relay 127.0.0.1:"* ]]

  # Kill the relay (no goodbye) and start a new one: the clients re-allocate,
  # rewrite their endpoints, the "coordinator" loop hands out new maps, and
  # the tunnel comes back without touching WireGuard.
  kill -9 "$relay_pid"
  old=$(jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json")
  start_relay
  wait_until 40 relay_candidate_changed a "$old"
  wait_until 60 nsx a ping -c1 -W1 100.64.0.2
  nsx b ping -c3 -i0.2 -W2 100.64.0.1
}

@test "a re-minted credential of the same name carries the allocation on: no new relayed address" {
  start_relay
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
  relay_clients a b
  relay_wg_peer a b
  relay_wg_peer b a
  wait_until 30 nsx a ping -c1 -W1 100.64.0.2
  old=$(jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json")
  # What mesh-coord does every half lifetime: the same NAME, a later EXPIRY.
  # The "coordinator" loop pushes it; the clients refresh every second with it.
  cred=$(mesh-relay credential --auth-secret-file "$BATS_TEST_TMPDIR/secret" --name lab --ttl 7200 --json)
  jq -c '{server: "203.0.113.1:3478", transport: "udp", username: .username, password: .password,
          expires_at: .expires_at}' <<<"$cred" >"$BATS_TEST_TMPDIR/turn.json.tmp"
  mv "$BATS_TEST_TMPDIR/turn.json.tmp" "$BATS_TEST_TMPDIR/turn.json"
  wait_until 10 grep -q "$(jq -r .username <<<"$cred")" "$BATS_TEST_TMPDIR/a.map.json"
  sleep 3
  [ "$(jq -r '.candidates[0].endpoint' "$BATS_TEST_TMPDIR/a.endpoints.json")" = "$old" ]
  ! grep -q 'refresh failed' "$BATS_TEST_TMPDIR/client-a.err"
  nsx a ping -c3 -i0.2 -W2 100.64.0.2
}

@test "a peer's first packets get through before its relayed address reaches our map (own-IP permission, a port of its own); --events prints short lines" {
  start_relay
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
  # b's map lists a without any candidate (a's announce is still on its way),
  # and never changes; a's map gets b's relayed address.
  relay_write_map b a
  relay_write_map a b
  for n in a b; do
    start_daemon "client-$n" ip netns exec "$(lab_ns "$n")" mesh-relay client --events -v \
      --key "$BATS_TEST_TMPDIR/$n.key" --endpoints-out "$BATS_TEST_TMPDIR/$n.endpoints.json" \
      "$BATS_TEST_TMPDIR/$n.map.json"
  done
  wait_until 20 relay_has_candidate b
  relay_write_map a b
  wait_until 20 relay_has_candidate a
  wait_until 10 test "$(jq -r '.peers[0].endpoint // empty' "$BATS_TEST_TMPDIR/a.endpoints.json" 2>/dev/null | cut -c1-10)" = 127.0.0.1:
  relay_wg_peer a b
  nsx b wg set "${LAB_WG[b]}" peer "${LAB_PUB[a]}" allowed-ips "${LAB_OVERLAY[a]%/*}/32"
  wait_until 15 nsx a ping -c1 -W1 "${LAB_OVERLAY[b]%/*}"
  # b answered through a local port of its own for a's relayed address.
  ep=$(nsx b wg show "${LAB_WG[b]}" endpoints | awk '{print $2}')
  [[ "$ep" == 127.0.0.1:* ]]
  grep -q "not in the map yet" "$BATS_TEST_TMPDIR/client-b.err"
  # --events: short lines only, one per document, never the document itself.
  run jq -c . "$BATS_TEST_TMPDIR/client-a.out"
  [ "$status" -eq 0 ]
  grep -q '^{"event":"relay","peers":1,"relayed":"203.0.113.1:50[0-9]*"}$' "$BATS_TEST_TMPDIR/client-a.out"
  ! grep -qv '^{"event":"relay",' "$BATS_TEST_TMPDIR/client-a.out"
  # --events without the document's file is a usage error.
  mrun -s 64 mesh-relay client --events "$BATS_TEST_TMPDIR/a.map.json"
}

@test "a first handshake sent before the peer's relayed address is known goes out when it is, not 5 s later" {
  start_relay
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
  # a's map lists b without candidates at first: b's first packets have
  # nowhere to go through a's relay client.
  relay_write_map a b
  relay_write_map b a
  for n in a b; do
    start_daemon "client-$n" ip netns exec "$(lab_ns "$n")" mesh-relay client \
      --key "$BATS_TEST_TMPDIR/$n.key" --endpoints-out "$BATS_TEST_TMPDIR/$n.endpoints.json" \
      "$BATS_TEST_TMPDIR/$n.map.json"
  done
  wait_until 20 relay_has_candidate a
  wait_until 20 relay_has_candidate b
  relay_write_map b a   # b knows a's relayed address; a does not know b's yet
  wait_until 10 test "$(jq -r '.peers[0].endpoint // empty' "$BATS_TEST_TMPDIR/a.endpoints.json" | cut -c1-10)" = 127.0.0.1:
  relay_wg_peer a b
  nsx b wg set "${LAB_WG[b]}" peer "${LAB_PUB[a]}" allowed-ips "${LAB_OVERLAY[a]%/*}/32"
  # a's WireGuard sends its initiation now (a ping), into a's relay client,
  # which has no relayed address of b's to send it to ...
  ip netns exec "$(lab_ns a)" ping -n -c 1 -W 4 "${LAB_OVERLAY[b]%/*}" > "$BATS_TEST_TMPDIR/first.ping" 2>&1 &
  pinger=$!
  sleep 0.5
  # ... until the map brings it: the held initiation goes out, and the ping
  # is answered well before WireGuard's own retry (5 s).
  relay_write_map a b
  wait "$pinger" || { cat "$BATS_TEST_TMPDIR/first.ping"; false; }
}

@test "the client never takes WireGuard's listen port, even when it starts before WireGuard binds it" {
  start_relay
  relay_turn_entry 203.0.113.1:3478 "$BATS_TEST_TMPDIR/secret" >"$BATS_TEST_TMPDIR/turn.json"
  # Three ephemeral ports in a's namespace, the first the map's listen port,
  # which WireGuard does not hold yet: the client's two sockets (to the relay,
  # and b's local port) would take it one time in three.
  nsx a sysctl -qw net.ipv4.ip_local_port_range="40000 40002"
  LAB_PORT[a]=40000
  relay_write_map a b
  local i
  for i in 1 2 3; do
    start_daemon "client-$i" ip netns exec "$(lab_ns a)" mesh-relay client \
      --key "$BATS_TEST_TMPDIR/a.key" --endpoints-out "$BATS_TEST_TMPDIR/a.endpoints.json" \
      "$BATS_TEST_TMPDIR/a.map.json"
    wait_until 20 relay_has_candidate a
    [ "$(nsx a ss -Hun state all '( sport = :40000 )' | wc -l)" -eq 0 ]
    nsx a wg set "${LAB_WG[a]}" listen-port 40000
    nsx a wg set "${LAB_WG[a]}" listen-port 51820
    kill "$(eval echo "\$client_${i}_pid")"
    wait "$(eval echo "\$client_${i}_pid")" || true
    rm -f "$BATS_TEST_TMPDIR/a.endpoints.json"
  done
}
