#!/usr/bin/env bats
# The coordinator's limits (man/mesh-coord.8, LIMITS): floods of joins, idle
# and slow connections, watches per peer, announces (which candidates, how
# often) and the size of the audit log. Every flood here is bounded in count
# and time, from loopback (127.0.0.2 plays another host).

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() { cd "$BATS_TEST_TMPDIR"; }

# count_is N CMD...: CMD prints exactly N lines (for wait_until, which runs
# it again each time).
count_is() {
  local n=$1; shift
  [ "$("$@" | wc -l)" -eq "$n" ]
}

# idle_sockets N: N TCP connections from 127.0.0.2 to the coordinator that
# never send a byte; prints "open N" once they are connected, then, for 30 s,
# one line per connection the server answered or closed ("closed I: FIRST-LINE").
idle_sockets() {
  cat >idle.py <<'EOF'
import socket, sys, time, select
n, port = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    socks.append(s)
print("open", n, flush=True)
live = list(socks)
end = time.time() + 30
while live and time.time() < end:
    r, _, _ = select.select(live, [], [], 0.2)
    for s in r:
        data = s.recv(4096)
        print("closed %d: %s" % (socks.index(s), data.split(b"\r\n")[0].decode() or "(no answer)"), flush=True)
        live.remove(s)
EOF
  start_daemon idle python3 idle.py "$1" "$COORD_PORT"
  wait_for_line idle.out '^open ' 5
}

@test "a flood of failed joins gets 429 and never stops an enrolled peer's map or watch" {
  coord_start coord --auth-failures-per-minute 5 --max-nonces 40
  coord_key k --reusable
  coord_join a k
  mesh-keygen genkey -o x.key
  local ck n429=0 n65=0 i
  ck=$(cat state/coordinator.pub)
  # Signed requests from a self-made key with a body the coordinator refuses
  # (400: bad name): before, nothing counted them and each left a nonce.
  for i in $(seq 1 60); do
    rc=0
    timeout 10 mesh-coord join --server "$COORD_URL" --coordinator-key "$ck" \
      --setup-key-file k.sk --key x.key --name "Bad Name $i" >/dev/null 2>>flood.err || rc=$?
    case $rc in "$EX_TEMPFAIL") n429=$((n429 + 1)) ;; "$EX_DATAERR") n65=$((n65 + 1)) ;; esac
  done
  echo "400: $n65, 429: $n429" >&3
  [ "$n65" -le 5 ]
  [ "$n429" -ge 55 ]
  grep -q 'too many failed authentications' flood.err
  # The peer (same source address) is served: maps and a long-poll.
  coord_map a
  [ "$(jq -r .self.name <<<"$output")" = a ]
  mrun -T 10 -s 0 mesh-coord watch --registration a.json --key a.key --count 1
}

@test "8 idle sockets against --max-connections 8 do not stop another node's map" {
  coord_start coord --max-connections 8
  coord_key k
  coord_join a k
  idle_sockets 8
  # Another host (127.0.0.1) is served at once, not after the idle ones time out.
  mrun -T 5 -s 0 mesh-coord map --registration a.json --key a.key
  [ "$(jq -r .self.name <<<"$output")" = a ]
  # The idle source got its share (a quarter) and no more: the rest were
  # refused at once with 429.
  wait_until 5 count_is 6 grep '^closed .*429' idle.out
}

@test "a request dribbled byte by byte is cut at the request deadline with 408" {
  coord_start coord --request-timeout 2
  cat >slow.py <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.time()
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
s.settimeout(0.3)
answer = b""
while time.time() - t0 < 8:
    try:
        s.sendall(b"a")
        d = s.recv(4096)
        if not d:
            break
        answer += d
    except socket.timeout:
        continue
    except OSError:
        break
print("%.1f %s" % (time.time() - t0, answer.split(b"\r\n")[0].decode() or "(none)"))
EOF
  mrun -T 15 -s 0 python3 slow.py "$COORD_PORT"
  echo "$output" >&3
  read -r secs line <<<"$output"
  [[ "$line" == "HTTP/1.1 408 "* ]]
  # Cut at the deadline (2 s), not kept alive by each byte.
  awk -v s="$secs" 'BEGIN { exit !(s >= 1.5 && s < 4) }'
}

@test "an idle connection is closed at the request deadline; headers over 16 KiB get 431, a request line over 8 KiB 414" {
  coord_start coord --request-timeout 2
  idle_sockets 1
  wait_for_line idle.out '^closed 0: \(no answer\)' 4
  big=$(head -c 20000 /dev/zero | tr '\0' a)
  code=$(curl -s -o big.json -w '%{http_code}' -H "X-Big: $big" "$COORD_URL/healthz")
  [ "$code" = 431 ]
  [ "$(jq -r .error.exit big.json)" = data ]
  [[ "$(jq -r .error.message big.json)" == *"larger than 16384 bytes"* ]]
  # A request line over 8 KiB gets 414.
  long=$(head -c 9000 /dev/zero | tr '\0' a)
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$COORD_URL/$long")" = 414 ]
  # Normal requests still work.
  [ "$(curl -s "$COORD_URL/healthz")" = ok ]
}

