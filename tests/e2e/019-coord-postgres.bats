#!/usr/bin/env bats
# Coordinator replicas on PostgreSQL (mesh-coord(8), STORES AND REPLICAS):
# two `serve --store postgres://...` processes on one database. A watcher
# on replica A gets a policy change made on replica B; concurrent joins on
# both get distinct addresses and names and use a setup key exactly up to
# its limit; kill -9 of a replica loses no acknowledged join; `migrate`
# moves a SQLite state to PostgreSQL with identical maps. The server is a
# real PostgreSQL 15 the file starts itself (pg.bash).

bats_require_minimum_version 1.5.0
load helpers
load 010-coord
load pg
load oidc

setup_file() { pg_start; }
teardown_file() { pg_stop; }

setup() {
  cd "$BATS_TEST_TMPDIR"
  DB="t${BATS_TEST_NUMBER}"
  DSN=$(pg_createdb "$DB")
}
teardown() { mesh_teardown; }

# Replicas A and B on $DSN, sharing one state directory (key pair, token).
two_replicas() {
  COORD_STATE=$BATS_TEST_TMPDIR/state
  coord_start ra --store "$DSN" "$@"
  URL_A=$COORD_URL
  coord_start rb --store "$DSN" "$@"
  URL_B=$COORD_URL
}

# Setup key k (reusable, group g, made on A) and a policy (set on B) that
# lets g see g.
group_g() {
  COORD_URL=$URL_A coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p1.json
  mrun -s 0 mesh-coord policy set --server "$URL_B" p1.json
}

stored_at_least() { [ "$(pg_sql "$DB" 'select count(*) from peers')" -ge "$1" ]; }
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; }

# Map of PEER from the coordinator at URL, canonical JSON.
map_from() {
  mesh-coord map --registration "$BATS_TEST_TMPDIR/$1.json" --key "$BATS_TEST_TMPDIR/$1.key" \
    --server "$2" | jq -S .
}

# join_one URL KEYFILE NAME: one join; prints "STATUS PUBKEY ADDRESS NAME".
join_one() {
  local url=$1 sk=$2 name=$3 out rc
  mesh-keygen genkey -o "keys/$name.key"
  out=$(timeout 60 mesh-coord join --server "$url" --setup-key-file "$sk" --key "keys/$name.key" \
    --name "$name" 2>"keys/$name.err") && rc=0 || rc=$?
  if [ "$rc" -eq 0 ]; then
    printf '%s %s %s %s\n' "$rc" "$(jq -r .public_key <<<"$out")" \
      "$(jq -r '.addresses[0]' <<<"$out")" "$(jq -r .name <<<"$out")"
  else
    printf '%s %s - %s\n' "$rc" "$(mesh-keygen pubkey <"keys/$name.key")" "$name"
  fi
}
export -f join_one

