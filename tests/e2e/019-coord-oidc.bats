#!/usr/bin/env bats
# Login with a real OpenID provider (oidc-provider from npm, tests/idp): the
# device flow's user side is played by curl through the provider's own
# confirm, login and consent forms. Login enrols a node owned by its user;
# IdP groups decide reachability (group:idp:NAME, user:EMAIL) and follow the
# next login; login expiry cuts a peer off at once and a new login restores
# it; disabling a user cuts all their peers off; tokens from another issuer,
# expired, for another audience, with a bad signature or an unknown kid are
# refused with clear errors and nothing enrolled.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord
load oidc
load ../lab/lab
load ../lab/mesh

USERS=$OIDC_USERS

setup() {
  cd "$BATS_TEST_TMPDIR"
  idp_users "$USERS"
  idp_start
}

# A coordinator trusting the IdP, and a server node "srv" enrolled by setup key.
coord_with_login() {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh "$@"
  coord_key k --reusable --group servers
  coord_join srv k
}

# Names in srv's map.
srv_sees() {
  coord_map srv
  peer_names
}

@test "login enrols a node owned by its user; info names the issuer; the user is listed" {
  coord_with_login
  mrun -s 0 curl -sS "$COORD_URL/v1/info"
  [ "$(jq -r .oidc.issuer <<<"$output")" = "$IDP_URL" ]
  [ "$(jq -r .oidc.client_id <<<"$output")" = mesh ]
  oidc_login laptop alice alice-pw --name laptop
  [ "$status" -eq 0 ]
  # stdout: the device prompt for scripts, then the registration.
  [ "$(head -1 laptop.login.out | jq -r '.user_code | test("^[A-Z]{4}-[A-Z]{4}$")')" = true ]
  grep -q 'to log in, open http://.*/device and enter the code' laptop.login.err
  [ "$(jq -r .name laptop.json)" = laptop ]
  [ "$(jq -r .user.email laptop.json)" = alice@example.com ]
  [ "$(jq -c .user.groups laptop.json)" = '["eng"]' ]
  [ "$(jq -r .public_key laptop.json)" = "$(mesh-keygen pubkey <laptop.key)" ]
  expires=$(jq -r .login_expires_at laptop.json)
  [ $(( expires - $(date +%s) )) -gt 86000 ]   # 24 h by default
  mrun -s 0 mesh-coord map --registration laptop.json --key laptop.key
  [ "$(jq -r .self.name <<<"$output")" = laptop ]
  mrun -s 0 mesh-coord user list --server "$COORD_URL" --json
  [ "$(jq -r '.users[0] | "\(.subject) \(.email) \(.name) \(.groups | join(",")) \(.peers)"' <<<"$output")" = \
    "alice alice@example.com Alice eng 1" ]
  mrun -s 0 mesh-coord user show --server "$COORD_URL" alice@example.com
  [ "$(jq -r '.peers[0].name' <<<"$output")" = laptop ]
  [ "$(jq -r '.peers[0].owner_email' <<<"$output")" = alice@example.com ]
  # Setup-key peers are unchanged: no owner, no expiry.
  mrun -s 0 mesh-coord peer show --server "$COORD_URL" srv
  [ "$(jq -r '.owner // "none"' <<<"$output")" = none ]
  # The audit log names the user as the actor.
  mrun -s 0 mesh-coord events --server "$COORD_URL"
  jq -s -e 'any(.[]; .action == "peer.join" and .target == "laptop" and .actor == "user:alice@example.com")' \
    <<<"$output" >/dev/null
  # A wrong password at the IdP: no token, so no enrolment; the login gives
  # up after --timeout with exit 75.
  mesh-keygen genkey -o x.key
  MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key x.key --timeout 4 \
    >x.out 2>x.err 3>&- &
  pid=$!
  wait_for_line x.out '"user_code"' 30
  run idp_browser_approve alice wrong-pw "$(head -1 x.out | jq -r .verification_uri_complete)"
  [ "$status" -ne 0 ]
  [[ "$output" == *"invalid user or password"* ]]
  st=0
  wait "$pid" || st=$?
  [ "$st" -eq "$EX_TEMPFAIL" ]
  grep -q "login timed out" x.err
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '.peers | length' <<<"$output")" = 2 ]
}

