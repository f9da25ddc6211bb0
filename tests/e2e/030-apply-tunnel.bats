#!/usr/bin/env bats
# mesh-apply with real wireguard-go in two network namespaces: tunnel,
# firewall, idempotence, peer removal, coexistence with other nftables
# tables and `down`.

bats_require_minimum_version 1.5.0
load helpers
load apply-lib

setup() {
  apply_pair
  standard_maps
}

handshake_of() { nsx "$1" wg show "$2" latest-handshakes | awk -v k="$3" '$1 == k {print $2}'; }

@test "maps applied: ping through the tunnel both ways" {
  apply_a "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = true ]
  [ "$(jq -r .created <<<"$output")" = true ]
  [ "$(jq -r .backend <<<"$output")" = userspace ]
  [ "$(jq -r '.peers.added[0].public_key' <<<"$output")" = "$PB" ]
  [ "$(jq -r '.addresses.added[0]' <<<"$output")" = 100.64.0.1/10 ]
  apply_b "$D/b.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  mrun -s 0 "${NB[@]}" ping -c 1 -W 5 100.64.0.1
  # The interface is up with the map's MTU, port and address.
  ip -n "${MESH_RUN}a" link show "$IFA" | grep -q 'mtu 1420'
  ip -n "${MESH_RUN}a" link show "$IFA" | grep -q ',UP'
  [ "$(nsx a wg show "$IFA" listen-port)" = 51820 ]
}

@test "the memo is put in place durably: its directory is fsynced after the rename" {
  st="$BATS_TEST_TMPDIR/state"
  mkdir -p "$st"
  mrun -s 0 "${NA[@]}" env MESH_APPLY_STATE_DIR="$st" strace -y -e trace=rename,fsync \
    -o "$BATS_TEST_TMPDIR/trace" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  # The memo's rename into the state directory, then an fsync of that directory.
  awk -v d="$st" 'index($0, "rename(") && index($0, d "/") { r = 1 }
                  r && index($0, "fsync(") && index($0, "<" d ">") { ok = 1 }
                  END { exit !ok }' "$BATS_TEST_TMPDIR/trace"
}

@test "firewall: TCP to an allowed port connects, to a denied port does not" {
  apply_a "$D/a.json"
  apply_b "$D/b.json"
  start_daemon allowed nsx a socat TCP-LISTEN:8080,bind=100.64.0.1,reuseaddr,fork SYSTEM:'echo allowed'
  start_daemon denied nsx a socat TCP-LISTEN:9090,bind=100.64.0.1,reuseaddr,fork SYSTEM:'echo denied'
  wait_until 10 nsx a sh -c 'ss -ltn | grep -q ":9090 "'
  wait_until 10 nsx a sh -c 'ss -ltn | grep -q ":8080 "'
  mrun -s 0 "${NB[@]}" socat -T 5 - TCP:100.64.0.1:8080,connect-timeout=5 </dev/null
  [ "$output" = allowed ]
  # 9090 is listening (reachable locally) but the mesh firewall drops it.
  mrun -s 0 "${NA[@]}" socat -T 5 - TCP:100.64.0.1:9090,connect-timeout=5 </dev/null
  [ "$output" = denied ]
  mrun "${NB[@]}" socat -T 3 - TCP:100.64.0.1:9090,connect-timeout=3 </dev/null
  [ "$status" -ne 0 ]
  [ "$output" != denied ]
  # The drop was counted by our table (packets arrived and were refused).
  nsx a nft list chain inet "mesh_$IFA" mesh_in | grep -Eq 'counter packets [1-9][0-9]* .* drop'
  # B accepts anything from A.
  start_daemon bsrv nsx b socat TCP-LISTEN:9090,bind=100.64.0.2,reuseaddr,fork SYSTEM:'echo b'
  wait_until 10 nsx b sh -c 'ss -ltn | grep -q ":9090 "'
  mrun -s 0 "${NA[@]}" socat -T 5 - TCP:100.64.0.2:9090,connect-timeout=5 </dev/null
  [ "$output" = b ]
}

