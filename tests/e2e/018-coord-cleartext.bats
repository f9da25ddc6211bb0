#!/usr/bin/env bats
# Plain HTTP between hosts: peer requests and responses are sealed, so the
# setup key and the relay passwords in maps never cross the wire readable;
# a join is pinned by the coordinator key its setup key carries; the admin
# token is not sent in clear to another host. Checked on a real link
# between two namespaces with tcpdump capturing every byte.

bats_require_minimum_version 1.5.0
load helpers

setup() {
  require_root
  cd "$BATS_TEST_TMPDIR"
  netns_add c   # the coordinator's host
  netns_add n   # a node on the network
  veth_link c 198.51.100.1/24 n 198.51.100.2/24
  printf 'relay-shared-secret-for-the-test\n' >relay.secret
  chmod 600 relay.secret
  : >coord.out
  start_daemon coord nsx c mesh-coord serve --listen 198.51.100.1:0 --state state \
    --turn 192.0.2.10:3478 --relay-secret-file relay.secret
  wait_for_line coord.out '^listening on http://' 10
  COORD_URL=$(sed -n 's/^listening on //p' coord.out)
  MESH_ADMIN_TOKEN=$(cat state/admin.token)
  export COORD_URL MESH_ADMIN_TOKEN
  # Admin verbs run on the coordinator's host: the token stays local.
  mrun -s 0 ip netns exec "${MESH_RUN}c" mesh-coord setup-key create --server "$COORD_URL" \
    --name k --reusable -o k.sk
  mesh-keygen genkey -o n1.key
  mesh-keygen genkey -o n2.key
}

@test "over plain http the setup key and relay passwords never cross the wire readable" {
  start_daemon cap nsx n tcpdump -i any -U -s 0 -w cap.pcap tcp
  wait_until 10 test -s cap.err
  sleep 0.5
  # The key carries the coordinator key: the join needs no /v1/info.
  [[ "$(cat k.sk)" == *.* ]]
  mrun -s 0 ip netns exec "${MESH_RUN}n" mesh-coord join --server "$COORD_URL" \
    --setup-key-file k.sk --key n1.key --name n1
  printf '%s\n' "$output" >n1.json
  [ "$(jq -r .coordinator_public_key n1.json)" = "$(cat state/coordinator.pub)" ]
  mrun -s 0 ip netns exec "${MESH_RUN}n" mesh-coord map --registration n1.json --key n1.key
  pass=$(jq -r '.turn[0].password' <<<"$output")
  [ -n "$pass" ] && [ "$pass" != null ]
  sleep 0.5
  kill -INT "$cap_pid"; wait "$cap_pid" || true
  # The capture saw the exchange (headers are plain HTTP) but no secret.
  grep -aq 'X-Mesh-Seal: 1' cap.pcap
  grep -aq 'POST /v1/join' cap.pcap
  secret=$(cut -d. -f1 k.sk)
  ! grep -aqF "$secret" cap.pcap
  ! grep -aqF "$pass" cap.pcap
  ! grep -aqF '"setup_key"' cap.pcap
  ! grep -aqF '"turn"' cap.pcap
}

@test "a join learns the coordinator key over plain http only when pinned or told to trust it" {
  cut -d. -f1 k.sk >bare.sk
  mrun -s "$EX_USAGE" ip netns exec "${MESH_RUN}n" mesh-coord join --server "$COORD_URL" \
    --setup-key-file bare.sk --key n1.key
  [[ "$stderr" == *"refusing to learn the coordinator key over plain http"* ]]
  # A setup key pinned to another coordinator: the join's signature cannot
  # verify there, so nothing is enrolled.
  printf '%s.%s\n' "$(cat bare.sk)" "$(mesh-keygen genkey | mesh-keygen pubkey | tr '+/' '-_' | tr -d '=')" >other.sk
  mrun -s "$EX_NOPERM" ip netns exec "${MESH_RUN}n" mesh-coord join --server "$COORD_URL" \
    --setup-key-file other.sk --key n1.key
  # --coordinator-key must agree with the pin.
  mrun -s "$EX_DATAERR" ip netns exec "${MESH_RUN}n" mesh-coord join --server "$COORD_URL" \
    --setup-key-file k.sk --key n1.key --coordinator-key "$(mesh-keygen genkey | mesh-keygen pubkey)"
  [[ "$stderr" == *"is not the coordinator key the setup key carries"* ]]
  mrun -s 0 ip netns exec "${MESH_RUN}c" mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq '.peers | length' <<<"$output")" -eq 0 ]
  # --insecure trusts /v1/info (the body is still sealed).
  mrun -s 0 ip netns exec "${MESH_RUN}n" mesh-coord join --server "$COORD_URL" \
    --setup-key-file bare.sk --key n2.key --insecure
}

@test "the admin token is not sent in clear to another host" {
  mrun -s "$EX_USAGE" ip netns exec "${MESH_RUN}n" mesh-coord peer list --server "$COORD_URL"
  [[ "$stderr" == *"refusing to send the admin token in clear to $COORD_URL"* ]]
  mrun -s 0 ip netns exec "${MESH_RUN}n" mesh-coord peer list --server "$COORD_URL" --insecure --json
  # Unsealed peer requests from another host are refused (a third-party
  # client may leave them unsealed only over TLS or on the host itself).
  mrun -s 0 ip netns exec "${MESH_RUN}n" mesh-coord join --server "$COORD_URL" \
    --setup-key-file k.sk --key n1.key --name n1
  printf '%s\n' "$output" >n1.json
  MESH_LOG=debug ip netns exec "${MESH_RUN}n" mesh-coord map --registration n1.json --key n1.key 2>dbg.txt >/dev/null
  read -r _ _ _ m url _ key _ t _ nonce _ auth _ <<<"$(grep -m1 ' request ' dbg.txt)"
  # The same signed request without X-Mesh-Seal (the seal is checked
  # before the nonce, so this is not refused as a replay).
  mrun ip netns exec "${MESH_RUN}n" curl -s -w '\n%{http_code}' "$url" -H "X-Mesh-Key: $key" \
    -H "X-Mesh-Time: $t" -H "X-Mesh-Nonce: $nonce" -H "X-Mesh-Auth: $auth"
  [ "${output##*$'\n'}" = 401 ]
  [[ "$output" == *"request is not sealed (X-Mesh-Seal: 1 is required over plain HTTP from another host)"* ]]
}