@test "IdP groups decide reachability, and a group change takes effect at the next login" {
  coord_with_login
  cat >policy.json <<'EOF'
{"groups": {"servers": {}},
 "rules": [{"name": "eng-to-servers", "src": ["group:idp:eng"], "dst": ["servers"], "proto": "tcp", "ports": ["22"]},
           {"name": "bob-web", "src": ["user:bob@example.com"], "dst": ["servers"], "proto": "tcp", "ports": ["443"]}],
 "tests": [{"from": "group:idp:eng", "to": "group:servers", "port": "22/tcp", "expect": "allow"},
           {"from": "group:idp:sales", "to": "group:servers", "port": "22/tcp", "expect": "deny"},
           {"from": "user:bob@example.com", "to": "group:servers", "port": "443/tcp", "expect": "allow"}]}
EOF
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" policy.json
  oidc_login a1 alice alice-pw --name a1
  [ "$status" -eq 0 ]
  oidc_login b1 bob bob-pw --name b1
  [ "$status" -eq 0 ]
  [ "$(jq -r .user.email b1.json)" = bob@example.com ]   # emails are kept in lower case
  # srv sees both (a1 by group:idp:eng on 22, b1 by user: on 443), with the
  # firewall rule for each.
  [ "$(srv_sees)" = a1,b1 ]
  coord_map srv
  a1v4=$(jq -r '.addresses[0] | split("/")[0]' a1.json)
  jq -e --arg s "$a1v4/32" 'any(.firewall.inbound[]; .rule == "eng-to-servers" and .ports == ["22"] and (.sources | index($s)))' \
    <<<"$output" >/dev/null
  mrun -s 0 mesh-coord policy check --server "$COORD_URL" --from a1 --to srv --port 22/tcp --json
  [ "$(jq -r .rule <<<"$output")" = eng-to-servers ]
  mrun -s "$EX_FAILURE" mesh-coord policy check --server "$COORD_URL" --from b1 --to srv --port 22/tcp
  mrun -s 0 mesh-coord policy check --server "$COORD_URL" --from user:bob@example.com --to srv --port 443/tcp
  mrun -s "$EX_FAILURE" mesh-coord policy check --server "$COORD_URL" --from group:idp:sales --to srv --port 22/tcp
  mrun -s 0 mesh-coord policy check --server "$COORD_URL" --from group:idp:eng --to group:servers --port 22/tcp
  # Without bob's own rule, sales keeps bob's node out of srv's map.
  jq 'del(.rules[1]) | .tests |= [.[0], .[1]]' policy.json >p2.json
  mrun -s 0 mesh-coord policy plan --server "$COORD_URL" p2.json
  [ "$(jq -c '[.lost[] | "\(.src)>\(.dst) \(.service)"]' <<<"$output")" = '["b1>srv tcp/443"]' ]
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p2.json
  [ "$(srv_sees)" = a1 ]
  # The IdP moves bob to eng: nothing changes until bob logs in again.
  idp_users "$(jq '.bob.groups = ["eng"]' <<<"$USERS")"
  [ "$(srv_sees)" = a1 ]
  oidc_login b1 bob bob-pw
  [ "$status" -eq 0 ]
  [ "$(jq -c .user.groups b1.json)" = '["eng"]' ]
  [ "$(srv_sees)" = a1,b1 ]
  # A user's other peers follow the groups of the latest login.
  idp_users "$USERS"
  oidc_login b2 bob bob-pw --name b2
  [ "$status" -eq 0 ]
  [ "$(srv_sees)" = a1 ]
  # A bad selector is refused with the JSON path.
  printf '{"rules":[{"src":["user:nobody"],"dst":["all"]}]}' >bad.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" bad.json
  [[ "$stderr" == *"invalid user selector 'user:nobody'"* ]]
}

@test "login expiry cuts the peer off at once; a new login restores it with the same key and addresses" {
  coord_with_login --login-expiry 3s
  printf '{"rules":[{"src":["all"],"dst":["all"]}]}' >all.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" all.json
  oidc_login lap alice alice-pw --name lap
  [ "$status" -eq 0 ]
  addrs=$(jq -c .addresses lap.json)
  [ "$(srv_sees)" = lap ]
  # A watcher on srv gets the map without lap pushed by the expiry timer,
  # with no request from lap or anyone.
  start_daemon watch mesh-coord watch --registration srv.json --key srv.key
  wait_for_line watch.out '"lap"' 10
  wait_until 8 bash -c "tail -1 watch.out | jq -e '[.peers[].name] == []'"
  # lap's own agent is told to log in again (exit status 77).
  mrun -s "$EX_NOPERM" mesh-coord map --registration lap.json --key lap.key
  [[ "$stderr" == *"login expired: log in again"* ]]
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action peer.login-expired
  [ "$(jq -r '.detail.peers[0]' <<<"$output")" = lap ]
  # Setup-key peers never expire.
  mrun -s 0 mesh-coord map --registration srv.json --key srv.key
  oidc_login lap alice alice-pw
  [ "$status" -eq 0 ]
  [ "$(jq -c .addresses lap.json)" = "$addrs" ]
  [ "$(jq -r .name lap.json)" = lap ]
  wait_until 5 bash -c "tail -1 watch.out | jq -e '[.peers[].name] == [\"lap\"]'"
  mrun -s 0 mesh-coord map --registration lap.json --key lap.key
}