@test "re-applying the same map is a no-op and keeps the WireGuard session" {
  apply_a "$D/a.json"
  apply_b "$D/b.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  local hs rx
  hs=$(handshake_of a "$IFA" "$PB")
  [ -n "$hs" ]
  [ "$hs" -gt 0 ]
  rx=$(nsx a wg show "$IFA" transfer | awk '{print $2}')
  local before; before=$(snapshot a "$IFA")
  sleep 1.1
  apply_a "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  [ "$(jq -r .peers.unchanged <<<"$output")" = 1 ]
  [ "$(jq -c '[.peers.added, .peers.updated, .peers.removed, .routes.added, .addresses.added] | add' <<<"$output")" = '[]' ]
  [ "$(jq -r .firewall.changed <<<"$output")" = false ]
  [ "$(handshake_of a "$IFA" "$PB")" = "$hs" ]
  [ "$(nsx a wg show "$IFA" transfer | awk '{print $2}')" -ge "$rx" ]
  [ "$(snapshot a "$IFA")" = "$before" ]
  # And traffic still flows on the same session.
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  [ "$(handshake_of a "$IFA" "$PB")" = "$hs" ]
}

@test "allowed-IP and route changes touch only the changed peer" {
  apply_a "$D/a.json"
  apply_b "$D/b.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  local hs; hs=$(handshake_of a "$IFA" "$PB")
  write_map "$D/a2.json" "$PA" 100.64.0.1/10 51820 \
    "[$(peer_json b "$PB" 100.64.0.2/32 198.51.100.2:51820 '["198.18.7.0/24"]'),
      $(peer_json c "$PC" 100.64.0.3/32 198.51.100.3:51820)]" \
    '[{"sources":["100.64.0.2/32"],"proto":"tcp","ports":[8080]}]'
  apply_a "$D/a2.json"
  [ "$(jq -r '.peers.updated[0].public_key' <<<"$output")" = "$PB" ]
  [ "$(jq -c '.peers.updated[0].allowed_ips_added' <<<"$output")" = '["198.18.7.0/24"]' ]
  [ "$(jq -r '.peers.added[0].public_key' <<<"$output")" = "$PC" ]
  [ "$(jq -c .routes.added <<<"$output")" = '["198.18.7.0/24"]' ]
  [ "$(jq -r .firewall.changed <<<"$output")" = true ]
  ip -n "${MESH_RUN}a" route show dev "$IFA" | grep -q '^198.18.7.0/24 proto 77'
  nsx a wg show "$IFA" allowed-ips | grep "$PB" | grep -q 198.18.7.0/24
  # B's session survived the update of its allowed IPs.
  [ "$(handshake_of a "$IFA" "$PB")" = "$hs" ]
  # Back to the original map: the route and C go away.
  apply_a "$D/a.json"
  [ "$(jq -c '.peers.updated[0].allowed_ips_removed' <<<"$output")" = '["198.18.7.0/24"]' ]
  [ "$(jq -r '.peers.removed[0].public_key' <<<"$output")" = "$PC" ]
  [ "$(jq -c .routes.removed <<<"$output")" = '["198.18.7.0/24"]' ]
  ! ip -n "${MESH_RUN}a" route show dev "$IFA" | grep -q 198.18.7.0
  [ "$(handshake_of a "$IFA" "$PB")" = "$hs" ]
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
}

@test "a peer removed from the map can no longer be reached" {
  apply_a "$D/a.json"
  apply_b "$D/b.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  write_map "$D/a-empty.json" "$PA" 100.64.0.1/10 51820 '[]' '[]'
  apply_a "$D/a-empty.json"
  [ "$(jq -r '.peers.removed[0].public_key' <<<"$output")" = "$PB" ]
  [ -z "$(nsx a wg show "$IFA" peers)" ]
  mrun "${NA[@]}" ping -c 1 -W 2 100.64.0.2
  [ "$status" -ne 0 ]
  mrun "${NB[@]}" ping -c 1 -W 2 100.64.0.1
  [ "$status" -ne 0 ]
}

