#!/usr/bin/env bats
# watch: JSON lines on every serial change, pushed within a second of a
# deletion; cache keeps the node going while the coordinator is down.
# watch --events: event lines (map, punch, coordinator up/down); punch
# requests (call me maybe) pushed through the target's long-poll.

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
  MESH_LOG=debug run --separate-stderr timeout 3 mesh-coord watch --registration a.json --key a.key --max-backoff 0.2
  [ "$status" -eq 124 ]
  [ -z "$output" ]
  # It keeps trying (each attempt is logged at debug level) but warns once,
  # not on every retry.
  [ "$(grep -c "request GET $url/v1/map" <<<"$stderr")" -ge 5 ]
  [ "$(grep -c 'retrying' <<<"$stderr")" -eq 1 ]
}

# ---- watch --events and call-me-maybe (mesh-coord punch)

key_of() { jq -r .public_key "$1.json"; }
count_lines() { grep -c -- "$2" "$1" 2>/dev/null || true; }
has_match() { [ "$(count_lines "$1" "$2")" -ge "$3" ]; }

@test "watch --events prints event lines and keeps the map in the cache file" {
  coord_join a k
  coord_join b k
  mrun -s 0 mesh-coord watch --registration a.json --key a.key --cache a.cache --events --count 1
  [ "$(wc -l <<<"$output")" -eq 2 ]
  [ "$(sed -n 1p <<<"$output")" = '{"event":"coordinator","state":"up"}' ]
  serial=$(jq -r .serial a.cache)
  [ "$serial" -gt 0 ]
  [ "$(sed -n 2p <<<"$output")" = "{\"event\":\"map\",\"serial\":$serial}" ]
  [ "$(jq -r '[.peers[].name] | join(",")' a.cache)" = b ]
  [ "$(stat -c %a a.cache)" = 600 ]
  coord_map a
  cmp <(jq -S . <<<"$output") <(jq -S . a.cache)
}

@test "watch --events needs --cache (64); bad --max-backoff is a usage error" {
  coord_join a k
  mrun -s "$EX_USAGE" mesh-coord watch --registration a.json --key a.key --events
  [[ "$stderr" == *"--events needs --cache"* ]]
  [ -z "$output" ]
  mrun -s "$EX_USAGE" mesh-coord watch --registration a.json --key a.key --max-backoff 0
}

@test "a punch request reaches the target's watcher at once, through its long-poll" {
  coord_join a k
  coord_join b k
  start_daemon watchb mesh-coord watch --registration b.json --key b.key --cache b.cache --events --wait 60
  wait_until 10 has_match watchb.out '"event":"map"' 1
  sleep 0.3   # b's watcher is now parked in a 60 s long-poll
  t0=$(date +%s%N)
  mrun -s 0 mesh-coord punch --registration a.json --key a.key --peer "$(key_of b)"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[1,0]' ]
  wait_until 10 has_match watchb.out '"event":"punch"' 1
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  echo "punch delivered after ${ms} ms" >&3
  [ "$ms" -lt 2000 ]
  line=$(grep '"event":"punch"' watchb.out)
  [ "$line" = "{\"event\":\"punch\",\"from\":\"$(key_of a)\",\"name\":\"a\"}" ]
  # Delivered once: the next long-poll does not repeat it.
  sleep 1
  [ "$(count_lines watchb.out '"event":"punch"')" -eq 1 ]
  # Two requests from a before b collects them are one event; the map
  # keeps flowing through the same watcher.
  kill "$watchb_pid"; wait "$watchb_pid" 2>/dev/null || true
  mrun -s 0 mesh-coord punch --registration a.json --key a.key --peer "$(key_of b)"
  mrun -s 0 mesh-coord punch --registration a.json --key a.key --peer "$(key_of b)" --peer "$(key_of b)"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[1,0]' ]
  mrun -s 0 mesh-coord watch --registration b.json --key b.key --cache b.cache --events --wait 1 --count 1
  [ "$(grep -c '"event":"punch"' <<<"$output")" -eq 1 ]
}

@test "a punch to a peer the requester cannot see, or to an unknown key, is ignored" {
  coord_key other --group h   # group h is in no rule: a cannot see x
  coord_join a k
  coord_join b k
  coord_join x other
  start_daemon watchx mesh-coord watch --registration x.json --key x.key --cache x.cache --events --wait 60
  start_daemon watchb mesh-coord watch --registration b.json --key b.key --wait 60
  wait_until 10 has_match watchx.out '"event":"map"' 1
  wait_until 10 has_lines watchb.out 1
  unknown=$(mesh-keygen genkey | mesh-keygen pubkey)
  mrun -s 0 mesh-coord punch --registration a.json --key a.key --peer "$(key_of x)" --peer "$unknown"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[0,2]' ]
  # x cannot punch b either (the policy is symmetric here).
  mrun -s 0 mesh-coord punch --registration x.json --key x.key --peer "$(key_of a)"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[0,1]' ]
  # A visible peer is queued; a watcher without --events is not disturbed.
  mrun -s 0 mesh-coord punch --registration a.json --key a.key --peer "$(key_of b)" --peer "$(key_of x)"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[1,1]' ]
  sleep 1
  [ "$(count_lines watchx.out '"event":"punch"')" -eq 0 ]
  [ "$(lines watchb.out)" -eq 1 ]
  # Bad requests: a malformed key is refused locally (65), too many peers (64).
  mrun -s "$EX_DATAERR" mesh-coord punch --registration a.json --key a.key --peer not-a-key
  many=(); for i in $(seq 65); do many+=(--peer "$unknown"); done
  mrun -s "$EX_USAGE" mesh-coord punch --registration a.json --key a.key "${many[@]}"
  mrun -s "$EX_USAGE" mesh-coord punch --registration a.json --key a.key
}

