#!/usr/bin/env bats
# Routes through peers and exit nodes (issue 19) with real wireguard-go,
# nftables and policy routing in namespaces, from hand-written maps in the
# shared format (man/mesh-netmap.5). The lab (two clients, two routers in
# front of a LAN, a gateway and an "internet" host) is routes-lib.bash's.

bats_require_minimum_version 1.5.0
load helpers
load routes-lib

setup() { routes_lab; }

@test "a routing peer forwards what its firewall allows into its LAN, masquerading; down restores forwarding" {
  lan_maps
  [ "$(nsx r1 sysctl -n net.ipv4.ip_forward)" = 0 ]
  apply r1
  [ "$(jq -r '.forwarding.enabled[0]' <<<"$output")" = net.ipv4.ip_forward ]
  [ "$(nsx r1 sysctl -n net.ipv4.ip_forward)" = 1 ]
  apply r2
  apply c1
  [ "$(jq -r '.routes.via[0].peer' <<<"$output")" = r1 ]
  [ "$(jq -r '.routes.added[0]' <<<"$output")" = "$LAN" ]
  apply c2
  # c1's kernel routes the LAN into the mesh; WireGuard sends it to r1.
  ip -n "${MESH_RUN}c1" route show "$LAN" | grep -q "dev $IF_c1"
  nsx c1 wg show "$IF_c1" allowed-ips | grep "^$P_r1" | grep -q "$LAN"
  ! nsx c1 wg show "$IF_c1" allowed-ips | grep "^$P_r2" | grep -q "$LAN" || false
  # Routers get a short keepalive from their route clients (HA liveness).
  [ "$(nsx c1 wg show "$IF_c1" persistent-keepalive | awk -v k="$P_r1" '$1 == k {print $2}')" = 1 ]
  [ "$(nsx r1 wg show "$IF_r1" persistent-keepalive | awk -v k="$P_c1" '$1 == k {print $2}')" = 1 ]

  # The allowed node: ping and tcp/8080 through r1, seen as r1 (masquerade).
  mrun -s 0 ip netns exec "${MESH_RUN}c1" ping -c 1 -W 5 198.51.100.10
  via c1 198.51.100.10:8080
  [ "$output" = 198.51.100.1 ]
  # Not tcp/9090: the forward rules name 8080 only (and the drop is counted).
  mrun ip netns exec "${MESH_RUN}c1" socat -T 3 - TCP:198.51.100.10:9090,connect-timeout=3 </dev/null
  [ "$status" -ne 0 ]
  # The node the policy does not allow gets nothing through, though its
  # map routes the LAN to r1 and its tunnel to r1 works.
  mrun -s 0 ip netns exec "${MESH_RUN}c2" ping -c 1 -W 5 100.64.0.1
  mrun ip netns exec "${MESH_RUN}c2" ping -c 1 -W 3 198.51.100.10
  [ "$status" -ne 0 ]
  mrun ip netns exec "${MESH_RUN}c2" socat -T 3 - TCP:198.51.100.10:8080,connect-timeout=3 </dev/null
  [ "$status" -ne 0 ]
  nsx r1 nft list chain inet "mesh_$IF_r1" mesh_fwd | grep -Eq 'counter packets [1-9][0-9]* .* drop'
  # The same maps again: nothing to do.
  apply r1
  [ "$(jq -r .changed <<<"$output")" = false ]
  apply c1
  [ "$(jq -r .changed <<<"$output")" = false ]

  # No longer a router: forwarding goes back to what it was.
  jq 'del(.self.routes) | .firewall.forward = []' "$D/r1.json" >"$D/r1.tmp" && mv "$D/r1.tmp" "$D/r1.json"
  apply r1
  [ "$(jq -r '.forwarding.restored[0]' <<<"$output")" = net.ipv4.ip_forward ]
  [ "$(nsx r1 sysctl -n net.ipv4.ip_forward)" = 0 ]
  # And `down` of r2 puts its forwarding back too.
  [ "$(nsx r2 sysctl -n net.ipv4.ip_forward)" = 1 ]
  mrun -s 0 ip netns exec "${MESH_RUN}r2" mesh-apply down --interface "$IF_r2" --hosts-file none
  [ "$(jq -r '.sysctls_restored[0]' <<<"$output")" = net.ipv4.ip_forward ]
  [ "$(nsx r2 sysctl -n net.ipv4.ip_forward)" = 0 ]
}

@test "HA: killing the primary router moves the LAN to the secondary, and back when it returns" {
  lan_maps
  apply r1; apply r2; apply c1
  via c1 198.51.100.10:8080
  [ "$output" = 198.51.100.1 ]
  start_daemon watch nsx c1 mesh-apply routes --watch --interface "$IF_c1" --interval 250
  mrun -s 0 ip netns exec "${MESH_RUN}c1" mesh-apply routes --interface "$IF_c1"
  [ "$(jq -r '.networks[0].via' <<<"$output")" = r1 ]
  [ "$(jq -r '.networks[0].routers | map(.name) | join(",")' <<<"$output")" = r1,r2 ]
  # A healthy primary: no move at all for a while.
  sleep 4
  [ ! -s "$D/watch.out" ]
  # The primary's uplink dies.
  ip -n "${MESH_RUN}r1" link set "$(dev_of r1 u)" down
  wait_for_line "$D/watch.out" '"event":"failover"' 15
  [ "$(jq -r 'select(.event == "failover") | .to' "$D/watch.out")" = r2 ]
  via c1 198.51.100.10:8080
  [ "$output" = 198.51.100.2 ]
  nsx c1 wg show "$IF_c1" allowed-ips | grep "^$P_r2" | grep -q "$LAN"
  # A new map meanwhile keeps the watcher's choice (no flap back to r1).
  apply c1
  [ "$(jq -r '.routes.via[0].peer' <<<"$output")" = r2 ]
  # The primary returns: after the hold-down the LAN goes back to it.
  ip -n "${MESH_RUN}r1" link set "$(dev_of r1 u)" up
  wait_for_line "$D/watch.out" '"event":"failback"' 30
  [ "$(jq -r 'select(.event == "failback") | .to' "$D/watch.out")" = r1 ]
  via c1 198.51.100.10:8080
  [ "$output" = 198.51.100.1 ]
  [ "$(grep -c . "$D/watch.out")" = 2 ]
}