@test "disabling a user cuts all their peers off within 2 s; deleting removes them" {
  coord_with_login
  printf '{"rules":[{"src":["all"],"dst":["all"]}]}' >all.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" all.json
  oidc_login a1 alice alice-pw --name a1
  [ "$status" -eq 0 ]
  oidc_login a2 alice alice-pw --name a2
  [ "$status" -eq 0 ]
  oidc_login b1 bob bob-pw --name b1
  [ "$status" -eq 0 ]
  start_daemon watch mesh-coord watch --registration srv.json --key srv.key
  wait_until 10 bash -c "tail -1 watch.out | jq -e '[.peers[].name] | sort == [\"a1\",\"a2\",\"b1\"]'"
  t0=$(date +%s%N)
  mrun -s 0 mesh-coord user disable --server "$COORD_URL" alice
  [ "$(jq -r .disabled <<<"$output")" = true ]
  wait_until 2 bash -c "tail -1 watch.out | jq -e '[.peers[].name] == [\"b1\"]'"
  echo "# user disable -> pushed map without her peers: $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&3
  mrun -s "$EX_NOPERM" mesh-coord map --registration a1.json --key a1.key
  [[ "$stderr" == *"its user is disabled"* ]]
  # A disabled user cannot log in again.
  oidc_login a3 alice alice-pw --name a3
  [ "$status" -eq "$EX_NOPERM" ]
  grep -q "user 'alice@example.com' is disabled" a3.login.err
  mrun -s 0 mesh-coord user enable --server "$COORD_URL" alice@example.com
  wait_until 2 bash -c "tail -1 watch.out | jq -e '[.peers[].name] | sort == [\"a1\",\"a2\",\"b1\"]'"
  mrun -s 0 mesh-coord user delete --server "$COORD_URL" alice
  [ "$(jq -r .peers_deleted <<<"$output")" = 2 ]
  wait_until 2 bash -c "tail -1 watch.out | jq -e '[.peers[].name] == [\"b1\"]'"
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '[.peers[].name] | sort | join(",")' <<<"$output")" = b1,srv ]
  mrun -s 0 mesh-coord user list --server "$COORD_URL" --json
  [ "$(jq -r '[.users[].subject] | join(",")' <<<"$output")" = bob ]
  mrun -s "$EX_DATAERR" mesh-coord user show --server "$COORD_URL" alice
  [[ "$stderr" == *"no user 'alice'"* ]]
}

