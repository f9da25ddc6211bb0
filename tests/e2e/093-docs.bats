#!/usr/bin/env bats
# The commands of README.md, mesh(7) and the EXAMPLES of every man page, run
# as written (system paths moved into a scratch root, interface names made
# unique) in a namespace that owns the documents' addresses. Every call of a
# mesh program runs the installed program for real; a usage error (exit 64,
# an unknown option or verb) fails the test, so an example cannot name a
# flag or verb that does not exist. The two walk-throughs (README's quick
# start, mesh(7)) must also end with an enrolled node.

load helpers
load shipped

setup() {
  require_root
  cd "$BATS_TEST_TMPDIR"
  ship_install
  # A fresh machine: the documents create what they use.
  rmdir "$R/etc/mesh"
}

# What the man pages' examples take as given: a node key in /etc/mesh and
# in the working directory, and a node's state directory with its key and
# map (one peer, $DOC_PEER_KEY).
doc_fixtures() {
  local st=$R/var/lib/mesh/$SHIP_IFM d=$BATS_TEST_TMPDIR/doc.$(basename "$1") f
  mkdir -p "$R/etc/mesh" "$st" "$d"
  (umask 077; mesh-keygen genkey >"$R/etc/mesh/node.key")
  cp "$R/etc/mesh/node.key" "$R/etc/mesh/private.key"
  DOC_PEER_KEY=$(mesh-keygen genkey | mesh-keygen pubkey)
  jq -n --arg k "$(mesh-keygen pubkey <"$R/etc/mesh/node.key")" --arg p "$DOC_PEER_KEY" \
    '{version:1, serial:1, self:{name:"n1", public_key:$k, addresses:["100.64.0.1/10"], listen_port:51820},
      peers:[{name:"n2", public_key:$p, addresses:["100.64.0.2/32"], allowed_ips:[],
              endpoints:[{endpoint:"203.0.113.2:51820", kind:"host"}]}],
      firewall:{inbound:[]}}' >"$d/map.json"
  for f in "$d" "$st"; do cp "$R/etc/mesh/node.key" "$f/node.key"; done
  cp "$d/map.json" "$st/map.json"
  on_teardown "nsx $2 mesh-apply down --interface $SHIP_IF0 >/dev/null 2>&1"
  on_teardown "nsx $2 mesh-apply down --interface $SHIP_IFM >/dev/null 2>&1"
}

# doc_ok FILE: run FILE's commands in a fresh lab namespace; fail on a FAIL
# line, or when no mesh program ran at all (the extraction broke). The
# walk-throughs (README.md, mesh.7) start from a fresh machine; the other
# man pages from doc_fixtures.
doc_ok() {
  local doc=$1 ns=d$(( ++doc_n ))
  doc_lab "$ns"
  case "$doc" in README.md|man/mesh.7) ;; *) doc_fixtures "$doc" "$ns" ;; esac
  doc_run "$ns" "$doc" "$(ship_path "$(doc_commands "$MESH_ROOT/$doc")")"
  echo "== $doc"; cat "$DOC_LOG"
  if grep -q '^FAIL' "$DOC_LOG"; then
    echo "-- stderr of the commands"; tail -n 40 "$DOC_DIR.err"
    return 1
  fi
  grep -Eq '^ok [0-9]+ mesh-' "$DOC_LOG" || { echo "$doc: no mesh command ran"; return 1; }
  # Every line that starts with a mesh program ran (none was cut off by a
  # failed cd or a syntax error).
  local want have
  want=$(grep -Ec '^[[:space:]]*mesh-[a-z]+( |$)' "$DOC_DIR.sh" || true)
  have=$(grep -Ec '^(ok [0-9]+|skip|FAIL) mesh-' "$DOC_LOG" || true)
  [ "$have" -ge "$want" ] || { echo "$doc: $want commands, $have ran"; tail -n 40 "$DOC_DIR.err"; return 1; }
}

