# Shared setup for the mesh-apply e2e tests (030-049). Load after helpers:
#   load helpers; load apply-lib
# apply_pair creates namespaces a and b joined by a veth (underlay
# 198.51.100.1/.2), a key pair for each side and unique interface names
# $IFA/$IFB; write_map writes a network map with jq.

apply_pair() {
  require_root
  netns_add a
  netns_add b
  veth_link a 198.51.100.1/24 b 198.51.100.2/24
  IFA=$(wg_name wa); IFB=$(wg_name wb)
  # For mrun (timeout cannot run shell functions such as nsx).
  NA=(ip netns exec "${MESH_RUN}a"); NB=(ip netns exec "${MESH_RUN}b")
  D=$BATS_TEST_TMPDIR
  (umask 077; wg genkey >"$D/a.key"; wg genkey >"$D/b.key"; wg genkey >"$D/c.key")
  PA=$(wg pubkey <"$D/a.key"); PB=$(wg pubkey <"$D/b.key"); PC=$(wg pubkey <"$D/c.key")
  # Interfaces live in the namespaces; make sure their daemons and tables go.
  on_teardown "nsx a mesh-apply down --interface $IFA >/dev/null 2>&1"
  on_teardown "nsx b mesh-apply down --interface $IFB >/dev/null 2>&1"
}

# peer_json NAME PUBKEY ADDR ENDPOINT [EXTRA_ALLOWED_IPS_JSON]
peer_json() {
  jq -cn --arg n "$1" --arg k "$2" --arg a "$3" --arg e "$4" --argjson x "${5:-[]}" \
    '{name:$n, public_key:$k, addresses:[$a], allowed_ips:$x,
      endpoints:(if $e == "" then [] else [{endpoint:$e, kind:"host"}] end)}'
}

# write_map FILE SELF_PUB SELF_ADDR PORT PEERS_JSON_ARRAY INBOUND_JSON_ARRAY
write_map() {
  jq -n --arg k "$2" --arg a "$3" --argjson port "$4" --argjson peers "$5" --argjson inb "$6" \
    '{version:1, serial:1, self:{name:"self", public_key:$k, addresses:[$a], listen_port:$port},
      peers:$peers, firewall:{inbound:$inb}}' >"$1"
}

# The standard pair: A allows tcp/8080 and icmp from B; B allows anything from A.
standard_maps() {
  write_map "$D/a.json" "$PA" 100.64.0.1/10 51820 \
    "[$(peer_json b "$PB" 100.64.0.2/32 198.51.100.2:51820)]" \
    '[{"sources":["100.64.0.2/32"],"proto":"tcp","ports":[8080]},
      {"sources":["100.64.0.0/10"],"proto":"icmp"}]'
  write_map "$D/b.json" "$PB" 100.64.0.2/10 51820 \
    "[$(peer_json a "$PA" 100.64.0.1/32 198.51.100.1:51820)]" \
    '[{"sources":["100.64.0.1/32"],"proto":"any"}]'
}

apply_a() { mrun -s 0 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$@"; }
apply_b() { mrun -s 0 "${NB[@]}" mesh-apply --interface "$IFB" --key "$D/b.key" "$@"; }

# A snapshot of everything mesh-apply manages for IF in namespace NS.
snapshot() {
  local ns=$1 ifn=$2
  {
    nsx "$ns" wg showconf "$ifn" 2>&1
    ip -n "${MESH_RUN}$ns" -o addr show dev "$ifn" 2>&1 | awk '{print $3, $4}'
    ip -n "${MESH_RUN}$ns" route show dev "$ifn" 2>&1
    ip -n "${MESH_RUN}$ns" -o link show dev "$ifn" 2>&1 | sed 's/qlen.*//'
    nsx "$ns" nft list table inet "mesh_$ifn" 2>&1
  } || true
}
