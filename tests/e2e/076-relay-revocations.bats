#!/usr/bin/env bats
# A deleted peer's relay credentials: mesh-coord publishes them
# (GET /v1/relay/revoked), mesh-relay serve --revocations follows the list,
# and the credentials the peer still holds get 401 within seconds while its
# allocation ends. Coordinator and relay on loopback; the maps' TURN server
# (192.0.2.10, never contacted) only names where peers would go: the test
# takes the credentials from a peer's map to the relay itself.
bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  T=$BATS_TEST_TMPDIR
  cd "$T"
  printf 'the-relay-secret\n' >relay.secret
  chmod 600 relay.secret
}

# relay_start NAME: mesh-relay following the coordinator; sets RPORT.
relay_start() {
  start_daemon "$1" mesh-relay serve --listen 127.0.0.1:0 --auth-secret-file "$T/relay.secret" \
    --revocations "$COORD_URL" --threads 1 --stats-file "$T/$1.stats.json" -v
  wait_for_line "$T/$1.out" '^listening udp 127\.0\.0\.1:[0-9]+$' 10
  RPORT=$(sed -n 's/^listening udp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/$1.out")
}

# creds PEER: the relay username and password file from PEER's map.
creds() {
  coord_map "$1"
  USERNAME=$(jq -r '.turn[0].username' <<<"$output")
  jq -r '.turn[0].password' <<<"$output" >"$T/$1.pw"
}

# check_as PEER: mrun an Allocate on the relay with PEER's cached credentials
# (PEER.user, PEER.pw), expecting exit status $want.
check_as() {
  mrun -s "$want" mesh-relay check --server "127.0.0.1:$RPORT" --username "$(cat "$T/$1.user")" \
    --password-file "$T/$1.pw"
}

@test "a deleted peer's cached relay credentials get 401 within seconds, and its allocation ends" {
  coord_start coord --turn 192.0.2.10:3478 --relay-secret-file "$T/relay.secret"
  relay_start relay
  coord_key k --reusable
  coord_join alice k
  coord_join bob k
  creds alice
  echo "$USERNAME" >alice.user
  [[ "$USERNAME" =~ ^[0-9]+:alice@[0-9]+$ ]]
  creds bob
  echo "$USERNAME" >bob.user
  want=0 check_as alice
  # alice holds an allocation (as a relayed node does) when the admin deletes her.
  start_daemon holder mesh-relay check --server "127.0.0.1:$RPORT" --username "$(cat alice.user)" \
    --password-file "$T/alice.pw" --hold 30
  wait_until 10 jq -e '.allocations == 1' "$T/relay.stats.json"
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" alice
  start=$(date +%s%N)
  wait_until 5 jq -e '.allocations == 0 and .allocations_revoked == 1' "$T/relay.stats.json"
  elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "allocation ended ${elapsed_ms} ms after the delete" >&3
  want=$EX_NOPERM check_as alice
  [ "$output" = "error 401 Unauthorized" ]
  # Others are not affected, and a new peer named alice is another subject.
  want=0 check_as bob
  rm -f alice.key
  coord_join alice k
  creds alice
  [ "$USERNAME" != "$(cat alice.user)" ]
  echo "$USERNAME" >alice2.user
  mrun -s 0 mesh-relay check --server "127.0.0.1:$RPORT" --username "$(cat alice2.user)" \
    --password-file "$T/alice.pw"
}

@test "revocations survive a coordinator restart and reach a relay started later" {
  coord_start coord --turn 192.0.2.10:3478 --relay-secret-file "$T/relay.secret"
  coord_key k
  coord_join carol k
  creds carol
  echo "$USERNAME" >carol.user
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" carol
  kill "$coord_pid"; wait "$coord_pid" || true
  coord_start coord2 --turn 192.0.2.10:3478 --relay-secret-file "$T/relay.secret"
  relay_start relay
  wait_until 10 grep -q 'revocations: at [1-9]' "$T/relay.err"
  want=$EX_NOPERM check_as carol
  [ "$output" = "error 401 Unauthorized" ]
}

@test "the revocations endpoint refuses requests not signed with the relay secret" {
  coord_start coord --turn 192.0.2.10:3478 --relay-secret-file "$T/relay.secret"
  mrun -s 0 curl -s -o /dev/null -w '%{http_code}' "$COORD_URL/v1/relay/revoked?after=0"
  [ "$output" = 401 ]
  mrun -s 0 curl -s -o /dev/null -w '%{http_code}' -H "X-Mesh-Relay-Auth: $(date +%s):00" \
    "$COORD_URL/v1/relay/revoked?after=0"
  [ "$output" = 401 ]
  # A relay with another secret cannot follow (it logs why and retries).
  printf 'not-the-secret\n' >other.secret
  start_daemon relay mesh-relay serve --listen 127.0.0.1:0 --auth-secret-file "$T/other.secret" \
    --revocations "$COORD_URL" --threads 1
  wait_until 10 grep -q 'revocations: .*401' "$T/relay.err"
  # Bad flags: documented exit status 64.
  echo 'dave:davepw' >users
  mrun -s "$EX_USAGE" mesh-relay serve --listen 127.0.0.1:0 --users-file users \
    --revocations "$COORD_URL"
  [[ "$stderr" == *"--auth-secret-file"* ]]
  mrun -s "$EX_USAGE" mesh-relay serve --listen 127.0.0.1:0 --auth-secret-file relay.secret \
    --revocations ftp://example
}

@test "with several --revocations URLs (replicas) the relay follows the one that answers" {
  # A coordinator URL that no longer answers comes first.
  COORD_STATE=$T/gone coord_start gone --turn 192.0.2.10:3478 --relay-secret-file "$T/relay.secret"
  dead=$COORD_URL
  kill "$gone_pid"; wait "$gone_pid" || true
  coord_start coord --turn 192.0.2.10:3478 --relay-secret-file "$T/relay.secret"
  start_daemon relay mesh-relay serve --listen 127.0.0.1:0 --auth-secret-file "$T/relay.secret" \
    --revocations "$dead" --revocations "$COORD_URL" --threads 1 -v
  wait_for_line "$T/relay.out" '^listening udp 127\.0\.0\.1:[0-9]+$' 10
  RPORT=$(sed -n 's/^listening udp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/relay.out")
  coord_key k
  coord_join erin k
  creds erin
  echo "$USERNAME" >erin.user
  want=0 check_as erin
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" erin
  wait_until 5 grep -q 'revocations: at [1-9]' "$T/relay.err"
  want=$EX_NOPERM check_as erin
  [ "$output" = "error 401 Unauthorized" ]
  grep -q "revocations: cannot reach $dead" "$T/relay.err"
  grep -q "revocations: following $COORD_URL again" "$T/relay.err"
}