@test "docs: the check itself fails on a misspelled flag or verb" {
  doc_lab d0
  doc_run d0 fake.7 'mesh-keygen genkey --outptu x.key
mesh-coord mapp --registration reg.json --key node.key
mesh-keygen genkey -o ok.key'
  cat "$DOC_LOG"
  [ "$(grep -c '^FAIL' "$DOC_LOG")" -eq 2 ]
  grep -q '^FAIL mesh-keygen genkey --outptu' "$DOC_LOG"
  grep -q '^FAIL mesh-coord mapp' "$DOC_LOG"
  grep -q '^ok 0 mesh-keygen genkey -o ok.key' "$DOC_LOG"
  # Extraction: roff escapes undone, continuation lines kept, JSON left out.
  printf '%s\n' '.SH EXAMPLES' '.EX' 'mesh-apply \-i wg0 \e' '    \-\-dry\-run map.json' '{' '  "a": 1' '}' '.EE' \
    '.SH SEE ALSO' '.EX' 'not-an-example' '.EE' >x.8
  [ "$(doc_commands x.8)" = "#@block 1
mesh-apply -i wg0 \\
    --dry-run map.json" ]
  [ "$(doc_json x.8 | tr -d '\0')" = '{
  "a": 1
}' ]
}

@test "docs: README.md's commands run, and its quick start enrols a node" {
  doc_ok README.md
  [ -s "$R/var/lib/mesh/$SHIP_IFM/registration.json" ] ||
    { echo "the quick start did not enrol its node"; cat "$DOC_DIR.err"; false; }
}

@test "docs: mesh(7)'s walk-through runs and enrols a node" {
  doc_ok man/mesh.7
  [ -s "$R/var/lib/mesh/$SHIP_IFM/registration.json" ] ||
    { echo "the walk-through did not enrol its node"; cat "$DOC_DIR.err"; false; }
}

@test "docs: every man page's EXAMPLES commands are accepted by the programs" {
  local f n=0
  for f in "$MESH_ROOT"/man/*.[1-8]; do
    [ "$(basename "$f")" = mesh.7 ] && continue
    grep -Eq '^mesh-[a-z]+ |^ +mesh-[a-z]+ ' <(doc_commands "$f") || continue
    doc_ok "man/$(basename "$f")"
    n=$((n + 1))
  done
  [ "$n" -ge 7 ]
}

@test "docs: JSON examples in the man pages parse" {
  local f
  for f in "$MESH_ROOT"/README.md "$MESH_ROOT"/man/*.[1-8]; do
    while IFS= read -r -d '' j; do
      jq -e . >/dev/null <<<"$j" || { echo "$f: bad JSON example:"; echo "$j"; false; }
    done < <(doc_json "$f")
  done
}

@test "docs: mesh-netmap(5)'s serial rule: a lower serial (a coordinator restored from a backup) reaches a watching node" {
  load 010-coord
  coord_start coord1
  port=$COORD_PORT
  coord_key k --reusable
  echo '{"rules":[{"name":"ping","src":["all"],"dst":["all"],"proto":"icmp"}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_join n1 k
  coord_join n2 k
  kill "$coord1_pid"; wait "$coord1_pid" || true
  cp -a "$COORD_STATE" backup
  COORD_LISTEN=127.0.0.1:$port coord_start coord2
  coord_join n3 k
  start_daemon watch mesh-coord watch --registration n1.json --key n1.key --count 2 --wait 5 --max-backoff 0.2
  wait_for_line "$BATS_TEST_TMPDIR/watch.out" '"serial"' 10
  high=$(head -1 watch.out | jq .serial)
  [ "$(head -1 watch.out | jq -r '[.peers[].name] | sort | join(",")')" = n2,n3 ]
  # The coordinator's disk is lost; the backup comes back on the same address.
  kill "$coord2_pid"; wait "$coord2_pid" || true
  rm -rf "$COORD_STATE"; cp -a backup "$COORD_STATE"
  COORD_LISTEN=127.0.0.1:$port coord_start coord3
  wait_until 20 bash -c '[ "$(wc -l <watch.out)" -ge 2 ]'
  low=$(sed -n 2p watch.out | jq .serial)
  [ "$low" -lt "$high" ]
  [ "$(sed -n 2p watch.out | jq -r '[.peers[].name] | sort | join(",")')" = n2 ]
}
