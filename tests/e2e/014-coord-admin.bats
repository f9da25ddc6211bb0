#!/usr/bin/env bats
# Every admin verb, the audit log, metrics, and the error paths: bad JSON,
# oversized bodies, wrong types, bad keys and names give a 4xx JSON error
# naming the field, and the client exits with the documented status.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord --max-body 65536
  coord_key k --reusable --group web --tag t1
}

api() {  # api METHOD PATH [BODY]: admin request with curl; sets $code and resp.json
  code=$(curl -s -o resp.json -w '%{http_code}' -X "$1" "$COORD_URL$2" \
    -H "Authorization: Bearer $MESH_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    ${3:+--data-binary "$3"})
}

@test "peer verbs: list, show, rename, set-groups, disable, enable, delete" {
  coord_join a k
  coord_join b k
  printf '{"groups":{"web":{}},"rules":[{"src":["web"],"dst":["web"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '[.peers[].name] | join(",")' <<<"$output")" = a,b ]
  [ "$(jq -r '.peers[0].addresses[0]' <<<"$output")" = 100.64.0.1 ]
  [ "$(jq -r '.peers[0].tags[0]' <<<"$output")" = t1 ]
  mrun -s 0 mesh-coord peer show --server "$COORD_URL" a
  [ "$(jq -c .visible_peers <<<"$output")" = '["b"]' ]
  pub=$(jq -r .public_key a.json)
  mrun -s 0 mesh-coord peer show --server "$COORD_URL" "$pub"
  [ "$(jq -r .name <<<"$output")" = a ]
  mrun -s 0 mesh-coord peer show --server "$COORD_URL" 2
  [ "$(jq -r .name <<<"$output")" = b ]
  mrun -s 0 mesh-coord peer rename --server "$COORD_URL" a alpha
  [ "$(jq -r .name <<<"$output")" = alpha ]
  coord_map b
  [ "$(jq -r '.peers[0].name' <<<"$output")" = alpha ]
  mrun -s 0 mesh-coord peer set-groups --server "$COORD_URL" alpha db
  [ "$(jq -c .groups <<<"$output")" = '["db"]' ]
  coord_map b
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
  mrun -s 0 mesh-coord peer set-groups --server "$COORD_URL" alpha web
  mrun -s 0 mesh-coord peer disable --server "$COORD_URL" alpha
  coord_map b
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
  mrun -s 0 mesh-coord peer enable --server "$COORD_URL" alpha
  coord_map b
  [ "$(jq -r '.peers[0].name' <<<"$output")" = alpha ]
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" alpha
  [ "$(jq -r .deleted <<<"$output")" = alpha ]
  coord_map b
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
  mrun -s "$EX_NOPERM" mesh-coord map --registration a.json --key a.key
  # The audit log has every mutation, who did it and when.
  mrun -s 0 mesh-coord events --server "$COORD_URL"
  actions=$(jq -r .action <<<"$output" | tr '\n' ' ')
  [ "$actions" = "setup-key.create peer.join peer.join policy.set peer.rename peer.set-groups peer.set-groups peer.disable peer.enable peer.delete " ]
  [ "$(jq -r 'select(.action=="peer.join") | .actor' <<<"$output" | head -1)" = setup-key:k ]
  [ "$(jq -r 'select(.action=="peer.rename") | .detail.to' <<<"$output")" = alpha ]
  jq -e 'select(.action=="peer.delete") | .time > 1700000000 and .actor == "admin"' <<<"$output"
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action peer --after 3 --limit 2 --json
  [ "$(jq -r '[.events[].action] | join(",")' <<<"$output")" = "peer.rename,peer.set-groups" ]
}

@test "metrics in Prometheus text format, behind the admin token" {
  coord_join a k
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$COORD_URL/metrics")" = 401 ]
  mrun -s 0 curl -sf -H "Authorization: Bearer $MESH_ADMIN_TOKEN" "$COORD_URL/metrics"
  grep -qx 'mesh_coord_peers{state="enabled"} 1' <<<"$output"
  grep -q '^mesh_coord_watchers 0$' <<<"$output"
  grep -q '^mesh_coord_map_computations_total [1-9]' <<<"$output"
  grep -q '^# TYPE mesh_coord_last_full_recompute_seconds gauge$' <<<"$output"
  grep -q '^mesh_coord_auth_failures_total 1$' <<<"$output"   # the unauthenticated scrape
}