@test "replicas: a node watching replica A gets a policy change made on replica B, same map and serial on both and on a replica started later" {
  two_replicas
  group_g
  COORD_URL=$URL_A coord_join a k
  COORD_URL=$URL_B coord_join b k
  COORD_URL=$URL_B coord_join c k
  # Both replicas serve a's map with the same content and serial.
  [ "$(map_from a "$URL_A" | jq -r '[.peers[].name]|join(",")')" = b,c ]
  cmp <(map_from a "$URL_A") <(map_from a "$URL_B")
  start_daemon watch mesh-coord watch --registration a.json --key a.key --server "$URL_A"
  wait_until 10 has_lines watch.out 1
  [ "$(head -1 watch.out | jq -r '[.peers[].name] | join(",")')" = b,c ]
  sleep 0.3   # parked in its long-poll on A
  printf '{"groups":{"g":{}},"rules":[{"src":["peer:a"],"dst":["g"]}]}' >p2.json
  t0=$(date +%s%N)
  mrun -s 0 mesh-coord policy set --server "$URL_B" p2.json
  wait_until 10 has_lines watch.out 2
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "push from replica B to a watcher on replica A: ${ms} ms" >&3
  [ "$ms" -lt 2000 ]
  s1=$(sed -n 1p watch.out | jq -r .serial)
  s2=$(sed -n 2p watch.out | jq -r .serial)
  [ "$s2" -gt "$s1" ]
  # b's map lost c (only a reaches b now); a's map still has b and c but
  # no inbound rule: both got the change, and both replicas agree.
  cmp <(sed -n 2p watch.out | jq -S .) <(map_from a "$URL_B")
  cmp <(map_from b "$URL_A") <(map_from b "$URL_B")
  [ "$(map_from b "$URL_A" | jq -r '[.peers[].name]|join(",")')" = a ]
  # The serial is the writer's, in the change log (the serials table trails
  # it). A replica started now serves the same maps and serials, and folds
  # the log into the table as it starts.
  policy_seq=$(pg_sql "$DB" 'select max(seq) from changes')
  coord_start rc --store "$DSN"
  for p in a b c; do cmp <(map_from "$p" "$URL_A") <(map_from "$p" "$COORD_URL"); done
  [ "$(pg_sql "$DB" "select serial from map_serials m join peers p on p.id=m.id where p.name='a'")" = "$s2" ]
  [ "$(pg_sql "$DB" "select value from meta where key='map_serials_folded'")" -ge "$policy_seq" ]
  # Setup keys, peers and the policy are the same through either replica.
  mrun -s 0 mesh-coord peer list --server "$URL_A" --json
  a_peers=$(jq -S '[.peers[] | del(.last_seen)]' <<<"$output")
  mrun -s 0 mesh-coord peer list --server "$URL_B" --json
  [ "$a_peers" = "$(jq -S '[.peers[] | del(.last_seen)]' <<<"$output")" ]
  mrun -s 0 mesh-coord policy get --server "$URL_A"
  [ "$(jq -c '.rules|length' <<<"$output")" = 1 ]
}

@test "replicas: an ID token that enrolled a node on replica A is refused for another key on replica B" {
  idp_start
  two_replicas --oidc-issuer "$IDP_URL" --oidc-client-id mesh
  idp_mint '{"sub": "carol", "claims": {"email": "carol@example.com"}}' >t.jwt
  mesh-keygen genkey -o c.key
  mesh-keygen genkey -o thief.key
  mrun -s 0 mesh-coord login --server "$URL_A" --key c.key --id-token-file t.jwt
  mrun -s "$EX_NOPERM" mesh-coord login --server "$URL_B" --key thief.key --id-token-file t.jwt
  [[ "$stderr" == *"this ID token already enrolled another node key"* ]]
  # One record, keyed by the token's hash (never the token), until it expires.
  [ "$(pg_sql "$DB" "select count(*) from records where kind = 'id-token'")" = 1 ]
  [ "$(pg_sql "$DB" "select key from records where kind = 'id-token'")" = "$(tr -d '\n' <t.jwt | sha256sum | cut -d' ' -f1)" ]
}

