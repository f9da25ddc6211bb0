# Helpers for the mesh-coord end-to-end tests (tests/e2e/01*-coord-*.bats).
#   coord_start [NAME] [SERVE-FLAGS...]   start a coordinator on 127.0.0.1:0 with
#        state in $BATS_TEST_TMPDIR/state (or $COORD_STATE); sets COORD_URL,
#        COORD_PORT and exports MESH_ADMIN_TOKEN
#   coord_key NAME [create flags...]      create setup key NAME into NAME.sk
#   coord_join PEER SETUPKEY              new node key PEER.key, registration PEER.json
#   coord_map PEER                        the peer's map into $output (checked)
#   peer_names                            names of the peers in the map in $output

coord_start() {
  local name=${1:-coord}; shift || true
  COORD_STATE=${COORD_STATE:-$BATS_TEST_TMPDIR/state}
  local listen=${COORD_LISTEN:-127.0.0.1:0}
  : >"$BATS_TEST_TMPDIR/$name.out"
  start_daemon "$name" mesh-coord serve --listen "$listen" --state "$COORD_STATE" "$@"
  wait_for_line "$BATS_TEST_TMPDIR/$name.out" '^listening on http://' 10
  [ "$(wc -l <"$BATS_TEST_TMPDIR/$name.out")" -eq 1 ]
  COORD_URL=$(sed -n 's/^listening on //p' "$BATS_TEST_TMPDIR/$name.out")
  COORD_PORT=${COORD_URL##*:}
  MESH_ADMIN_TOKEN=$(cat "$COORD_STATE/admin.token")
  export COORD_URL COORD_PORT MESH_ADMIN_TOKEN
}

coord_key() {
  local name=$1; shift
  mrun -s 0 mesh-coord setup-key create --server "$COORD_URL" --name "$name" \
    -o "$BATS_TEST_TMPDIR/$name.sk" "$@"
}

coord_join() {
  local peer=$1 key=$2
  [ -f "$BATS_TEST_TMPDIR/$peer.key" ] || mesh-keygen genkey -o "$BATS_TEST_TMPDIR/$peer.key"
  mrun -s 0 mesh-coord join --server "$COORD_URL" --setup-key-file "$BATS_TEST_TMPDIR/$key.sk" \
    --key "$BATS_TEST_TMPDIR/$peer.key" --name "$peer"
  printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/$peer.json"
}

coord_map() {
  mrun -s 0 mesh-coord map --registration "$BATS_TEST_TMPDIR/$1.json" --key "$BATS_TEST_TMPDIR/$1.key"
}

peer_names() { jq -r '[.peers[].name] | sort | join(",")' <<<"$output"; }

# Runs a signed request with MESH_LOG=debug and sets REQ_* from the first
# logged request line matching CAPTURE_MATCH (default " request "): method,
# URL, headers, sealed body, so it can be replayed with curl (`replay ""
# @body.bin` sends the captured body itself). Its stdout is in capture.out.
capture() {
  MESH_LOG=debug "$@" 2>dbg.txt >capture.out || true
  local line
  line=$(grep -m1 -- "${CAPTURE_MATCH:- request }" dbg.txt)
  read -r _ _ _ REQ_METHOD REQ_URL _ REQ_KEY _ REQ_TIME _ REQ_NONCE _ REQ_AUTH _ REQ_SEAL _ REQ_BODY <<<"$line"
  [ -n "$REQ_AUTH" ] && [ "$REQ_SEAL" = 1 ]
  printf '%s' "$REQ_BODY" | base64 -d >body.bin
}

replay() {  # replay [NONCE] [BODY]
  curl -s -o resp.json -w '%{http_code}' -X "$REQ_METHOD" "$REQ_URL" \
    -H "X-Mesh-Key: $REQ_KEY" -H "X-Mesh-Time: $REQ_TIME" \
    -H "X-Mesh-Nonce: ${1:-$REQ_NONCE}" -H "X-Mesh-Auth: $REQ_AUTH" -H "X-Mesh-Seal: 1" \
    -H 'Content-Type: application/octet-stream' ${2:+--data-binary "$2"}
}
