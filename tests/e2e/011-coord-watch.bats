#!/usr/bin/env bats
# watch: JSON lines on every serial change, pushed within a second of a
# deletion; cache keeps the node going while the coordinator is down.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
}

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; }

@test "a watcher gets the new map within 1 s of a peer being deleted" {
  coord_join a k
  coord_join b k
  coord_join c k
  start_daemon watch mesh-coord watch --registration a.json --key a.key --cache a.cache
  wait_until 10 has_lines watch.out 1
  [ "$(head -1 watch.out | jq -r '[.peers[].name] | join(",")')" = "b,c" ]
  cmp <(head -1 watch.out | jq -S .) <(jq -S . a.cache)
  [ "$(stat -c %a a.cache)" = 600 ]
  sleep 0.3   # the watcher is now parked in its long-poll
  t0=$(date +%s%N)
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" b
  wait_until 10 has_lines watch.out 2
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  echo "push after delete: ${ms} ms" >&3
  [ "$ms" -lt 1000 ]
  [ "$(sed -n 2p watch.out | jq -r '[.peers[].name] | join(",")')" = "c" ]
  [ "$(sed -n 2p watch.out | jq -r .serial)" -gt "$(sed -n 1p watch.out | jq -r .serial)" ]
  # Every line is one compact map, valid per mesh-netmap(5).
  [ "$(jq -c . watch.out | wc -l)" = 2 ]
}

@test "disable and enable push to watchers; a disabled peer's own watch ends with 77" {
  coord_join a k
  coord_join b k
  start_daemon watch mesh-coord watch --registration a.json --key a.key
  start_daemon watchb mesh-coord watch --registration b.json --key b.key
  wait_until 10 has_lines watch.out 1
  wait_until 10 has_lines watchb.out 1
  mrun -s 0 mesh-coord peer disable --server "$COORD_URL" b
  [ "$(jq -r .disabled <<<"$output")" = true ]
  wait_until 10 has_lines watch.out 2
  [ "$(sed -n 2p watch.out | jq -r '.peers | length')" = 0 ]
  wait_until 10 bash -c "! kill -0 $watchb_pid 2>/dev/null"
  wait "$watchb_pid" || rc=$?
  [ "${rc:-0}" -eq "$EX_NOPERM" ]
  grep -q "peer is disabled" watchb.err
  mrun -s "$EX_NOPERM" mesh-coord map --registration b.json --key b.key
  mrun -s 0 mesh-coord peer enable --server "$COORD_URL" b
  wait_until 10 has_lines watch.out 3
  [ "$(sed -n 3p watch.out | jq -r '.peers[0].name')" = b ]
}

@test "watch emits the cached map when the coordinator is down, then reconnects" {
  coord_join a k
  coord_join b k
  mrun -s 0 mesh-coord watch --registration a.json --key a.key --cache a.cache --count 1
  serial=$(jq -r .serial <<<"$output")
  port=$COORD_PORT
  mesh_teardown   # coordinator gone
  start_daemon watch mesh-coord watch --registration a.json --key a.key --cache a.cache --max-backoff 1
  wait_until 10 has_lines watch.out 1
  [ "$(jq -r .serial watch.out)" = "$serial" ]
  grep -q "cannot reach the coordinator" watch.err
  # The coordinator comes back on the same address with a change waiting.
  COORD_LISTEN=127.0.0.1:$port coord_start coord
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" b
  wait_until 15 has_lines watch.out 2
  [ "$(sed -n 2p watch.out | jq -r '.peers | length')" = 0 ]
  [ "$(jq -r '.peers | length' a.cache)" = 0 ]
}

@test "watch without cache and without coordinator keeps retrying, map fails with 69" {
  coord_join a k
  url=$COORD_URL
  mesh_teardown
  mrun -s "$EX_UNAVAILABLE" mesh-coord map --registration a.json --key a.key
  [[ "$stderr" == *"mesh-coord: error: cannot reach the coordinator at $url"* ]]
  run --separate-stderr timeout 3 mesh-coord watch --registration a.json --key a.key --max-backoff 0.2
  [ "$status" -eq 124 ]
  [ -z "$output" ]
  [ "$(grep -c 'retrying' <<<"$stderr")" -ge 3 ]
}
