# Helpers for the login tests (tests/e2e/019-coord-oidc.bats): a real OpenID
# provider (tests/idp/idp.js, oidc-provider from npm, installed by
# scripts/deps) and a person's browser played by curl.
#   OIDC_USERS                     alice (eng) and bob (sales), passwords NAME-pw
#   idp_users JSON                 write the IdP's users file (read at every login)
#   idp_start [ARGS...]            start the IdP on 127.0.0.1:0; sets IDP_URL
#   idp_browser_approve USER PASSWORD URI   confirm the device code, sign in and
#                                  consent, as a browser would (in namespace
#                                  $IDP_NS when set); fails when the
#                                  provider does not end on its success page
#   oidc_login PEER USER PASSWORD [LOGIN-ARGS...]   run `mesh-coord login` for
#                                  PEER (key PEER.key, made when missing), approve
#                                  its code as USER; registration into PEER.json;
#                                  $status is login's exit status
#   idp_browser_deny URI           the person says no at the device code's
#                                  confirm page (abort): the provider answers
#                                  the token requests access_denied
#   idp_browser_authorize USER PASSWORD URL   a browser login (authorization code
#                                  flow; in namespace $IDP_NS when set):
#                                  open URL, sign in, consent; prints
#                                  the provider's redirect to the app
#                                  (http://127.0.0.1:PORT/callback?code=..&state=..)
#                                  without following it
#   oidc_login_browser PEER USER PASSWORD [LOGIN-ARGS...]   `mesh-coord login
#                                  --browser` for PEER, the browser played by
#                                  curl up to the loopback redirect, which it
#                                  then opens; as oidc_login
#   idp_mint JSON                  a token from the IdP's test-only /test/mint

# The tests' people: alice in eng, bob in sales (his email in mixed case:
# the coordinator keeps emails in lower case).
OIDC_USERS='{
  "alice": {"password": "alice-pw", "email": "alice@example.com", "name": "Alice", "groups": ["eng"]},
  "bob":   {"password": "bob-pw",   "email": "Bob@Example.com",   "name": "Bob",   "groups": ["sales"]}
}'

idp_users() { printf '%s\n' "$1" >"$BATS_TEST_TMPDIR/idp-users.json"; }

idp_start() {
  [ -f "$BATS_TEST_TMPDIR/idp-users.json" ] || idp_users '{}'
  [ -d "$MESH_ROOT/tests/idp/node_modules/oidc-provider" ] || {
    echo "idp_start: tests/idp/node_modules is missing: run scripts/deps" >&2
    return 1
  }
  : >"$BATS_TEST_TMPDIR/idp.out"
  start_daemon idp node "$MESH_ROOT/tests/idp/idp.js" --users "$BATS_TEST_TMPDIR/idp-users.json" "$@"
  # Node and RSA key generation take a few seconds on a loaded machine.
  wait_for_line "$BATS_TEST_TMPDIR/idp.out" '^issuer http://' 60 || {
    cat "$BATS_TEST_TMPDIR/idp.err" >&2
    return 1
  }
  IDP_URL=$(sed -n 's/^issuer //p' "$BATS_TEST_TMPDIR/idp.out")
  export IDP_URL
}

# The value of hidden input NAME in the HTML on stdin.
_form_field() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" | head -1; }
_form_action() { sed -n "s/.*form id=\"$1\" method=\"post\" action=\"\([^\"]*\)\".*/\1/p" | head -1; }

idp_browser_approve() {
  local user=$1 password=$2 uri=$3 jar="$BATS_TEST_TMPDIR/browser.$RANDOM" page code xsrf act
  local c=(curl -sS --max-time 20 -c "$jar" -b "$jar")
  # The browser sits where the IdP is reachable: in namespace $IDP_NS if set.
  [ -z "${IDP_NS:-}" ] || c=(nsx "$IDP_NS" "${c[@]}")
  code=$(sed -n 's/.*user_code=//p' <<<"$uri")
  # The provider's own pages: the code's auto-submitting form, then its
  # confirm form, which leads to the login form (the browser follows 303s).
  page=$("${c[@]}" "$uri") || return 1
  xsrf=$(_form_field xsrf <<<"$page")
  [ -n "$xsrf" ] || { echo "no xsrf in the device page" >&2; return 1; }
  "${c[@]}" -o /dev/null --data-urlencode "xsrf=$xsrf" --data-urlencode "user_code=$code" "$IDP_URL/device" || return 1
  page=$("${c[@]}" -L --data-urlencode "xsrf=$xsrf" --data-urlencode "user_code=$code" -d confirm=yes "$IDP_URL/device") || return 1
  act=$(_form_action login <<<"$page")
  [ -n "$act" ] || { echo "no login form: $page" >&2; return 1; }
  page=$("${c[@]}" -L --data-urlencode "login=$user" --data-urlencode "password=$password" "$IDP_URL$act") || return 1
  act=$(_form_action consent <<<"$page")
  [ -n "$act" ] || { echo "no consent form: $page" >&2; return 1; }
  page=$("${c[@]}" -L -d '' "$IDP_URL$act") || return 1
  grep -q 'Sign-in Success' <<<"$page" || { echo "no success page: $page" >&2; return 1; }
}

