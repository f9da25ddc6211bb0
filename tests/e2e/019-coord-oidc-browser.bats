#!/usr/bin/env bats
# Logins beyond the node-run device flow, with a real OpenID provider
# (tests/idp): `mesh-coord login --browser` (authorization code with PKCE,
# redirect to 127.0.0.1, RFC 7636/8252) whose browser curl plays up to the
# loopback redirect; a coordinator holding the client secret (serve
# --oidc-client-secret-file) that runs the device flow's and the code's
# token requests itself, so no node ever has the secret; and used ID tokens
# remembered across a coordinator restart.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord
load oidc

USERS=$OIDC_USERS

setup() {
  cd "$BATS_TEST_TMPDIR"
  idp_users "$USERS"
  # The confidential client's secret exists only here and in the
  # coordinator's file: never on a node's command line or environment.
  printf 'idp-secret-%s\n' "$RANDOM$RANDOM" >client.secret
  chmod 600 client.secret
  idp_start --secret-client-id mesh-private --client-secret-file client.secret
}

@test "login --browser (public client): PKCE code flow through a loopback redirect enrols the node" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh
  mrun -s 0 curl -sS "$COORD_URL/v1/info"
  [ "$(jq -r .oidc.confidential <<<"$output")" = false ]
  oidc_login_browser laptop alice alice-pw --name laptop
  [ "$status" -eq 0 ] || { cat laptop.login.err >&2; false; }
  # stdout: the authorization request for scripts, then the registration.
  url=$(head -1 laptop.login.out | jq -r .authorization_url)
  [[ "$url" == "$IDP_URL/auth?response_type=code&client_id=mesh&redirect_uri=http%3A%2F%2F127.0.0.1%3A"* ]]
  [[ "$url" == *"&code_challenge_method=S256" ]]
  [[ "$url" == *"&code_challenge="* && "$url" == *"&nonce="* && "$url" == *"&state="* ]]
  grep -q "to log in, open $IDP_URL/auth?.* in a browser on this machine" laptop.login.err
  grep -q 'received the identity provider' laptop.redirect.html
  [ "$(jq -r .name laptop.json)" = laptop ]
  [ "$(jq -r .user.email laptop.json)" = alice@example.com ]
  [ "$(jq -r .public_key laptop.json)" = "$(mesh-keygen pubkey <laptop.key)" ]
  mrun -s 0 mesh-coord map --registration laptop.json --key laptop.key
  [ "$(jq -r .self.name <<<"$output")" = laptop ]
}

@test "login --browser: a redirect with another state is refused (77), nothing enrolled; no redirect times out (75)" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh
  mesh-keygen genkey -o x.key
  timeout 60 mesh-coord login --browser --server "$COORD_URL" --key x.key >x.out 2>x.err 3>&- &
  pid=$!
  wait_for_line x.out '"authorization_url"' 30
  redirect=$(idp_browser_authorize alice alice-pw "$(head -1 x.out | jq -r .authorization_url)")
  [[ "$redirect" == http://127.0.0.1:*"/callback?code="*"&state="* ]]
  # A forged redirect: the provider's code with a state of the attacker's.
  forged=$(sed 's/state=[^&]*/state=forged/' <<<"$redirect")
  curl -sS --max-time 20 "$forged" >/dev/null
  st=0
  wait "$pid" || st=$?
  [ "$st" -eq "$EX_NOPERM" ]
  grep -q "the redirect's state does not match" x.err
  # The receiver took one redirect only and is gone: the genuine one finds
  # nobody listening.
  run curl -sS --max-time 5 "$redirect"
  [ "$status" -ne 0 ]
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
  # Nobody comes back: exit 75 after --timeout.
  mrun -s "$EX_TEMPFAIL" timeout 60 mesh-coord login --browser --server "$COORD_URL" --key x.key --timeout 2
  [[ "$stderr" == *"login timed out: no redirect from the browser came back"* ]]
}

@test "the coordinator holds the client secret: device and browser logins enrol nodes that never see it" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh-private \
    --oidc-client-secret-file "$BATS_TEST_TMPDIR/client.secret"
  secret=$(cat client.secret)
  # The secret is on no command line, not even the coordinator's.
  ! grep -qF "$secret" "/proc/$coord_pid/cmdline"
  mrun -s 0 curl -sS "$COORD_URL/v1/info"
  [ "$(jq -r .oidc.confidential <<<"$output")" = true ]
  [ "$(jq -r .oidc.client_id <<<"$output")" = mesh-private ]
  # The device flow: the node polls the coordinator, which polls the IdP.
  mesh-keygen genkey -o a.key
  : >a.login.out
  MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key a.key --name a1 \
    >a.login.out 2>a.login.err 3>&- &
  pid=$!
  wait_for_line a.login.out '"user_code"' 30
  ! grep -qF "$secret" "/proc/$pid/cmdline" "/proc/$pid/environ"
  # The prompt carries no handle or device code: only what the person needs.
  [ "$(head -1 a.login.out | jq -c 'keys')" = '["expires_in","user_code","verification_uri","verification_uri_complete"]' ]
  idp_browser_approve alice alice-pw "$(head -1 a.login.out | jq -r .verification_uri_complete)"
  wait "$pid"
  tail -1 a.login.out >a1.json
  [ "$(jq -r .name a1.json)" = a1 ]
  [ "$(jq -r .user.email a1.json)" = alice@example.com ]
  # Without the coordinator the confidential client gets nothing from the IdP.
  run curl -sS -d client_id=mesh-private -d scope=openid "$IDP_URL/device/auth"
  [[ "$output" == *invalid_client* ]]
  # A browser login: the coordinator exchanges the code with its secret and
  # the node's PKCE verifier.
  oidc_login_browser b1 bob bob-pw --name b1
  [ "$status" -eq 0 ] || { cat b1.login.err >&2; false; }
  [ "$(jq -r .user.email b1.json)" = bob@example.com ]
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '[.peers[].name] | sort | join(",")' <<<"$output")" = a1,b1 ]
}

