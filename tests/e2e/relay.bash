# Helpers for the mesh-relay tests (070-089). Load after helpers and lab.

# relay_turn_entry SERVER SECRET_FILE [TRANSPORT]: a network map "turn" entry
# with REST credentials minted from SECRET_FILE (as mesh-coord does).
relay_turn_entry() {
  local server=$1 secret=$2 transport=${3:-udp} cred
  cred=$(mesh-relay credential --auth-secret-file "$secret" --name lab --ttl 3600 --json)
  jq -c --arg s "$server" --arg t "$transport" \
    '{server: $s, transport: $t, username: .username, password: .password, expires_at: .expires_at}' <<<"$cred"
}

# relay_write_map SELF PEER: write SELF's map (lab_map + the turn entry)
# atomically, as a coordinator would push it.
relay_write_map() {
  local self=$1 peer=$2 f="$BATS_TEST_TMPDIR/$1.map.json"
  lab_map "$self" "$peer" | jq --slurpfile t "$BATS_TEST_TMPDIR/turn.json" '. + {turn: $t}' >"$f.tmp"
  if ! cmp -s "$f.tmp" "$f"; then mv "$f.tmp" "$f"; else rm -f "$f.tmp"; fi
}

# A bounded background loop standing in for the coordinator: whenever a
# client rewrites its endpoints document, the other peer's map is rewritten.
relay_coordinator() {
  local a=$1 b=$2 i
  for ((i = 0; i < 1800; i++)); do
    relay_write_map "$a" "$b"
    relay_write_map "$b" "$a"
    sleep 0.2
  done
}

# relay_clients A B: start `mesh-relay client` in both namespaces and the
# coordinator loop; wait until both announce a relayed candidate.
# RELAY_CLIENT: another mesh-relay binary for the clients (benchmarks);
# RELAY_CLIENT_ARGS: extra client flags (e.g. --tls-ca FILE).
relay_clients() {
  local a=$1 b=$2 n
  relay_write_map "$a" "$b"
  relay_write_map "$b" "$a"
  start_daemon coordinator relay_coordinator "$a" "$b"
  for n in "$a" "$b"; do
    start_daemon "client-$n" ip netns exec "$(lab_ns "$n")" "${RELAY_CLIENT:-mesh-relay}" client --keepalive 1 ${RELAY_CLIENT_ARGS:-} \
      --key "$BATS_TEST_TMPDIR/$n.key" --endpoints-out "$BATS_TEST_TMPDIR/$n.endpoints.json" \
      "$BATS_TEST_TMPDIR/$n.map.json"
  done
  for n in "$a" "$b"; do
    wait_until 20 relay_has_candidate "$n"
  done
}

relay_has_candidate() {
  [ "$(jq -r '.candidates[0].kind // empty' "$BATS_TEST_TMPDIR/$1.endpoints.json" 2>/dev/null)" = relay ]
}

relay_candidate_changed() {
  local now
  now=$(jq -r '.candidates[0].endpoint // empty' "$BATS_TEST_TMPDIR/$1.endpoints.json" 2>/dev/null)
  [ -n "$now" ] && [ "$now" != "$2" ]
}

# relay_wg_peer SELF PEER: point SELF's WireGuard at PEER through the local
# relay port the client wrote (what mesh-apply --endpoints does), with the
# maps' keepalive. Not 5 s: with both ends' keepalive at most WireGuard's 5 s
# handshake retry, two initiations that cross (both ends set up together)
# cross again at every retry and the pair never gets a session.
relay_wg_peer() {
  local self=$1 peer=$2 ep
  ep=$(jq -r --arg k "${LAB_PUB[$peer]}" '.peers[] | select(.public_key == $k) | .endpoint' \
    "$BATS_TEST_TMPDIR/$self.endpoints.json")
  [ -n "$ep" ]
  nsx "$self" wg set "${LAB_WG[$self]}" peer "${LAB_PUB[$peer]}" \
    allowed-ips "${LAB_OVERLAY[$peer]%/*}/32" endpoint "$ep" persistent-keepalive 25
}