@test "replicas: 200 concurrent joins split across both get distinct addresses and use a setup key exactly up to its limit" {
  # Every refused join counts against its source (LIMITS); all come from
  # 127.0.0.1 here.
  two_replicas --auth-failures-per-minute 1000
  COORD_URL=$URL_A coord_key lim --reusable --usage-limit 150
  mkdir keys
  for i in $(seq 1 200); do
    if [ $((i % 2)) -eq 0 ]; then echo "$URL_A lim.sk n$i"; else echo "$URL_B lim.sk n$i"; fi
  done >jobs
  # 20 joins with one name, 10 on each replica: one of them gets it.
  COORD_URL=$URL_A coord_key any --reusable --usage-limit 0
  for i in $(seq 1 20); do
    if [ $((i % 2)) -eq 0 ]; then echo "$URL_A any.sk same"; else echo "$URL_B any.sk same"; fi
  done >dupjobs
  mrun -T 300 -s 0 bash -c 'xargs -P 40 -L 1 bash -c '"'"'join_one "$0" "$1" "$2"'"'"' <jobs >results'
  [ "$(wc -l <results)" -eq 200 ]
  ok=$(awk '$1 == 0' results | wc -l)
  echo "acknowledged: $ok; refused: $(awk '$1 != 0' results | wc -l)" >&3
  [ "$ok" -eq 150 ]
  # The refused ones were refused for the exhausted key (exit 77, NoPerm).
  [ "$(awk '$1 != 0 && $1 != 77' results | wc -l)" -eq 0 ]
  [ "$(awk '$1 == 0 {print $3}' results | sort -u | wc -l)" -eq 150 ]
  [ "$(awk '$1 == 0 {print $4}' results | sort -u | wc -l)" -eq 150 ]
  # The database agrees: 150 peers, the ones acknowledged, the key used 150 times.
  [ "$(pg_sql "$DB" 'select count(*) from peers')" -eq 150 ]
  cmp <(awk '$1 == 0 {print $2}' results | sort) <(pg_sql "$DB" 'select public_key from peers' | sort)
  mrun -s 0 mesh-coord setup-key list --server "$URL_B" --json
  [ "$(jq '.setup_keys[] | select(.name=="lim") | .used' <<<"$output")" -eq 150 ]
  mrun -s 0 mesh-coord setup-key list --server "$URL_A" --json
  [ "$(jq '.setup_keys[] | select(.name=="lim") | .used' <<<"$output")" -eq 150 ]
  # One name, joined 20 times at once on both replicas: exactly one peer.
  : >dupresults
  dups=()
  for w in $(seq 1 20); do
    ( url=$(sed -n "${w}p" dupjobs | cut -d' ' -f1)
      mesh-keygen genkey -o "keys/dup$w.key"
      timeout 60 mesh-coord join --server "$url" --setup-key-file any.sk --key "keys/dup$w.key" \
        --name same >/dev/null 2>&1 && echo ok >>dupresults || echo "no $?" >>dupresults ) 3>&- &
    dups+=($!)
  done
  wait "${dups[@]}"
  [ "$(grep -c '^ok' dupresults)" -eq 1 ]
  [ "$(grep -c '^no 65' dupresults)" -eq 19 ]
  [ "$(pg_sql "$DB" "select count(*) from peers where name='same'")" -eq 1 ]
}

@test "replicas: kill -9 of one replica during joins loses no acknowledged join, and the other keeps serving" {
  two_replicas
  COORD_URL=$URL_A coord_key k --reusable --usage-limit 0 --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$URL_A" p.json
  # A node watching B, with A as its second coordinator (mesh-coord(8), Failover).
  COORD_URL=$URL_A coord_join w k
  jq --arg a "$URL_A" --arg b "$URL_B" '.servers = [$b, $a]' w.json >w2.json
  start_daemon watch mesh-coord watch --registration w2.json --key w.key --max-backoff 0.2
  wait_until 10 has_lines watch.out 1
  mkdir keys
  for i in $(seq 1 120); do
    if [ $((i % 2)) -eq 0 ]; then echo "$URL_A k.sk m$i"; else echo "$URL_B k.sk m$i"; fi
  done >jobs
  xargs -P 8 -L 1 bash -c 'join_one "$0" "$1" "$2"' <jobs >results 2>/dev/null 3>&- &
  joins=$!
  wait_until 60 stored_at_least 20
  kill -9 "$rb_pid"
  wait "$joins" || true
  [ "$(wc -l <results)" -eq 120 ]
  ok=$(awk '$1 == 0' results | wc -l)
  echo "acknowledged: $ok of 120 (replica B killed during the joins)" >&3
  # Every acknowledged join is in the database; nothing else is.
  awk '$1 == 0 {print $2}' results | sort >acked
  pg_sql "$DB" 'select public_key from peers' | sort >stored
  [ "$(comm -23 acked stored | wc -l)" -eq 0 ]
  # A join B committed but could not answer is in the database; all joins
  # sent to A went through.
  [ "$(awk '$1 == 0' results | wc -l)" -ge 60 ]
  # A serves every stored peer, including those that joined on B ...
  mrun -s 0 mesh-coord peer list --server "$URL_A" --json
  cmp <(jq -r '.peers[].public_key' <<<"$output" | sort) stored
  # ... their maps, and new joins.
  b_peer=$(awk '$1 == 0 && $4 ~ /^m[0-9]*[13579]$/ {print $4; exit}' results)
  [ -n "$b_peer" ]
  mrun -s 0 mesh-coord map --server "$URL_A" --coordinator-key "$(cat state/coordinator.pub)" \
    --key "keys/$b_peer.key"
  [ "$(jq -r .self.name <<<"$output")" = "$b_peer" ]
  COORD_URL=$URL_A coord_join late k
  [ "$(pg_sql "$DB" "select count(*) from peers where name='late'")" -eq 1 ]
  # The watcher that was on B went on on A and got every change since.
  wait_until 20 bash -c "tail -1 watch.out | jq -e '[.peers[].name] | index(\"late\")' >/dev/null"
  grep -q "trying $URL_A" watch.err
  [ "$(tail -1 watch.out | jq '.peers | length')" -eq "$(( $(pg_sql "$DB" 'select count(*) from peers') - 1 ))" ]
}