# Snapshot of the routing state an exit node changes, in NS.
routing_state() {
  {
    ip -n "${MESH_RUN}$1" rule show
    ip -n "${MESH_RUN}$1" -6 rule show
    ip -n "${MESH_RUN}$1" route show table all
    ip -n "${MESH_RUN}$1" -6 route show table all
    nsx "$1" sysctl -n net.ipv4.conf.all.src_valid_mark
  } 2>&1
}

@test "exit node: all traffic leaves through it, the tunnel and the coordinator keep the uplink; off restores routing exactly" {
  # r1 is an exit node (IPv4 only) for c1.
  map r1 100.64.0.1/10 "[$(peer c1 100.64.0.11/32 192.0.2.11:51820)]" \
    '[{"network":"0.0.0.0/0","masquerade":true}]' \
    '[{"sources":["100.64.0.11/32"],"destinations":["0.0.0.0/0"],"proto":"any","rule":"exit"}]'
  map c1 100.64.0.11/10 \
    "[$(peer r1 100.64.0.1/32 192.0.2.1:51820 '[{"network":"0.0.0.0/0","metric":0,"masquerade":true}]')]"
  apply r1
  apply c1
  # Without --exit-node the default route is not used: i sees c1 itself.
  [ "$(jq -r '.exit_node.peer' <<<"$output")" = null ]
  via c1 203.0.113.10:8080
  [ "$output" = 192.0.2.11 ]
  before=$(routing_state c1)

  apply c1 --exit-node r1 --exit-node-bypass 198.18.1.1
  [ "$(jq -r '.exit_node.peer' <<<"$output")" = r1 ]
  [ "$(jq -r '.exit_node.changed' <<<"$output")" = true ]
  [ "$(nsx c1 wg show "$IF_c1" fwmark)" = 0xca6c ]
  # The internet host sees the exit node's address.
  via c1 203.0.113.10:8080
  [ "$output" = 203.0.113.1 ]
  # The tunnel itself still works (its UDP is marked, so it keeps the uplink).
  mrun -s 0 ip netns exec "${MESH_RUN}c1" ping -c 1 -W 5 100.64.0.1
  # The coordinator (bypass) is reached over the real uplink, not the exit.
  via c1 198.18.1.1:8080
  [ "$output" = 192.0.2.11 ]
  # The LAN stays local; the exit node offers no IPv6, so IPv6 is blackholed.
  ip -n "${MESH_RUN}c1" route get 192.0.2.12 | grep -q "dev $(dev_of c1 u)"
  ip -n "${MESH_RUN}c1" -6 route show table 51820 | grep -q '^blackhole default'
  ip -n "${MESH_RUN}c1" -6 rule show | grep -q 'not from all fwmark 0xca6c lookup 51820'
  [ "$(nsx c1 sysctl -n net.ipv4.conf.all.src_valid_mark)" = 1 ]
  # Idempotent.
  apply c1 --exit-node r1 --exit-node-bypass 198.18.1.1
  [ "$(jq -r .changed <<<"$output")" = false ]

  # --exit-node-block-lan: the local segment goes through the exit too.
  apply c1 --exit-node r1 --exit-node-bypass 198.18.1.1 --exit-node-block-lan
  ! ip -n "${MESH_RUN}c1" rule show | grep -q suppress_prefixlength || false
  ip -n "${MESH_RUN}c1" route get 192.0.2.12 | grep -q "dev $IF_c1"

  # Off: exactly the routing there was before.
  apply c1 --exit-node none
  [ "$(jq -r '.exit_node.changed' <<<"$output")" = true ]
  [ "$(routing_state c1)" = "$before" ]
  [ "$(nsx c1 wg show "$IF_c1" fwmark)" = off ]
  via c1 203.0.113.10:8080
  [ "$output" = 192.0.2.11 ]
}

@test "bad route input is refused before anything is touched" {
  lan_maps
  jq '.peers[0].routes[0].network = "100.64.9.0/24"' "$D/c1.json" >"$D/bad.json"
  mrun -s "$EX_DATAERR" ip netns exec "${MESH_RUN}c1" mesh-apply --interface "$IF_c1" --key "$D/c1.key" \
    --hosts-file none "$D/bad.json"
  [[ "$stderr" == *"overlaps the overlay"* ]]
  ! ip -n "${MESH_RUN}c1" link show "$IF_c1" 2>/dev/null || false
  # An exit node that is not one.
  mrun -s "$EX_DATAERR" ip netns exec "${MESH_RUN}c1" mesh-apply --interface "$IF_c1" --key "$D/c1.key" \
    --hosts-file none --exit-node r1 "$D/c1.json"
  [[ "$stderr" == *"offers no default route"* ]]
  ! ip -n "${MESH_RUN}c1" link show "$IF_c1" 2>/dev/null || false
  mrun -s "$EX_USAGE" mesh-apply --interface x --key "$D/c1.key" --exit-node-block-lan "$D/c1.json"
}