@test "tokens from another issuer, expired, for another audience, badly signed or with an unknown kid are refused" {
  coord_with_login
  mesh-keygen genkey -o n.key
  declare -A cases=(
    [issuer]='{"iss": "http://127.0.0.1:1/other"}|is not the configured issuer'
    [expired]='{"exp_in": -3600, "iat_in": -7200}|token expired at'
    [audience]='{"aud": "someone-else"}|does not include this coordinator'"'"'s client id'
    [signature]='{"bad_signature": true}|bad signature'
    [kid]='{"kid": "unknown"}|signing key id '"'"'unknown-kid'"'"' is not in the issuer'"'"'s JWKS'
    [future]='{"iat_in": 3600}|issued in the future'
  )
  for c in "${!cases[@]}"; do
    req=${cases[$c]%%|*} want=${cases[$c]#*|}
    idp_mint "$req" >"$c.jwt"
    mrun -s "$EX_NOPERM" mesh-coord login --server "$COORD_URL" --key n.key --id-token-file "$c.jwt"
    [[ "$stderr" == *"login refused: "*"$want"* ]] || { echo "$c: $stderr" >&2; false; }
  done
  # Not a JWT at all.
  echo "not-a-token" >junk.jwt
  mrun -s "$EX_NOPERM" mesh-coord login --server "$COORD_URL" --key n.key --id-token-file junk.jwt
  [[ "$stderr" == *"not a JWT"* ]]
  # Nothing was enrolled, no user made, every refusal audited.
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '[.peers[].name] | join(",")' <<<"$output")" = srv ]
  mrun -s 0 mesh-coord user list --server "$COORD_URL" --json
  [ "$(jq -r '.users | length' <<<"$output")" = 0 ]
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action auth.failed
  [ "$(jq -s '[.[] | select(.target == "login")] | length' <<<"$output")" = 7 ]
  # The same helper's well-formed tokens are accepted, RS256 and ES256 (the
  # refusals above are the token's, not the helper's).
  for alg in RS256 ES256; do
    idp_mint "{\"alg\": \"$alg\", \"sub\": \"carol-$alg\", \"claims\": {\"email\": \"carol@example.com\"}}" >ok.jwt
    mesh-keygen genkey -o "c-$alg.key"
    mrun -s 0 mesh-coord login --server "$COORD_URL" --key "c-$alg.key" --id-token-file ok.jwt
    [ "$(jq -r .user.subject <<<"$output")" = "carol-$alg" ]
  done
  # A token enrols one node key: replayed with another key it is refused;
  # the same key may retry.
  mesh-keygen genkey -o thief.key
  mrun -s "$EX_NOPERM" mesh-coord login --server "$COORD_URL" --key thief.key --id-token-file ok.jwt
  [[ "$stderr" == *"this ID token already enrolled another node key"* ]]
  mrun -s 0 mesh-coord login --server "$COORD_URL" --key c-ES256.key --id-token-file ok.jwt
  # A setup-key peer's key cannot be taken over by a login.
  idp_mint '{"sub": "mallory"}' >m.jwt
  mrun -s "$EX_NOPERM" mesh-coord login --server "$COORD_URL" --key srv.key --id-token-file m.jwt
  [[ "$stderr" == *"enrolled as 'srv' by a setup key"* ]]
}

@test "login: usage errors and a coordinator without login" {
  coord_start coord
  mesh-keygen genkey -o n.key
  mrun -s "$EX_UNAVAILABLE" mesh-coord login --server "$COORD_URL" --key n.key
  [[ "$stderr" == *"does not offer login"* ]]
  idp_mint '{}' >t.jwt
  mrun -s "$EX_DATAERR" mesh-coord login --server "$COORD_URL" --key n.key --id-token-file t.jwt
  [[ "$stderr" == *"login is not enabled on this coordinator"* ]]
  mrun -s "$EX_USAGE" mesh-coord serve --state s2 --oidc-issuer "$IDP_URL"
  [[ "$stderr" == *"--oidc-issuer and --oidc-client-id go together"* ]]
  mrun -s "$EX_USAGE" mesh-coord serve --state s2 --oidc-issuer "$IDP_URL" --oidc-client-id mesh --login-expiry 5x
  [[ "$stderr" == *"--login-expiry"* ]]
}

@test "admin by login: the admin group uses admin verbs; other users list and delete only their own peers" {
  idp_users "$(jq '.alice.groups = ["eng", "mesh-admins"]' <<<"$USERS")"
  coord_with_login --oidc-admin-group mesh-admins
  oidc_login b1 bob bob-pw --name b1
  [ "$status" -eq 0 ]
  oidc_login b2 bob bob-pw --name b2
  [ "$status" -eq 0 ]
  # Bearer tokens from the device flow, without enrolling anything.
  for u in alice:alice-pw bob:bob-pw; do
    : >"${u%%:*}.tok.out"
    MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" \
      --id-token-out "${u%%:*}.tok" >"${u%%:*}.tok.out" 2>/dev/null 3>&- &
    pid=$!
    wait_for_line "${u%%:*}.tok.out" '"user_code"' 30
    idp_browser_approve "${u%%:*}" "${u#*:}" "$(jq -r .verification_uri_complete "${u%%:*}.tok.out")"
    wait "$pid"
    [ "$(stat -c %a "${u%%:*}.tok")" = 600 ]
  done
  unset MESH_ADMIN_TOKEN
  # alice (mesh-admins) uses admin verbs with her login; the audit log names her.
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --admin-token-file alice.tok --json
  [ "$(jq -r '[.peers[].name] | sort | join(",")' <<<"$output")" = b1,b2,srv ]
  printf '{"rules":[{"src":["all"],"dst":["all"]}]}' >all.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" --admin-token-file alice.tok all.json
  # bob lists only his peers, deletes his own, and nothing else.
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --admin-token-file bob.tok --json
  [ "$(jq -r '[.peers[].name] | sort | join(",")' <<<"$output")" = b1,b2 ]
  mrun -s "$EX_DATAERR" mesh-coord peer delete --server "$COORD_URL" --admin-token-file bob.tok srv
  [[ "$stderr" == *"no peer 'srv'"* ]]
  mrun -s "$EX_NOPERM" mesh-coord policy set --server "$COORD_URL" --admin-token-file bob.tok all.json
  [[ "$stderr" == *"bob@example.com is not in the admin group 'mesh-admins'"* ]]
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" --admin-token-file bob.tok b2
  mrun -s 0 mesh-coord events --server "$COORD_URL" --admin-token-file alice.tok
  jq -s -e 'any(.[]; .action == "policy.set" and .actor == "user:alice@example.com")' <<<"$output" >/dev/null
  jq -s -e 'any(.[]; .action == "peer.delete" and .target == "b2" and .actor == "user:bob@example.com")' <<<"$output" >/dev/null
  # A token from elsewhere is no admin token.
  idp_mint '{"sub": "alice", "aud": "other", "claims": {"groups": ["mesh-admins"]}}' >forged.tok
  mrun -s "$EX_NOPERM" mesh-coord peer list --server "$COORD_URL" --admin-token-file forged.tok
  [[ "$stderr" == *"login refused: token: audience"* ]]
}

