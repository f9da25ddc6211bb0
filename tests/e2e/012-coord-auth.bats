#!/usr/bin/env bats
# Request authentication: forged, replayed and unenrolled requests refused;
# responses verified; setup keys and admin tokens; brute force rate limited.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord --auth-failures-per-minute 5
  coord_key k --reusable --group g
  coord_join a k
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
}

@test "a captured request cannot be replayed" {
  capture mesh-coord map --registration a.json --key a.key
  [ "$REQ_METHOD" = GET ]
  [ "$(replay)" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"replayed request"* ]]
  [ "$(jq -r .error.exit resp.json)" = permission ]
}

@test "a captured punch request cannot be replayed to make a peer probe again" {
  coord_join b k
  capture mesh-coord punch --registration a.json --key a.key --peer "$(mesh-keygen pubkey <b.key)"
  [ "$REQ_METHOD" = POST ]
  [ -s body.bin ]
  [ "$(replay "" @body.bin)" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"replayed request"* ]]
  # Only the original is waiting for b: one punch event, from a.
  mrun -T 10 -s 0 mesh-coord watch --registration b.json --key b.key --events --cache b.map --count 1
  [ "$(grep -c '"event":"punch"' <<<"$output")" -eq 1 ]
}

@test "forged requests are refused: other nonce, altered body, someone else's key" {
  capture mesh-coord map --registration a.json --key a.key
  [ "$(replay AAAAAAAAAAAAAAAAAAAAAA)" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"bad request signature"* ]]
  printf '{"version":1,"candidates":[{"endpoint":"192.0.2.1:1000","kind":"host"}]}' >ep.json
  capture mesh-coord announce --registration a.json --key a.key -f ep.json
  [ "$(replay "" '{"version":1,"candidates":[{"endpoint":"203.0.113.66:1000","kind":"host"}]}')" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"bad request signature"* ]]
  # Nothing of the forgery reached the map of anyone.
  coord_join b k
  coord_map b
  [ "$(jq -r '.peers[0].endpoints[0].endpoint' <<<"$output")" = 192.0.2.1:1000 ]
  # A stranger signing with its own key and claiming a's key.
  mesh-keygen genkey -o stranger.key
  mrun -s 0 mesh-keygen pubkey <a.key
  capture mesh-coord map --server "$COORD_URL" --coordinator-key "$(cat state/coordinator.pub)" --key stranger.key
  REQ_KEY=$output
  REQ_NONCE=BBBBBBBBBBBBBBBBBBBBBB
  [ "$(replay)" = 401 ]
}

@test "changing a signed request's time breaks its signature" {
  capture mesh-coord map --registration a.json --key a.key
  REQ_TIME=$((REQ_TIME - 3600))
  [ "$(replay CCCCCCCCCCCCCCCCCCCCCC)" = 401 ]
  # The MAC covers the time, so the signature fails first; the check
  # order never reveals whether a guessed MAC was right.
  [[ "$(jq -r .error.message resp.json)" == *"signature"* ]]
}

@test "an unenrolled key gets 77; no peer can read another's map" {
  mesh-keygen genkey -o x.key
  mrun -s "$EX_NOPERM" mesh-coord map --server "$COORD_URL" \
    --coordinator-key "$(cat state/coordinator.pub)" --key x.key
  [[ "$stderr" == *"peer is not enrolled"* ]]
}

@test "responses are verified: a wrong coordinator key is refused with 77" {
  other=$(mesh-keygen genkey | mesh-keygen pubkey)
  mrun -s "$EX_NOPERM" mesh-coord map --server "$COORD_URL" --coordinator-key "$other" --key a.key
  [[ "$stderr" == *"not authenticated by the coordinator key"* ]] || [[ "$stderr" == *"bad request signature"* ]]
  cut -d. -f1 k.sk >bare.sk  # without the coordinator key it carries
  mrun -s "$EX_NOPERM" mesh-coord join --server "$COORD_URL" --coordinator-key "$other" \
    --setup-key-file bare.sk --key a.key
}

