#!/usr/bin/env bats
# Node key rotation in the lab: mesh-up --rotate-key-every replaces nodes'
# WireGuard keys while pings at 50/s run between every pair, and not one is
# lost; an interrupted rotation is finished when mesh-up starts again.
# Three nodes on the lab's internet (wireguard-go in namespaces), the
# coordinator and relay as in the demo (tests/lab/mesh.bash).

load helpers
load ../lab/lab
load ../lab/mesh

setup() {
  require_root
  mesh_lab_core
  local n
  for n in r1 r2 r3; do lab_peer_public "$n"; done
}

teardown() { mesh_teardown; }

rotations() {
  nsx inet mesh-coord events --server "$COORD_URL" --action peer.rotate-key |
    jq -r "select(.target == \"$1\") | .detail.to"
}

# The public key node $1's WireGuard has for node $2.
wg_has_key() { nsx "$1" wg show "$(wg_name "$1")" peers | grep -qxF "$2"; }

@test "pings at 50/s between every pair lose nothing while two nodes rotate their keys" {
  # r1 and r2 rotate every 8 s, 4 s apart; r3 keeps its key.
  MESH_LAB_UP_ARGS="--rotate-key-every 8s" mesh_lab_up r1
  sleep 4
  MESH_LAB_UP_ARGS="--rotate-key-every 8" mesh_lab_up r2
  mesh_lab_up r3
  mesh_lab_wait_all 30 r1 r2 r3
  local k1 k2 k3 a b pids=() bad=0 got n=1000
  k3=$(mesh_lab_pubkey r3)
  # 1000 pings at 50/s both ways between every pair (20 s or more): at
  # least two rotations of each rotating node.
  for a in r1 r2 r3; do
    for b in r1 r2 r3; do
      [ "$a" = "$b" ] && continue
      ip netns exec "$(lab_ns "$a")" ping -n -D -i 0.02 -c "$n" -W 5 "$(mesh_lab_ip "$b")" \
        > "$BATS_TEST_TMPDIR/ping.$a-$b" 2>&1 &
      pids+=($!)
    done
  done
  t0=$(date +%s)
  k1=$(mesh_lab_pubkey r1) k2=$(mesh_lab_pubkey r2)
  for p in "${pids[@]}"; do wait "$p" || true; done
  t1=$(date +%s)
  # The rotations that happened while the pings ran.
  local during
  during=$(nsx inet mesh-coord events --server "$COORD_URL" --action peer.rotate-key |
    jq -r --argjson t0 "$t0" --argjson t1 "$t1" 'select(.time >= $t0 and .time <= $t1) | .target' | sort | uniq -c)
  echo "rotations during the pings:"; echo "$during"
  for a in r1 r2 r3; do
    for b in r1 r2 r3; do
      [ "$a" = "$b" ] && continue
      got=$(awk '/packets transmitted/ {print $1, $4}' "$BATS_TEST_TMPDIR/ping.$a-$b")
      echo "$a -> $b: $got (transmitted, received)"
      [ "$got" = "$n $n" ] || bad=1
      # The replies that never came (icmp_seq), for the log.
      [ "$got" = "$n $n" ] || grep -o 'icmp_seq=[0-9]*' "$BATS_TEST_TMPDIR/ping.$a-$b" | cut -d= -f2 |
        sort -n | awk -v n="$n" 'BEGIN {e = 1} {while (e < $1) printf "lost %d\n", e++; e = $1 + 1}
          END {while (e <= n) printf "lost %d\n", e++}' | head -5
      # When: the replies just before a loss (ping -D stamps them).
      [ "$got" = "$n $n" ] || awk -F'[][ =]+' '/icmp_seq=/ {for (i = 1; i < NF; i++) if ($i == "icmp_seq")
          {s = $(i + 1); if (p != "" && s != p + 1) printf "gap after icmp_seq=%d: replies at %s.%s and %s.%s\n", p,
           strftime("%H:%M:%S", t), substr(t, index(t, ".") + 1), strftime("%H:%M:%S", $2), substr($2, index($2, ".") + 1)
           p = s; t = $2}}' \
        "$BATS_TEST_TMPDIR/ping.$a-$b" | head -5
    done
  done
  # The rotations' steps on every node (wall clock), to set beside a loss.
  [ "$bad" -eq 0 ] || grep -H -E "rotating the node key|took the new key|node key rotated|rotated peer|map serial" \
    "$BATS_TEST_TMPDIR"/up-r?.err | sed "s|$BATS_TEST_TMPDIR/||" | sort -t' ' -k2
  [ "$(awk '$2 == "r1" {print $1}' <<<"$during")" -ge 2 ]
  [ "$(awk '$2 == "r2" {print $1}' <<<"$during")" -ge 2 ]
  [ -z "$(awk '$2 == "r3"' <<<"$during")" ]
  [ "$bad" -eq 0 ]
  # The keys changed, and every WireGuard holds the current keys only.
  [ "$(mesh_lab_pubkey r1)" != "$k1" ]
  [ "$(mesh_lab_pubkey r2)" != "$k2" ]
  [ "$(mesh_lab_pubkey r3)" = "$k3" ]
  ! grep -E "unbound variable|syntax error|command not found|bad substitution|integer expression expected|line [0-9]+: " \
    "$BATS_TEST_TMPDIR"/up-*.err
}

@test "mesh-up finishes a rotation an earlier run left unfinished" {
  mesh_lab_up r1
  mesh_lab_up r2
  mesh_lab_wait_all 30 r1 r2
  local old new
  old=$(mesh_lab_pubkey r1)
  # Stopped with a new key made but not yet sent (node.key.new).
  kill "$up_r1_pid"; wait "$up_r1_pid" || true
  mesh-keygen genkey -o "$MESH_NODES/r1/node.key.new"
  new=$(mesh-keygen pubkey <"$MESH_NODES/r1/node.key.new")
  mesh_lab_up r1
  wait_until 20 test ! -e "$MESH_NODES/r1/node.key.new"
  [ "$(mesh_lab_pubkey r1)" = "$new" ]
  [ "$(rotations r1)" = "$new" ]
  [ "$(jq -r .public_key "$MESH_NODES/r1/registration.json")" = "$new" ]
  wait_until 20 wg_has_key r2 "$new"
  ! wg_has_key r2 "$old"
  wait_until 20 mesh_lab_all_ping r1 r2
}