@test "in the lab: group:idp:eng lets alice's node (mesh-up --login-browser) ping the server and keeps bob's out (--login)" {
  require_root
  # The IdP beside the coordinator on the lab's internet; the coordinator
  # starts first and fetches the IdP's keys at the first login.
  MESH_LAB_COORD_ARGS="--oidc-issuer http://203.0.113.1:9440 --oidc-client-id mesh"
  mesh_lab_core
  start_daemon labidp nsx inet node "$MESH_ROOT/tests/idp/idp.js" --listen 203.0.113.1 --port 9440 \
    --users "$BATS_TEST_TMPDIR/idp-users.json"
  wait_for_line labidp.out '^issuer http://203.0.113.1:9440$' 60
  IDP_URL=http://203.0.113.1:9440 IDP_NS=inet
  cat >lab-policy.json <<'EOF'
{"groups": {"nodes": {}},
 "rules": [{"name": "eng-ping", "src": ["group:idp:eng"], "dst": ["nodes"], "proto": "icmp"}],
 "tests": [{"from": "group:idp:eng", "to": "group:nodes", "port": "icmp", "expect": "allow"},
           {"from": "group:idp:sales", "to": "group:nodes", "port": "icmp", "expect": "deny"}]}
EOF
  nsx inet mesh-coord policy set --server "$COORD_URL" lab-policy.json >/dev/null
  for n in srv alice bob; do lab_peer_public "$n"; done
  mesh_lab_up srv
  export MESH_LOGIN_POLL_MS=200
  # Plain http to another host: the coordinator key is given, as a setup
  # key would carry it. alice logs in at a browser on her node (the
  # provider's redirect comes back to 127.0.0.1 in her namespace); bob
  # with the device flow.
  MESH_LAB_UP_ARGS="--login-browser --coordinator-key $(cat coord/coordinator.pub)" mesh_lab_up alice
  wait_for_line "$MESH_NODES/alice/registration.json.login" '"authorization_url"' 60
  redirect=$(idp_browser_authorize alice alice-pw \
    "$(head -1 "$MESH_NODES/alice/registration.json.login" | jq -r .authorization_url)")
  nsx alice curl -sS --max-time 20 "$redirect" >/dev/null
  wait_until 30 mesh_lab_enrolled alice
  MESH_LAB_UP_ARGS="--login --coordinator-key $(cat coord/coordinator.pub)" mesh_lab_up bob
  wait_for_line "$MESH_NODES/bob/registration.json.login" '"user_code"' 60
  idp_browser_approve bob bob-pw \
    "$(head -1 "$MESH_NODES/bob/registration.json.login" | jq -r .verification_uri_complete)"
  wait_until 30 mesh_lab_enrolled bob
  grep -q 'to log in, open http://203.0.113.1:9440/auth?.* in a browser on this machine' up-alice.err
  grep -q 'to log in, open http://203.0.113.1:9440/device' up-bob.err
  [ "$(jq -r .user.email "$MESH_NODES/alice/registration.json")" = alice@example.com ]
  # Real pings through WireGuard: alice's node reaches srv; bob's does not
  # (srv is not even in his map).
  wait_until 60 mesh_lab_ping alice srv
  for i in 1 2 3; do
    if mesh_lab_ping bob srv; then echo "bob's node reached srv" >&2; false; fi
  done
  nsx inet mesh-coord peer show --server "$COORD_URL" srv --json | jq -e '.visible_peers == ["alice"]'
}