@test "the firewall table coexists with an unrelated nftables table" {
  nsx a nft -f - <<'NFT'
table inet unrelated {
  set keep {
    type ipv4_addr
    elements = { 192.0.2.1 }
  }
  chain input {
    type filter hook input priority -10; policy accept;
    counter
  }
}
table ip other {
  chain c {
    type filter hook output priority 0; policy accept;
  }
}
NFT
  local before; before=$(nsx a nft list table ip other; nsx a nft list set inet unrelated keep)
  apply_a "$D/a.json"
  nsx a nft list table inet "mesh_$IFA" >/dev/null
  write_map "$D/a2.json" "$PA" 100.64.0.1/10 51820 \
    "[$(peer_json b "$PB" 100.64.0.2/32 198.51.100.2:51820)]" \
    '[{"sources":["100.64.0.2/32"],"proto":"udp","ports":["5000-5010"]}]'
  apply_a "$D/a2.json"
  [ "$(jq -r .firewall.changed <<<"$output")" = true ]
  nsx a nft list set inet "mesh_$IFA" udp4 | grep -q '100.64.0.2 . 5000-5010'
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA"
  [ "$(nsx a nft list table ip other; nsx a nft list set inet unrelated keep)" = "$before" ]
  nsx a nft list chain inet unrelated input | grep -q counter
}

@test "down leaves nothing behind" {
  apply_a "$D/a.json"
  apply_b "$D/b.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  local pid
  pid=$(nsx a ip netns pids "${MESH_RUN}a" | while read -r p; do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = wireguard-go ] && grep -qa "$IFA" /proc/$p/cmdline && echo "$p"; done | head -1)
  [ -n "$pid" ]
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA"
  [ "$(jq -r .interface_removed <<<"$output")" = true ]
  [ "$(jq -r .firewall_removed <<<"$output")" = true ]
  ! ip -n "${MESH_RUN}a" link show "$IFA" 2>/dev/null
  [ ! -e "/var/run/wireguard/$IFA.sock" ]
  ! nsx a nft list table inet "mesh_$IFA" 2>/dev/null
  [ -z "$(ip -n "${MESH_RUN}a" route show | grep -E '100\.64|198\.18')" ]
  ! ls /run/mesh-apply/"$IFA".* 2>/dev/null
  # The daemon that served the interface is gone (or a zombie awaiting its reaper).
  wait_until 10 sh -c "! kill -0 $pid 2>/dev/null || grep -q '^State:.*Z' /proc/$pid/status"
  # Idempotent: a second down has nothing to do.
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA"
  [ "$(jq -r .changed <<<"$output")" = false ]
  # B is untouched.
  nsx b wg show "$IFB" >/dev/null
}

@test "hand edits are repaired: at once with --verify, else once the memo snapshot expires" {
  apply_a "$D/a.json"
  apply_b "$D/b.json"
  apply_a "$D/a.json"
  # Identical input and state: confirmed without re-parsing the map, and
  # without reading the device back (its memo snapshot is fresh).
  mrun -s 0 env MESH_LOG=debug "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  [[ "$stderr" == *"no-op confirmed from the memo (device snapshot trusted)"* ]]
  # Someone removes the peer by hand: --verify reads the device back and
  # the same map puts the peer back...
  nsx a wg set "$IFA" peer "$PB" remove
  apply_a --verify "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = true ]
  [ "$(jq -r '.peers.added[0].public_key' <<<"$output")" = "$PB" ]
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  # ...as does a run once the verification interval is over (0: always).
  nsx a wg set "$IFA" peer "$PB" remove
  mrun -s 0 env MESH_APPLY_VERIFY_INTERVAL=0 MESH_LOG=debug "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [ "$(jq -r '.peers.added[0].public_key' <<<"$output")" = "$PB" ]
  [[ "$stderr" != *"snapshot"* ]]
  # A full read that finds the expected state refreshes the snapshot.
  mrun -s 0 env MESH_APPLY_VERIFY_INTERVAL=0 MESH_LOG=debug "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [[ "$stderr" == *"no-op confirmed from the memo"* ]]
  [ "$(jq -r .changed <<<"$output")" = false ]
  mrun -s 0 env MESH_LOG=debug "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [[ "$stderr" == *"device snapshot trusted"* ]]
  # A hand-edited firewall table is replaced.
  nsx a nft flush chain inet "mesh_$IFA" mesh_in
  nsx a nft add rule inet "mesh_$IFA" mesh_in accept
  apply_a "$D/a.json"
  [ "$(jq -r .firewall.changed <<<"$output")" = false ]  # the digest comment still matches...
  # ...so a hand edit of our own table is only undone when the table is
  # reloaded; deleting the table is always noticed.
  nsx a nft delete table inet "mesh_$IFA"
  apply_a "$D/a.json"
  [ "$(jq -r .firewall.changed <<<"$output")" = true ]
  nsx a nft list chain inet "mesh_$IFA" mesh_in | grep -q 'counter packets .* drop'
  # A roamed endpoint is kept (no change) although the memo no longer matches.
  nsx a wg set "$IFA" peer "$PB" endpoint 198.51.100.2:51821
  apply_a "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  [ "$(nsx a wg show "$IFA" endpoints | awk '{print $2}')" = 198.51.100.2:51821 ]
}

