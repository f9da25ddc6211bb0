#!/usr/bin/env bats
# serve --tls-cert/--tls-key: HTTPS for every verb, verified with --ca-file.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

@test "HTTPS coordinator: join, map and admin verbs with --ca-file" {
  cd "$BATS_TEST_TMPDIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout tls.key -out tls.crt 2>/dev/null
  start_daemon coord mesh-coord serve --listen 127.0.0.1:0 --state state \
    --tls-cert tls.crt --tls-key tls.key
  wait_for_line coord.out '^listening on https://127\.0\.0\.1:[0-9]+$' 10
  url=$(sed -n 's/^listening on //p' coord.out)
  export MESH_ADMIN_TOKEN=$(cat state/admin.token)
  mrun -s 0 mesh-coord setup-key create --server "$url" --ca-file tls.crt --name k -o k.sk
  mesh-keygen genkey -o a.key
  mrun -s 0 mesh-coord join --server "$url" --ca-file tls.crt --setup-key-file k.sk --key a.key --name a
  printf '%s\n' "$output" >a.json
  mrun -s 0 mesh-coord map --registration a.json --ca-file tls.crt --key a.key
  [ "$(jq -r .self.name <<<"$output")" = a ]
  # Without the CA the certificate is not trusted: unavailable.
  mrun -s "$EX_UNAVAILABLE" mesh-coord map --registration a.json --key a.key
  # Plain HTTP to the TLS port fails too.
  mrun -s "$EX_UNAVAILABLE" mesh-coord peer list --server "http://${url#https://}"
}

@test "HTTPS coordinator: the connection limits and the request deadline hold over TLS" {
  cd "$BATS_TEST_TMPDIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout tls.key -out tls.crt 2>/dev/null
  start_daemon coord mesh-coord serve --listen 127.0.0.1:0 --state state \
    --tls-cert tls.crt --tls-key tls.key --max-connections 8 --request-timeout 2
  wait_for_line coord.out '^listening on https://127\.0\.0\.1:[0-9]+$' 10
  url=$(sed -n 's/^listening on //p' coord.out)
  export MESH_ADMIN_TOKEN=$(cat state/admin.token)
  mrun -s 0 mesh-coord setup-key create --server "$url" --ca-file tls.crt --name k -o k.sk
  mesh-keygen genkey -o a.key
  mrun -s 0 mesh-coord join --server "$url" --ca-file tls.crt --setup-key-file k.sk --key a.key --name a
  printf '%s\n' "$output" >a.json
  # 8 sockets from another address that never start their handshake.
  cat >idle.py <<'PY'
import socket, sys, time, select
socks = []
for _ in range(8):
    s = socket.socket(); s.bind(("127.0.0.2", 0)); s.connect(("127.0.0.1", int(sys.argv[1]))); socks.append(s)
print("open", flush=True)
t0, live = time.time(), list(socks)
while live and time.time() - t0 < 10:
    for s in select.select(live, [], [], 0.1)[0]:
        s.recv(100); live.remove(s)
        print("closed %d %.1f" % (socks.index(s), time.time() - t0), flush=True)
PY
  start_daemon idle python3 idle.py "${url##*:}"
  wait_for_line idle.out '^open' 5
  # Another host is served at once; the idle source got a quarter of the
  # slots, its other sockets were closed at once and the rest at the deadline.
  mrun -T 5 -s 0 mesh-coord map --registration a.json --ca-file tls.crt --key a.key
  [ "$(jq -r .self.name <<<"$output")" = a ]
  sleep 4
  cat idle.out >&3
  [ "$(grep -c '^closed' idle.out)" -eq 8 ]
  [ "$(awk '/^closed/ && $3 < 1' idle.out | wc -l)" -eq 6 ]
  [ "$(awk '/^closed/ && $3 >= 1.5 && $3 < 4' idle.out | wc -l)" -eq 2 ]
}
