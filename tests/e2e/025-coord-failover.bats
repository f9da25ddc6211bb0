#!/usr/bin/env bats
# Several coordinator URLs (replicas): every verb tries them in order and
# stays on the one that answers; a watch whose coordinator dies continues on
# the next without missing a map. Replicas share one store in production
# (PostgreSQL, 0xx-coord-postgres.bats); here the second coordinator serves
# a copy of the first one's state, which is what a replica sees.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

# A URL nothing listens on any more: a coordinator started and stopped.
dead_url() {
  COORD_STATE=$BATS_TEST_TMPDIR/gone$1 coord_start "gone$1"
  local pid_var="gone$1_pid"
  kill "${!pid_var}"
  wait "${!pid_var}" || true
  printf '%s' "$COORD_URL"
}

setup() {
  cd "$BATS_TEST_TMPDIR"
  DEAD_URL=$(dead_url 1)
  coord_start coord
  coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
}

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; }

@test "join records every --server; verbs skip a dead coordinator and say so" {
  mesh-keygen genkey -o a.key
  mrun -s 0 mesh-coord join --server "$DEAD_URL" --server "$COORD_URL" \
    --setup-key-file k.sk --key a.key --name a
  printf '%s\n' "$output" >a.json
  [ "$(jq -c .servers a.json)" = "[\"$DEAD_URL\",\"$COORD_URL\"]" ]
  [ "$(jq -r .server a.json)" = "$DEAD_URL" ]
  grep -q "coordinator $DEAD_URL failed (cannot reach the coordinator at $DEAD_URL" <<<"$stderr"
  grep -q "trying $COORD_URL" <<<"$stderr"
  mrun -s 0 mesh-coord map --registration a.json --key a.key
  [ "$(jq -r .self.name <<<"$output")" = a ]
  # Admin verbs too (the connection was never made, so a retry is safe).
  mrun -s 0 mesh-coord peer list --server "$DEAD_URL" --server "$COORD_URL" --json
  [ "$(jq -r '.peers[0].name' <<<"$output")" = a ]
  # Each --server takes one URL: a positional argument after it stays one.
  mrun -s 0 mesh-coord peer show --server "$DEAD_URL" --server "$COORD_URL" a --json
  [ "$(jq -r .name <<<"$output")" = a ]
  # --server on the command line replaces the registration's list.
  mrun -s "$EX_UNAVAILABLE" mesh-coord map --registration a.json --key a.key --server "$DEAD_URL"
  grep -q "cannot reach the coordinator at $DEAD_URL" <<<"$stderr"
}

@test "with no coordinator answering, the error names each failure and exits 69" {
  DEAD2=$(dead_url 2)
  coord_join a k
  mrun -s "$EX_UNAVAILABLE" mesh-coord map --registration a.json --key a.key \
    --server "$DEAD_URL" --server "$DEAD2"
  grep -q "no coordinator answered: cannot reach the coordinator at $DEAD_URL.*; cannot reach the coordinator at $DEAD2" <<<"$stderr"
}

@test "a registration with a bad servers list is refused" {
  coord_join a k
  jq '.servers = []' a.json >bad.json
  mrun -s "$EX_DATAERR" mesh-coord map --registration bad.json --key a.key
  grep -q "servers: expected a non-empty array of URLs" <<<"$stderr"
  jq '.servers = ["ok", 7]' a.json >bad.json
  mrun -s "$EX_DATAERR" mesh-coord map --registration bad.json --key a.key
}

@test "a watch whose coordinator is killed continues on the next one without missing a map" {
  coord_join a k
  coord_join b k
  # The replica: a second coordinator on a copy of the first one's state.
  cp -a "$COORD_STATE" state2
  A_URL=$COORD_URL A_PID=$coord_pid
  COORD_STATE=$BATS_TEST_TMPDIR/state2 coord_start coord2
  B_URL=$COORD_URL
  jq --arg a "$A_URL" --arg b "$B_URL" '.servers = [$a, $b]' a.json >a2.json
  start_daemon watch mesh-coord watch --registration a2.json --key a.key --max-backoff 0.2
  wait_until 10 has_lines watch.out 1
  first=$(sed -n 1p watch.out | jq -r .serial)
  sleep 0.3   # parked in its long-poll on A
  kill -9 "$A_PID"
  # A change on B while the watch is moving over reaches it.
  mrun -s 0 mesh-coord peer delete --server "$B_URL" b
  wait_until 10 has_lines watch.out 2
  [ "$(sed -n 2p watch.out | jq -r '.peers | length')" = 0 ]
  [ "$(sed -n 2p watch.out | jq -r .serial)" -gt "$first" ]
  grep -q "trying $B_URL" watch.err
  kill "$watch_pid"
}