@test "bad requests get a 4xx JSON error naming the field" {
  api POST /v1/admin/setup-keys '{"name": 5}'
  [ "$code" = 400 ]
  [ "$(jq -r .error.field resp.json)" = name ]
  [[ "$(jq -r .error.message resp.json)" == *"name: expected string, got integer"* ]]
  api POST /v1/admin/setup-keys '{"name": "x",'
  [ "$code" = 400 ]
  [[ "$(jq -r .error.message resp.json)" == "request:1:"* ]]
  api POST /v1/admin/setup-keys '{"name": "x", "groups": ["ok", 3]}'
  [ "$code" = 400 ]
  [ "$(jq -r .error.field resp.json)" = "groups[1]" ]
  api POST /v1/admin/setup-keys '{"name": "x", "colour": "red"}'
  [ "$code" = 400 ]
  [ "$(jq -r .error.field resp.json)" = colour ]
  api POST /v1/admin/setup-keys '{"name": "Bad Name"}'
  [ "$code" = 400 ]
  [ "$(jq -r .error.field resp.json)" = name ]
  api POST /v1/admin/setup-keys '{"name": "x", "expires_in": "soon"}'
  [ "$code" = 400 ]
  [ "$(jq -r .error.field resp.json)" = expires_in ]
  api POST /v1/admin/peers/rename '{"peer": "nobody", "name": "x"}'
  [ "$code" = 404 ]
  [ "$(jq -r .error.field resp.json)" = peer ]
  api PUT /v1/admin/policy '{"rules": [{"src": ["all"], "dst": ["all"], "ports": "22"}]}'
  [ "$code" = 400 ]
  [ "$(jq -r .error.field resp.json)" = "rules[0].ports" ]
  head -c 70000 /dev/zero | tr '\0' ' ' >big.json
  code=$(curl -s -o resp.json -w '%{http_code}' -X PUT "$COORD_URL/v1/admin/policy" \
    -H "Authorization: Bearer $MESH_ADMIN_TOKEN" --data-binary @big.json)
  [ "$code" = 413 ]
  [[ "$(jq -r .error.message resp.json)" == *"too large"* ]]
  api GET /v1/nothing
  [ "$code" = 404 ]
  [ "$(jq -r .error.exit resp.json)" = data ]
  # Join with garbage: unsigned -> 401; the signature is checked before the body.
  code=$(curl -s -o resp.json -w '%{http_code}' -X POST "$COORD_URL/v1/join" --data-binary '{}')
  [ "$code" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"missing X-Mesh-Key"* ]]
  # Nothing of the above was written.
  mrun -s 0 mesh-coord setup-key list --server "$COORD_URL" --json
  [ "$(jq -r '.setup_keys | length' <<<"$output")" = 1 ]
}