idp_browser_deny() {
  local uri=$1 jar="$BATS_TEST_TMPDIR/browser.$RANDOM" page code xsrf
  local c=(curl -sS --max-time 20 -c "$jar" -b "$jar")
  code=$(sed -n 's/.*user_code=//p' <<<"$uri")
  page=$("${c[@]}" "$uri") || return 1
  xsrf=$(_form_field xsrf <<<"$page")
  [ -n "$xsrf" ] || { echo "no xsrf in the device page" >&2; return 1; }
  "${c[@]}" -o /dev/null --data-urlencode "xsrf=$xsrf" --data-urlencode "user_code=$code" "$IDP_URL/device" || return 1
  "${c[@]}" -o /dev/null --data-urlencode "xsrf=$xsrf" --data-urlencode "user_code=$code" -d abort=yes "$IDP_URL/device"
}

idp_browser_authorize() {
  local user=$1 password=$2 url=$3 jar="$BATS_TEST_TMPDIR/browser.$RANDOM" page act loc i
  local c=(curl -sS --max-time 20 -c "$jar" -b "$jar")
  [ -z "${IDP_NS:-}" ] || c=(nsx "$IDP_NS" "${c[@]}")
  page=$("${c[@]}" -L "$url") || return 1
  act=$(_form_action login <<<"$page")
  [ -n "$act" ] || { echo "no login form: $page" >&2; return 1; }
  page=$("${c[@]}" -L --data-urlencode "login=$user" --data-urlencode "password=$password" "$IDP_URL$act") || return 1
  act=$(_form_action consent <<<"$page")
  [ -n "$act" ] || { echo "no consent form: $page" >&2; return 1; }
  # The consent ends in redirects: the provider's own, then the app's.
  loc=$("${c[@]}" -o /dev/null -w '%{redirect_url}' -d '' "$IDP_URL$act") || return 1
  for i in 1 2 3 4 5; do
    # The IdP is on loopback too: its own redirects first.
    case $loc in
      "$IDP_URL"/*) loc=$("${c[@]}" -o /dev/null -w '%{redirect_url}' "$loc") || return 1 ;;
      http://127.0.0.1:*) echo "$loc"; return 0 ;;
      *) echo "unexpected redirect: '$loc'" >&2; return 1 ;;
    esac
  done
  echo "too many redirects" >&2
  return 1
}

oidc_login_browser() {
  local peer=$1 user=$2 password=$3; shift 3
  local dir=$BATS_TEST_TMPDIR out="$BATS_TEST_TMPDIR/$peer.login.out" redirect
  [ -f "$dir/$peer.key" ] || mesh-keygen genkey -o "$dir/$peer.key"
  : >"$out"
  timeout 60 mesh-coord login --browser --server "$COORD_URL" --key "$dir/$peer.key" "$@" \
    >"$out" 2>"$dir/$peer.login.err" 3>&- &
  local pid=$!
  _mesh_pids+=("$pid")
  wait_for_line "$out" '"authorization_url"' 30 || { cat "$dir/$peer.login.err" >&2; return 1; }
  redirect=$(idp_browser_authorize "$user" "$password" "$(head -1 "$out" | jq -r .authorization_url)") || return 1
  curl -sS --max-time 20 "$redirect" >"$dir/$peer.redirect.html" || return 1
  status=0
  wait "$pid" || status=$?
  if [ "$status" -eq 0 ]; then tail -1 "$out" >"$dir/$peer.json"; fi
  return 0
}

oidc_login() {
  local peer=$1 user=$2 password=$3; shift 3
  local dir=$BATS_TEST_TMPDIR out="$BATS_TEST_TMPDIR/$peer.login.out"
  [ -f "$dir/$peer.key" ] || mesh-keygen genkey -o "$dir/$peer.key"
  : >"$out"
  MESH_LOGIN_POLL_MS=200 timeout 60 mesh-coord login --server "$COORD_URL" --key "$dir/$peer.key" "$@" \
    >"$out" 2>"$dir/$peer.login.err" 3>&- &
  local pid=$!
  _mesh_pids+=("$pid")
  wait_for_line "$out" '"user_code"' 30 || { cat "$dir/$peer.login.err" >&2; return 1; }
  idp_browser_approve "$user" "$password" "$(head -1 "$out" | jq -r .verification_uri_complete)" || return 1
  status=0
  wait "$pid" || status=$?
  if [ "$status" -eq 0 ]; then tail -1 "$out" >"$dir/$peer.json"; fi
  return 0
}

idp_mint() {
  curl -sS --max-time 20 -H 'Content-Type: application/json' --data-binary "$1" "$IDP_URL/test/mint" |
    jq -er .id_token
}