@test "concurrent runs on one interface are serialised" {
  local i
  for i in 1 2 3; do
    start_daemon "run$i" nsx a mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  done
  for i in 1 2 3; do
    local v="run${i}_pid"
    wait "${!v}"  # each must exit 0
  done
  [ "$(cat "$BATS_TEST_TMPDIR"/run*.out | jq -s '[.[] | select(.created)] | length')" = 1 ]
  [ "$(cat "$BATS_TEST_TMPDIR"/run*.out | jq -s '[.[] | select(.changed)] | length')" = 1 ]
  [ "$(nsx a wg show "$IFA" peers)" = "$PB" ]
}

# rcvbuf NS PORT: the receive buffers (skmem rb, twice what was set) of the
# UDP sockets bound to PORT in namespace NS, one per line.
rcvbuf() { nsx "$1" ss -Huamn "sport = :$2" | sed -n 's/.*skmem:(.*rb\([0-9]*\),.*/\1/p'; }

@test "socket buffers: wireguard-go's sockets get 7 MiB; --socket-buffer 0 and tune" {
  # wireguard-go 0.0.20220316 leaves them at the kernel default
  # (net.core.rmem_default, reported as it is; a size set with setsockopt
  # is reported doubled); mesh-apply raises them as newer ones do.
  local dflt
  dflt=$(sysctl -n net.core.rmem_default)
  [ "$dflt" -lt $((2 * 7340032)) ] || skip "this kernel's default is already 7 MiB or more"
  apply_a "$D/a.json"
  [ -n "$(rcvbuf a 51820)" ]
  for rb in $(rcvbuf a 51820); do [ "$rb" -ge $((2 * 7340032)) ]; done
  # Not part of the map: a re-apply is still a no-op.
  apply_a "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  # --socket-buffer 0 leaves the daemon's own choice.
  apply_b --socket-buffer 0 "$D/b.json"
  for rb in $(rcvbuf b 51820); do [ "$rb" -eq "$dflt" ]; done
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  # tune: for interfaces other tools configured; reports what it raised.
  mrun -s 0 "${NB[@]}" mesh-apply tune --interface "$IFB" --socket-buffer 1048576
  [ "$(jq -r .sockets <<<"$output")" -ge 1 ]
  [ "$(jq -r .raised <<<"$output")" = "$(jq -r .sockets <<<"$output")" ]
  [ "$(jq -r .changed <<<"$output")" = true ]
  for rb in $(rcvbuf b 51820); do [ "$rb" -eq $((2 * 1048576)) ]; done
  mrun -s 0 "${NB[@]}" mesh-apply tune --interface "$IFB" --socket-buffer 1048576
  [ "$(jq -r .changed <<<"$output")" = false ]
  # The tunnel still works with the new buffers.
  mrun -s 0 "${NB[@]}" ping -c 1 -W 5 100.64.0.1
  # An interface that does not exist, and bad sizes.
  mrun -s 69 "${NA[@]}" mesh-apply tune --interface "$(wg_name nx)"
  [[ "$stderr" == *"mesh-apply: error: no WireGuard interface"* ]]
  mrun -s 64 "${NA[@]}" mesh-apply tune --interface "$IFA" --socket-buffer 0
  mrun -s 64 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" --socket-buffer -1 "$D/a.json"
}