@test "punch requests are rate limited per requester (429, exit 75)" {
  coord_join a k
  coord_join b k
  for i in $(seq 30); do
    mrun -s 0 mesh-coord punch --registration a.json --key a.key --peer "$(key_of b)"
  done
  mrun -s "$EX_TEMPFAIL" mesh-coord punch --registration a.json --key a.key --peer "$(key_of b)"
  [[ "$stderr" == *"coordinator refused: too many punch requests"* ]]
  [ -z "$output" ]
  # Another requester is not affected.
  mrun -s 0 mesh-coord punch --registration b.json --key b.key --peer "$(key_of a)"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[1,0]' ]
}

@test "watch --events: down with the cached map at start; a killed coordinator is noticed at once and its return within 3 s" {
  coord_join a k
  coord_join b k
  mrun -s 0 mesh-coord watch --registration a.json --key a.key --cache a.cache --count 1
  serial=$(jq -r .serial a.cache)
  port=$COORD_PORT
  kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true
  start_daemon watch mesh-coord watch --registration a.json --key a.key --cache a.cache --events --wait 60
  wait_until 10 has_lines watch.out 2
  [ "$(jq -r .state <(sed -n 1p watch.out))" = down ]
  [[ "$(jq -r .error <(sed -n 1p watch.out))" == "cannot reach the coordinator"* ]]
  [ "$(sed -n 2p watch.out)" = "{\"event\":\"map\",\"serial\":$serial}" ]
  COORD_LISTEN=127.0.0.1:$port coord_start coord2
  wait_until 5 has_match watch.out '"state":"up"' 1
  # Parked in a 60 s long-poll, the watcher sees the coordinator die at
  # once (the connection drops), not after its read timeout.
  sleep 0.5
  kill -9 "$coord2_pid"; wait "$coord2_pid" 2>/dev/null || true
  t0=$(date +%s%N)
  wait_until 10 has_match watch.out '"state":"down"' 2
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "down noticed after ${ms} ms" >&3
  [ "$ms" -lt 2000 ]
  sleep 3     # the reconnect delay has grown to its cap
  COORD_LISTEN=127.0.0.1:$port coord_start coord3
  t1=$(date +%s%N)
  wait_until 10 has_match watch.out '"state":"up"' 2
  ms=$(( ($(date +%s%N) - t1) / 1000000 ))
  echo "up again after ${ms} ms" >&3
  [ "$ms" -lt 3000 ]
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" b
  wait_until 10 has_match watch.out '"event":"map"' 2
  [ "$(jq -r '.peers | length' a.cache)" = 0 ]
  [ "$(tail -1 watch.out | jq -r .serial)" = "$(jq -r .serial a.cache)" ]
  # Every line is one event object.
  [ "$(jq -c 'select(.event)' watch.out | wc -l)" = "$(wc -l <watch.out)" ]
  grep -q "retrying" watch.err
}

@test "after its first map a watcher gets deltas, and each map it writes is the coordinator's whole map" {
  coord_join a k
  coord_join b k
  coord_join c k
  start_daemon watch mesh-coord watch --registration a.json --key a.key --cache a.cache
  wait_until 10 has_lines watch.out 1
  local n=1 step deltas
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"],"proto":"tcp","ports":[22]}]}' >p2.json
  for step in join rename rotate delete policy; do
    case $step in
      join) coord_join d k ;;
      rename) mrun -s 0 mesh-coord peer rename --server "$COORD_URL" c c2 ;;
      rotate) mrun -s 0 mesh-coord rotate-key --registration d.json --key d.key ;;
      delete) mrun -s 0 mesh-coord peer delete --server "$COORD_URL" b ;;
      policy) mrun -s 0 mesh-coord policy set --server "$COORD_URL" p2.json ;;
    esac
    n=$((n + 1))
    wait_until 10 has_lines watch.out "$n"
    # The whole map, asked without a delta; the watcher's line and cache
    # hold the same.
    mrun -s 0 mesh-coord map --registration a.json --key a.key
    cmp <(sed -n "${n}p" watch.out | jq -S .) <(printf '%s\n' "$output" | jq -S .)
    cmp <(sed -n "${n}p" watch.out) a.cache
  done
  [ "$(jq -r '[.peers[].name] | join(",")' a.cache)" = "c2,d" ]
  [ "$(jq -r '.peers[] | select(.name == "d") | .public_key' a.cache)" = "$(jq -r .public_key d.json)" ]
  # Every map after the first came as a delta.
  deltas=$(curl -s -H "Authorization: Bearer $MESH_ADMIN_TOKEN" "$COORD_URL/metrics" |
    awk '$1 == "mesh_coord_map_deltas_total" {print $2}')
  echo "deltas served: $deltas"
  [ "$deltas" -ge 5 ]
}