@test "a peer holds at most --max-watches-per-peer long-polls; the refused watch retries" {
  coord_start coord --max-watches-per-peer 1
  coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_join a k
  coord_join b k
  start_daemon w1 mesh-coord watch --registration a.json --key a.key --wait 60 --events --cache c1.json
  wait_for_line w1.out '"state":"up"' 5
  sleep 0.5   # w1 is in its long-poll
  start_daemon w2 mesh-coord watch --registration a.json --key a.key --wait 60 --events --cache c2.json
  wait_until 10 grep -q 'too many concurrent watches' w2.err
  # 429 is transient: the watch keeps retrying, backing off (not a retry
  # every few milliseconds), without exiting ...
  sleep 3
  kill -0 "$w2_pid"
  refusals=$(curl -s -H "Authorization: Bearer $MESH_ADMIN_TOKEN" "$COORD_URL/metrics" |
    awk '$1 == "mesh_coord_rate_limited_total" { print $2 }')
  echo "refusals in about 3 s: $refusals" >&3
  [ "$refusals" -ge 1 ] && [ "$refusals" -le 4 ]
  # ... and the coordinator is not reported down: it answered.
  ! grep -q '"state":"down"' w2.out
  # It gets its long-poll once the other watch ends (a long-poll whose
  # client went away holds its slot until it answers: a new map for a
  # ends it): a punch request for a reaches it.
  kill "$w1_pid"
  coord_join c k
  sleep 8   # the longest backoff step so far is 4 s
  mrun -s 0 mesh-coord punch --registration b.json --key b.key --peer "$(mesh-keygen pubkey <a.key)"
  wait_for_line w2.out '"event":"punch"' 5
}

@test "announced candidates no peer can reach are refused, naming the candidate" {
  coord_start coord
  coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_join a k
  local bad
  for bad in 127.0.0.1:51820 0.0.0.0:51820 224.0.0.251:5353 255.255.255.255:51820 \
             169.254.169.254:80 100.64.0.9:51820 '[::1]:51820' '[fe80::1]:51820' \
             '[ff02::1]:51820' '[::ffff:192.0.2.1]:51820'; do
    printf '{"version":1,"candidates":[{"endpoint":"192.0.2.1:1000","kind":"host"},{"endpoint":"%s","kind":"host"}]}' "$bad" >ep.json
    mrun -s "$EX_DATAERR" mesh-coord announce --registration a.json --key a.key -f ep.json
    [[ "$stderr" == *"candidates[1]: $bad is "* ]] || { echo "$bad: $stderr"; false; }
  done
  # Nothing of it was published; reachable addresses are.
  printf '{"version":1,"candidates":[{"endpoint":"198.18.0.5:51820","kind":"host"},{"endpoint":"[2001:db8::5]:51820","kind":"srflx"}]}' >ep.json
  mrun -s 0 mesh-coord announce --registration a.json --key a.key -f ep.json
  coord_join b k
  coord_map b
  [ "$(jq -c '[.peers[0].endpoints[].endpoint]' <<<"$output")" = '["198.18.0.5:51820","[2001:db8::5]:51820"]' ]
}

@test "announces are throttled per peer with 429; the audit log is pruned to --audit-max-events" {
  coord_start coord --announces-per-minute 3 --audit-max-events 4 --janitor-interval 1
  coord_key k --reusable
  coord_join a k
  coord_join b k
  local i
  for i in 1 2 3; do
    printf '{"version":1,"candidates":[{"endpoint":"192.0.2.%d:1000","kind":"host"}]}' "$i" >ep.json
    mrun -s 0 mesh-coord announce --registration a.json --key a.key -f ep.json
  done
  printf '{"version":1,"candidates":[{"endpoint":"192.0.2.9:1000","kind":"host"}]}' >ep.json
  mrun -s "$EX_TEMPFAIL" mesh-coord announce --registration a.json --key a.key -f ep.json
  [[ "$stderr" == *"too many announces (at most 3 per minute); retry in "* ]]
  # Another peer is not affected.
  mrun -s 0 mesh-coord announce --registration b.json --key b.key -f ep.json
  # 1 key + 2 joins + 4 announces = 7 events: the janitor keeps the newest 4.
  wait_until 5 count_is 4 mesh-coord events --server "$COORD_URL"
  mrun -s 0 mesh-coord events --server "$COORD_URL"
  [ "$(tail -n1 <<<"$output" | jq -r '.action + " " + .target')" = "peer.announce b" ]
}

@test "limit flags out of range are refused with 64 before anything starts" {
  local f
  for f in "--request-timeout 0" "--request-timeout 3601" "--max-watches-per-peer 0" \
           "--max-nonces 0" "--max-connections 0" "--announces-per-minute -1" "--audit-max-age -1"; do
    # shellcheck disable=SC2086
    mrun -s "$EX_USAGE" mesh-coord serve --state st $f
    [[ "$stderr" == "mesh-coord: error: ${f%% *}"* ]] || { echo "$f: $stderr"; false; }
  done
  [ ! -e st ]
}