@test "migrate: SQLite to PostgreSQL gives identical maps (content and serials); a target with state is refused" {
  COORD_STATE=$BATS_TEST_TMPDIR/state
  coord_start sq
  coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"],"proto":"tcp","ports":[22]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_join a k
  coord_join b k
  coord_join c k
  mrun -s 0 mesh-coord peer set-groups --server "$COORD_URL" c g x
  for p in a b c; do map_from $p "$COORD_URL" >$p.before; done
  mrun -s 0 mesh-coord events --server "$COORD_URL" --json
  events_before=$(jq '.events | length' <<<"$output")
  kill "$sq_pid"
  wait "$sq_pid" || true
  mrun -s 0 mesh-coord migrate --from "sqlite:$COORD_STATE" --to "$DSN" --json
  [ "$(jq .peers <<<"$output")" -eq 3 ]
  [ "$(jq .setup_keys <<<"$output")" -eq 1 ]
  [ "$(jq .events <<<"$output")" -eq "$events_before" ]
  [[ "$(jq -r .to <<<"$output")" == postgresql://* ]]
  # A second migration would overwrite: refused, nothing changed.
  mrun -s 73 mesh-coord migrate --from "sqlite:$COORD_STATE" --to "$DSN"
  [[ "$stderr" == *"already holds coordinator state"* ]]
  [ "$(pg_sql "$DB" 'select count(*) from peers')" -eq 3 ]
  mrun -s 66 mesh-coord migrate --from "sqlite:$BATS_TEST_TMPDIR/nothing" --to "$DSN"
  mrun -s 64 mesh-coord migrate --from "$COORD_STATE" --to "$DSN"
  coord_start pgc --store "$DSN"
  for p in a b c; do cmp $p.before <(map_from $p "$COORD_URL"); done
  # The audit log came along with its sequence numbers.
  mrun -s 0 mesh-coord events --server "$COORD_URL" --json
  [ "$(jq '.events | length' <<<"$output")" -ge "$events_before" ]
  [ "$(jq '.events[0].seq' <<<"$output")" -eq 1 ]
  # And the state goes on: a join after the move.
  coord_join d k
  map_from a "$COORD_URL" >a.after
  [ "$(jq -r '[.peers[].name]|join(",")' a.after)" = b,c,d ]
  [ "$(jq .serial a.after)" -gt "$(jq .serial a.before)" ]
  # --force replaces the target's state, in one transaction.
  kill "$pgc_pid"
  wait "$pgc_pid" || true
  mrun -s 0 mesh-coord migrate --from "sqlite:$COORD_STATE" --to "$DSN" --force
  [[ "$output" == "migrated 3 peers, 1 setup keys, "* ]]
  [ "$(pg_sql "$DB" 'select count(*) from peers')" -eq 3 ]
}

@test "serve --store: a PostgreSQL server that does not answer is exit 69, and a replica with another key pair is refused" {
  mrun -s 69 mesh-coord serve --state "$BATS_TEST_TMPDIR/s1" --store "postgresql:///nodb?host=$PG_DIR&user=mesh"
  [[ "$stderr" == *"mesh-coord: error: "*nodb* ]]
  COORD_STATE=$BATS_TEST_TMPDIR/s1
  coord_start one --store "$DSN"
  mrun -s 78 mesh-coord serve --state "$BATS_TEST_TMPDIR/s2" --store "$DSN"
  [[ "$stderr" == *"replicas share one key pair"* ]]
}

# ---- what crosses replicas besides the change log

key_of() { jq -r .public_key "$1.json"; }
count_lines() { grep -c -- "$2" "$1" 2>/dev/null || true; }
has_match() { [ "$(count_lines "$1" "$2")" -ge "$3" ]; }

@test "replicas: a punch request posted on replica B reaches the target's watcher on replica A at once, once; the rate limit counts both" {
  two_replicas
  group_g
  COORD_URL=$URL_A coord_join a k
  COORD_URL=$URL_A coord_join b k
  start_daemon watchb mesh-coord watch --registration b.json --key b.key --cache b.cache --events \
    --wait 60 --server "$URL_A"
  wait_until 10 has_match watchb.out '"event":"map"' 1
  sleep 0.3   # b's watcher is parked in a 60 s long-poll on A
  t0=$(date +%s%N)
  mrun -s 0 mesh-coord punch --registration a.json --key a.key --server "$URL_B" --peer "$(key_of b)"
  [ "$(jq -c '[.queued, .ignored]' <<<"$output")" = '[1,0]' ]
  wait_until 10 has_match watchb.out '"event":"punch"' 1
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "punch from replica B to a watcher on replica A: ${ms} ms" >&3
  [ "$ms" -lt 1000 ]   # not the change log's 2 s poll: punches are not in it
  [ "$(grep '"event":"punch"' watchb.out)" = "{\"event\":\"punch\",\"from\":\"$(key_of a)\",\"name\":\"a\"}" ]
  sleep 1
  [ "$(count_lines watchb.out '"event":"punch"')" -eq 1 ]
  [ "$(pg_sql "$DB" "select count(*) from changes where what like '%punch%'")" -eq 0 ]
  # 30 requests per 10 s per requester, wherever they land: 29 more on A,
  # then the next one on B is refused.
  for i in $(seq 29); do
    mrun -s 0 mesh-coord punch --registration a.json --key a.key --server "$URL_A" --peer "$(key_of b)"
  done
  sleep 0.3
  mrun -s "$EX_TEMPFAIL" mesh-coord punch --registration a.json --key a.key --server "$URL_B" --peer "$(key_of b)"
  [[ "$stderr" == *"coordinator refused: too many punch requests"* ]]
}

@test "replicas: an ephemeral peer watching replica A is kept by both janitors while it watches, and deleted once it goes away" {
  two_replicas --janitor-interval 1
  COORD_URL=$URL_A coord_key e --ephemeral --ephemeral-timeout 3s --reusable
  COORD_URL=$URL_A coord_join e e
  # Long-polls of 2 s: a watcher that is gone holds no long-poll for long.
  start_daemon watche mesh-coord watch --registration e.json --key e.key --wait 2 --server "$URL_A"
  wait_until 10 has_lines watche.out 1
  # Three timeouts; B has not seen the peer since it learned of the join.
  sleep 9
  [ "$(pg_sql "$DB" "select count(*) from peers where name='e'")" -eq 1 ]
  mrun -s 0 mesh-coord peer list --server "$URL_B"
  [ "$(jq -r '[.peers[].name] | join(",")' <<<"$output")" = e ]
  [ "$(pg_sql "$DB" 'select count(*) from peer_seen')" -eq 1 ]
  kill "$watche_pid"; wait "$watche_pid" 2>/dev/null || true
  gone() { [ "$(pg_sql "$DB" "select count(*) from peers where name='e'")" -eq 0 ]; }
  wait_until 15 gone
  [ "$(pg_sql "$DB" 'select count(*) from peer_seen')" -eq 0 ]
  mrun -s 0 mesh-coord events --server "$URL_B" --action peer.delete
  [ "$(jq -r .detail.reason <<<"$output")" = "ephemeral peer inactive" ]
  # Both replicas agree.
  for u in "$URL_A" "$URL_B"; do
    mrun -s 0 mesh-coord peer list --server "$u"
    [ "$(jq '.peers | length' <<<"$output")" -eq 0 ]
  done
}

@test "replicas: --dns-domain on a restarted replica reaches a watcher of the other; a conflicting overlay prefix is refused (64)" {
  two_replicas
  COORD_URL=$URL_A coord_key k --reusable
  COORD_URL=$URL_A coord_join a k
  start_daemon watch mesh-coord watch --registration a.json --key a.key --server "$URL_A"
  wait_until 10 has_lines watch.out 1
  [ "$(head -1 watch.out | jq -r .dns.domain)" = mesh ]
  kill "$rb_pid"; wait "$rb_pid" 2>/dev/null || true
  coord_start rb2 --store "$DSN" --dns-domain corp.example
  URL_B=$COORD_URL
  wait_until 10 has_lines watch.out 2
  [ "$(sed -n 2p watch.out | jq -r .dns.domain)" = corp.example ]
  cmp <(map_from a "$URL_A") <(map_from a "$URL_B")
  # Prefixes are fixed: a replica asking for another one does not start.
  mrun -s "$EX_USAGE" mesh-coord serve --listen 127.0.0.1:0 --state "$COORD_STATE" --store "$DSN" \
    --ipv4-prefix 198.18.0.0/15
  [[ "$stderr" == *"mesh-coord: error: --ipv4-prefix 198.18.0.0/15: "*"holds ipv4_prefix 100.64.0.0/10, fixed for every replica"* ]]
  [ -z "$output" ]
  # The stored one, named explicitly, is fine.
  coord_start rc --store "$DSN" --ipv4-prefix 100.64.0.0/10
}

@test "replicas: a database a version-1 coordinator left (every serial in its table, the log pruned) starts with the same maps and becomes version 2; a newer version is refused" {
  two_replicas
  group_g
  COORD_URL=$URL_A coord_join a k
  COORD_URL=$URL_B coord_join b k
  COORD_URL=$URL_A coord_join c k
  before=$(map_from a "$URL_A")
  kill "$ra_pid" "$rb_pid"; wait "$ra_pid" "$rb_pid" 2>/dev/null || true
  # Version 1 wrote every serial to map_serials in each change and kept no
  # fold mark; its log was pruned (all but the newest change). A replica
  # start folds the whole log, leaving the table as version 1 did.
  coord_start r0 --store "$DSN"
  kill "$r0_pid"; wait "$r0_pid" 2>/dev/null || true
  last=$(pg_sql "$DB" 'select max(seq) from changes')
  pg_sql "$DB" "delete from changes where seq < $last; delete from meta where key='map_serials_folded'; insert into meta values('changes_pruned_through', '$((last - 1))') on conflict(key) do update set value=excluded.value; update meta set value='1' where key='schema_version'" >/dev/null
  coord_start rc --store "$DSN"
  [ "$(map_from a "$COORD_URL")" = "$before" ]
  [ "$(pg_sql "$DB" "select value from meta where key='schema_version'")" = 2 ]
  [ "$(pg_sql "$DB" "select value from meta where key='map_serials_folded'")" -ge "$last" ]
  # A database a newer coordinator wrote is refused (exit 78), untouched.
  kill "$rc_pid"; wait "$rc_pid" 2>/dev/null || true
  pg_sql "$DB" "update meta set value='3' where key='schema_version'" >/dev/null
  mrun -s "$EX_CONFIG" mesh-coord serve --listen 127.0.0.1:0 --state "$COORD_STATE" --store "$DSN"
  [[ "$stderr" == *"schema version 3 is newer than this mesh-coord's (2)"* ]]
  [ "$(pg_sql "$DB" "select value from meta where key='schema_version'")" = 3 ]
}