# mac_proxy MODE: an HTTP proxy on 127.0.0.1 in front of the coordinator
# that passes requests through and, with MODE "tamper", replaces the
# response's X-Mesh-Auth with a MAC of the right size made with another key
# (MODE "pass": unchanged). Sets PROXY_URL.
mac_proxy() {
  cat >proxy.py <<'EOF'
import base64, http.client, http.server, os, sys
mode, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def fwd(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            if k.lower() == "x-mesh-auth" and mode == "tamper":
                v = base64.b64encode(os.urandom(32)).decode()
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = fwd
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on http://127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
EOF
  start_daemon "proxy-$1" python3 proxy.py "$1" "$COORD_PORT"
  wait_for_line "proxy-$1.out" '^listening on ' 5
  PROXY_URL=$(sed -n 's/^listening on //p' "proxy-$1.out")
}

@test "responses are verified: an answer whose MAC the coordinator key does not make is refused with 77" {
  # Through a proxy that changes nothing, the request works: the proxy is
  # transparent, so what fails below is the response check alone.
  mac_proxy pass
  mrun -s 0 mesh-coord map --registration a.json --key a.key --server "$PROXY_URL"
  [ "$(jq -r .self.name <<<"$output")" = a ]
  # The coordinator accepted the request and answered; the response MAC
  # was replaced on the way.
  mac_proxy tamper
  mrun -s "$EX_NOPERM" mesh-coord map --registration a.json --key a.key --server "$PROXY_URL"
  [[ "$stderr" == *"is not authenticated by the coordinator key"* ]]
  [ -z "$output" ]
  printf '{"version":1,"candidates":[{"endpoint":"192.0.2.1:1000","kind":"host"}]}' >ep.json
  mrun -s "$EX_NOPERM" mesh-coord announce --registration a.json --key a.key --server "$PROXY_URL" -f ep.json
  [[ "$stderr" == *"is not authenticated by the coordinator key"* ]]
  # A watch does not take a forged map either: it exits 77, nothing printed.
  mrun -T 10 -s "$EX_NOPERM" mesh-coord watch --registration a.json --key a.key --server "$PROXY_URL" --count 1
  [ -z "$output" ]
}

@test "setup keys: one-off, usage limit, revoked, expired, unknown" {
  coord_key once
  coord_join p1 once
  mrun -s "$EX_NOPERM" mesh-coord join --server "$COORD_URL" --setup-key-file once.sk --key "$(mesh-keygen genkey -o p2.key && echo p2.key)"
  [[ "$stderr" == *"setup key usage limit reached"* ]]
  # The same node joining again gets its registration back (idempotent).
  mrun -s 0 mesh-coord join --server "$COORD_URL" --setup-key-file once.sk --key p1.key
  [ "$(jq -r .name <<<"$output")" = p1 ]
  coord_key two --reusable --usage-limit 2
  coord_join q1 two
  coord_join q2 two
  mesh-keygen genkey -o q3.key
  mrun -s "$EX_NOPERM" mesh-coord join --server "$COORD_URL" --setup-key-file two.sk --key q3.key
  coord_key rev --reusable
  mrun -s 0 mesh-coord setup-key revoke --server "$COORD_URL" rev
  [ "$(jq -r .revoked <<<"$output")" = true ]
  mrun -s "$EX_NOPERM" mesh-coord join --server "$COORD_URL" --setup-key-file rev.sk --key q3.key
  [[ "$stderr" == *"setup key is revoked"* ]]
  coord_key short --expires-in 1s
  sleep 2
  mrun -s "$EX_NOPERM" mesh-coord join --server "$COORD_URL" --setup-key-file short.sk --key q3.key
  [[ "$stderr" == *"setup key has expired"* ]]
  mrun -s 0 mesh-coord setup-key list --server "$COORD_URL"
  [ "$(jq -r '.setup_keys[] | select(.name=="two") | .used' <<<"$output")" = 2 ]
  [ "$(jq -r '.setup_keys[] | select(.name=="rev") | .usable' <<<"$output")" = false ]
  # Keys are stored hashed only.
  ! grep -rqF "$(cat two.sk)" state/
  ! sqlite3 state/coord.db .dump | grep -qF "$(cat two.sk)"
}

@test "brute force of setup keys and admin tokens is rate limited and logged" {
  printf 'not-a-real-key\n' >bad.sk
  for i in 1 2 3; do
    mrun -s "$EX_NOPERM" mesh-coord join --server "$COORD_URL" --setup-key-file bad.sk --key a.key
    [[ "$stderr" == *"invalid setup key"* ]]
  done
  printf 'wrong-token-wrong-token\n' >bad.token
  for i in 1 2; do
    mrun -s "$EX_NOPERM" mesh-coord peer list --server "$COORD_URL" --admin-token-file bad.token
  done
  # Sixth failure within a minute: refused without even checking.
  mrun -s "$EX_TEMPFAIL" mesh-coord peer list --server "$COORD_URL" --admin-token-file bad.token
  [[ "$stderr" == *"too many failed authentications"* ]]
  mrun -s "$EX_TEMPFAIL" mesh-coord join --server "$COORD_URL" --setup-key-file k.sk --key a.key
  mrun -s "$EX_TEMPFAIL" mesh-coord peer list --server "$COORD_URL"
  # The audit log has every failure (read straight from the state database).
  [ "$(sqlite3 state/coord.db "select count(*) from events where action='auth.failed'")" -eq 5 ]
  [ "$(sqlite3 state/coord.db "select count(*) from events where action='auth.failed' and target='setup-key'")" -eq 3 ]
}

join_as() {  # join_as STATUS SETUP_KEY NODE_KEY [join flags...]
  local st=$1 sk=$2 nk=$3; shift 3
  [ -f "$nk.key" ] || mesh-keygen genkey -o "$nk.key"
  mrun -s "$st" mesh-coord join --server "$COORD_URL" --setup-key-file "$sk.sk" --key "$nk.key" "$@"
}

@test "names grant access only through setup keys bound to them" {
  printf '%s' '{"groups":{"g":{},"ops":{"members":["bob"]}},"rules":[{"src":["g"],"dst":["g"]},
    {"src":["peer:alice","ops"],"dst":["all"],"proto":"tcp","ports":[22]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_key guest --reusable
  # A guest key cannot take a name the policy grants by (its owner has not
  # enrolled yet), and the refusal reads exactly as for a name a peer holds.
  for n in alice bob; do
    join_as "$EX_DATAERR" guest m --name "$n"
    [[ "$stderr" == *"peer name '$n' is not available to this setup key"* ]]
    reserved=${stderr//\'$n\'/X}
  done
  join_as "$EX_DATAERR" guest m --name a
  [ "${stderr//\'a\'/X}" = "$reserved" ]
  # A hint that is not available becomes HINT-ID.
  join_as 0 guest m --name-hint alice
  [[ "$(jq -r .name <<<"$output")" =~ ^alice-[0-9]+$ ]]
  # A key bound to alice enrols alice, and nothing else.
  coord_key for-alice --peer-name alice
  [ "$(mesh-coord setup-key list --server "$COORD_URL" | jq -r '.setup_keys[] | select(.name=="for-alice") | .peer_name')" = alice ]
  join_as "$EX_NOPERM" for-alice al --name mallory
  [[ "$stderr" == *"this setup key enrols only the peer named 'alice'"* ]]
  join_as 0 for-alice al
  [ "$(jq -r .name <<<"$output")" = alice ]
  # Deleting alice frees the peer, not the name: a guest still cannot take it.
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" alice
  join_as "$EX_DATAERR" guest m2 --name alice
  # Every refusal was counted against the source and logged.
  [ "$(sqlite3 state/coord.db "select count(*) from events where action='auth.failed' and target='peer-name'")" -eq 4 ]
}