@test "through the coordinator: a person who says no at the provider gets exit 77, and the handle is gone" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh-private \
    --oidc-client-secret-file "$BATS_TEST_TMPDIR/client.secret"
  mesh-keygen genkey -o d.key
  : >d.out
  MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key d.key >d.out 2>d.err 3>&- &
  pid=$!
  wait_for_line d.out '"user_code"' 30
  idp_browser_deny "$(head -1 d.out | jq -r .verification_uri_complete)"
  st=0
  wait "$pid" || st=$?
  [ "$st" -eq "$EX_NOPERM" ] || { cat d.err >&2; false; }
  grep -q "login denied at the identity provider" d.err
  curl -sS -H "Authorization: Bearer $MESH_ADMIN_TOKEN" "$COORD_URL/metrics" | grep -qx 'mesh_coord_logins_pending 0'
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
}

@test "through the coordinator: a provider that goes away leaves the login pending until --timeout (75)" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh-private \
    --oidc-client-secret-file "$BATS_TEST_TMPDIR/client.secret"
  mesh-keygen genkey -o g.key
  : >g.out
  MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key g.key --timeout 9 \
    >g.out 2>g.err 3>&- &
  pid=$!
  wait_for_line g.out '"user_code"' 30
  kill "$idp_pid"; wait "$idp_pid" 2>/dev/null || true
  st=0
  wait "$pid" || st=$?
  [ "$st" -eq "$EX_TEMPFAIL" ] || { cat g.err >&2; false; }
  grep -q "login timed out" g.err
  # The coordinator polled the provider (5 s interval) and found it gone.
  grep -q "oidc: device login poll: cannot reach" coord.err
}

@test "pending device logins through the coordinator are bounded per source; a node's new one replaces its own" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh-private \
    --oidc-client-secret-file "$BATS_TEST_TMPDIR/client.secret"
  mesh-keygen genkey -o a.key
  mrun -s "$EX_TEMPFAIL" env MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key a.key --timeout 1
  [[ "$stderr" == *"login timed out"* ]]
  # Each source may hold 8 pending logins; the ninth is refused (75).
  for i in 1 2 3 4 5 6 7; do
    mesh-keygen genkey -o "k$i.key"
    mrun -s "$EX_TEMPFAIL" env MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key "k$i.key" --timeout 1
  done
  mesh-keygen genkey -o k9.key
  mrun -s "$EX_TEMPFAIL" timeout 60 mesh-coord login --server "$COORD_URL" --key k9.key --timeout 1
  [[ "$stderr" == *"too many logins in progress"* ]]
  curl -sS -H "Authorization: Bearer $MESH_ADMIN_TOKEN" "$COORD_URL/metrics" | grep -qx 'mesh_coord_logins_pending 8'
  # A node starting again replaces its own pending login (not a ninth).
  mrun -s "$EX_TEMPFAIL" env MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key a.key --timeout 1
  [[ "$stderr" == *"login timed out"* ]]
}

@test "a used ID token stays used across a coordinator restart" {
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh
  idp_mint '{"sub": "carol", "claims": {"email": "carol@example.com"}}' >t.jwt
  mesh-keygen genkey -o c.key
  mesh-keygen genkey -o thief.key
  mrun -s 0 mesh-coord login --server "$COORD_URL" --key c.key --id-token-file t.jwt
  kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true
  coord_start coord2 --oidc-issuer "$IDP_URL" --oidc-client-id mesh
  mrun -s "$EX_NOPERM" mesh-coord login --server "$COORD_URL" --key thief.key --id-token-file t.jwt
  [[ "$stderr" == *"this ID token already enrolled another node key"* ]]
  # Its own node may still renew with it.
  mrun -s 0 mesh-coord login --server "$COORD_URL" --key c.key --id-token-file t.jwt
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '.peers | length' <<<"$output")" = 1 ]
}

@test "client secret usage: serve needs --oidc-issuer (64) and a non-empty file (78); --id-token-out needs the secret on the node (64)" {
  mrun -s "$EX_USAGE" mesh-coord serve --state s2 --oidc-client-secret-file client.secret
  [[ "$stderr" == *"--oidc-client-secret-file needs --oidc-issuer"* ]]
  : >empty.secret
  mrun -s "$EX_CONFIG" timeout 20 mesh-coord serve --listen 127.0.0.1:0 --state s3 --oidc-issuer "$IDP_URL" \
    --oidc-client-id mesh-private --oidc-client-secret-file empty.secret
  [[ "$stderr" == *"empty.secret: empty client secret"* ]]
  coord_start coord --oidc-issuer "$IDP_URL" --oidc-client-id mesh-private \
    --oidc-client-secret-file "$BATS_TEST_TMPDIR/client.secret"
  mrun -s "$EX_USAGE" mesh-coord login --server "$COORD_URL" --id-token-out t.tok
  [[ "$stderr" == *"--id-token-out needs --client-secret-file"* ]]
  [ ! -e t.tok ]
  # With the secret given to login, the node makes the token requests itself.
  : >t.out
  MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --id-token-out t.tok \
    --client-secret-file client.secret >t.out 2>/dev/null 3>&- &
  pid=$!
  wait_for_line t.out '"user_code"' 30
  idp_browser_approve alice alice-pw "$(jq -r .verification_uri_complete t.out)"
  wait "$pid"
  [ "$(stat -c %a t.tok)" = 600 ]
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --admin-token-file t.tok --json
}
