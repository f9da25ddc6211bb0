#!/usr/bin/env bats
# kill -9 and restart lose nothing: peers, keys, policy, maps (with their
# serials), endpoints and the audit log come back identical.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

snapshot() {  # everything a client can observe, minus activity timestamps
  local dir=$1
  mkdir -p "$dir"
  mesh-coord peer list --server "$COORD_URL" --json | jq -S 'del(.peers[].last_seen)' >"$dir/peers"
  mesh-coord setup-key list --server "$COORD_URL" --json | jq -S . >"$dir/keys"
  mesh-coord policy get --server "$COORD_URL" | jq -S . >"$dir/policy"
  mesh-coord events --server "$COORD_URL" >"$dir/events"
  for p in a b c; do
    mesh-coord map --registration "$p.json" --key "$p.key" | jq -S . >"$dir/map-$p"
  done
}

@test "kill -9 right after acknowledged writes, restart serves identical state" {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  coord_key k --reusable --group g
  coord_key o --group ops
  coord_join a k
  coord_join b k
  coord_join c o
  printf '{"groups":{"g":{},"ops":{}},"rules":[{"src":["ops"],"dst":["g"],"proto":"tcp","ports":[22]},{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  printf '{"version":1,"candidates":[{"endpoint":"198.51.100.7:4500","kind":"srflx"}]}' |
    mesh-coord announce --registration b.json --key b.key
  mrun -s 0 mesh-coord peer rename --server "$COORD_URL" c c
  mrun -s 0 mesh-coord peer set-groups --server "$COORD_URL" a g extra
  snapshot before
  # The last acknowledged write, then kill -9 at once.
  mrun -s 0 mesh-coord setup-key revoke --server "$COORD_URL" o
  kill -9 "$coord_pid"
  wait "$coord_pid" 2>/dev/null || true
  port=$COORD_PORT
  COORD_LISTEN=127.0.0.1:$port coord_start coord
  [ "$COORD_PORT" = "$port" ]
  snapshot after
  # Only the revocation (and its event) differ from the snapshot before it.
  diff before/peers after/peers
  diff before/policy after/policy
  for p in a b c; do diff "before/map-$p" "after/map-$p"; done
  [ "$(jq -r '.setup_keys[] | select(.name=="o") | .revoked' after/keys)" = true ]
  diff <(cat before/events) <(head -n "$(wc -l <before/events)" after/events)
  [ "$(tail -1 after/events | jq -r .action)" = setup-key.revoke ]
  [ "$(jq -r '.peers[0].endpoints[0].endpoint' after/map-a)" = 198.51.100.7:4500 ]
  # Addresses are stable and not reused: a new peer gets a fresh one.
  coord_join d k
  [ "$(jq -r '.addresses[0]' d.json)" = 100.64.0.4/10 ]
  [ "$(jq -r '.listen_port' a.json)" = "$(jq -r .self.listen_port after/map-a)" ]
  [ "$(jq -r .serial after/map-a)" -ge 1 ]
}

@test "the admin token, coordinator key and IPv6 prefix survive restarts" {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  tok=$(cat state/admin.token) pub=$(cat state/coordinator.pub)
  coord_key k
  coord_join a k
  v6=$(jq -r '.addresses[1]' a.json)
  mesh_teardown
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord
  [ "$(cat state/admin.token)" = "$tok" ]
  [ "$(cat state/coordinator.pub)" = "$pub" ]
  coord_map a
  [ "$(jq -r '.self.addresses[1]' <<<"$output")" = "$v6" ]
  # Moving the overlay under existing peers is refused.
  mesh_teardown
  mrun -s "$EX_CONFIG" mesh-coord serve --state state --ipv4-prefix 100.100.0.0/16
  [[ "$stderr" == *"ipv4_prefix is 100.64.0.0/10 and peers hold addresses in it"* ]]
}

@test "an existing coordinator key or admin token that others can read is refused" {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  mesh_teardown
  for f in coordinator.key admin.token; do
    chmod 0640 "state/$f"
    mrun -s "$EX_CONFIG" mesh-coord serve --state state --listen 127.0.0.1:0
    [[ "$stderr" == *"mesh-coord: error: "*"state/$f: mode 0640 lets group or others read a secret; fix with chmod 600"* ]]
    [ -z "$output" ]
    chmod 0600 "state/$f"
  done
  chown 1:1 state/admin.token
  mrun -s "$EX_CONFIG" mesh-coord serve --state state --listen 127.0.0.1:0
  [[ "$stderr" == *"state/admin.token: owned by uid 1, not by this user"* ]]
  chown "$(id -u):$(id -g)" state/admin.token
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord
}