@test "client verbs exit with the documented status on bad input" {
  coord_join a k
  coord_join b k
  mrun -s "$EX_USAGE" mesh-coord
  mrun -s "$EX_USAGE" mesh-coord frobnicate
  mrun -s "$EX_USAGE" mesh-coord join --server "$COORD_URL"
  mrun -s "$EX_USAGE" mesh-coord peer list
  mrun -s "$EX_USAGE" mesh-coord peer list --server "$COORD_URL" --bogus
  MESH_ADMIN_TOKEN= mrun -s "$EX_USAGE" mesh-coord peer list --server "$COORD_URL"
  [[ "$stderr" == *"no admin token"* ]]
  # A keepalive at or below WireGuard's handshake retry is refused before anything starts.
  mrun -s "$EX_USAGE" mesh-coord serve --state "$BATS_TEST_TMPDIR/ka" --keepalive 5
  [[ "$stderr" == *"--keepalive 5: expected 0 (off) or 10 to 3600 seconds"* ]]
  [ ! -e "$BATS_TEST_TMPDIR/ka" ]
  mrun -s "$EX_NOINPUT" mesh-coord join --server "$COORD_URL" --setup-key-file missing.sk --key a.key
  mrun -s "$EX_NOINPUT" mesh-coord map --registration missing.json --key a.key
  mrun -s "$EX_NOINPUT" mesh-coord peer list --server "$COORD_URL" --admin-token-file missing
  printf 'not a key\n' >bad.key
  mrun -s "$EX_DATAERR" mesh-coord map --registration a.json --key bad.key
  printf '{"server": 1}' >bad.json
  mrun -s "$EX_DATAERR" mesh-coord map --registration bad.json --key a.key
  [[ "$stderr" == *"bad.json: server: expected string, got integer"* ]]
  mrun -s "$EX_DATAERR" mesh-coord join --server "$COORD_URL" --setup-key-file k.sk \
    --key "$(mesh-keygen genkey -o n.key; echo n.key)" --name 'NOT VALID'
  [[ "$stderr" == *"name: invalid peer name 'NOT VALID'"* ]]
  mrun -s "$EX_DATAERR" mesh-coord join --server "$COORD_URL" --setup-key-file k.sk --key n.key --name a
  [[ "$stderr" == *"peer name 'a' is not available to this setup key"* ]]
  mrun -s "$EX_DATAERR" mesh-coord peer rename --server "$COORD_URL" a b
  [[ "$stderr" == *"already in use"* ]]
  mrun -s "$EX_DATAERR" mesh-coord peer rename --server "$COORD_URL" a 'x y'
  mrun -s "$EX_DATAERR" mesh-coord peer set-groups --server "$COORD_URL" a 'Bad!'
  [[ "$stderr" == *"groups[0]: invalid name 'Bad!'"* ]]
  mrun -s "$EX_DATAERR" mesh-coord peer show --server "$COORD_URL" nobody
  [[ "$stderr" == *"no peer 'nobody'"* ]]
  mrun -s "$EX_DATAERR" mesh-coord setup-key revoke --server "$COORD_URL" nokey
  mrun -s "$EX_DATAERR" mesh-coord setup-key create --server "$COORD_URL" --name k
  [[ "$stderr" == *"a setup key named 'k' exists"* ]]
  mrun -s "$EX_DATAERR" mesh-coord setup-key create --server "$COORD_URL" --name one --usage-limit 5
  printf '{"rules": [' >broken.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" broken.json
  [[ "$stderr" == *"broken.json:1:"* ]]
  printf '{"rules":[{"src":["all"],"dst":["all"],"proto":"tcp","ports":[0]}]}' >p0.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" p0.json
  [[ "$stderr" == *"rules[0].ports[0]: must be at least 1"* ]]
  mrun -s "$EX_USAGE" mesh-coord policy check --server "$COORD_URL" --from a --to b --port 22
  mrun -s "$EX_DATAERR" mesh-coord policy check --server "$COORD_URL" --from a --to zed --port 22/tcp
  printf '{"version":1,"candidates":[{"endpoint":"192.0.2.1:0"}]}' >ep.json
  mrun -s "$EX_DATAERR" mesh-coord announce --registration a.json --key a.key -f ep.json
  [[ "$stderr" == *"candidates[0]: endpoint port must not be 0"* ]]
  printf '{"version":1,"public_key":"%s","candidates":[]}' "$(jq -r .public_key b.json)" >epb.json
  mrun -s "$EX_DATAERR" mesh-coord announce --registration a.json --key a.key -f epb.json
  mrun -s "$EX_UNAVAILABLE" mesh-coord peer list --server http://127.0.0.1:1
  mrun -s "$EX_NOPERM" mesh-coord peer list --server "$COORD_URL" --admin-token-file bad.key
}
