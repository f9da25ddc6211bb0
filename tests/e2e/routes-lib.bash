# The lab of routes through peers (issue 19), shared by
# tests/e2e/034-apply-routes.bats and bench/routes.bats. Load after helpers:
#   load helpers; load routes-lib
# and call routes_lab in setup:
#
#   c1 (allowed) --+                      +-- r1 (primary router, exit node) --+-- h  198.51.100.10 (LAN)
#   c2 (denied)  --+-- switch u 192.0.2/24 -- r2 (secondary router) ------------+   (switch l 198.51.100/24)
#   g  gateway   --+   (.11 .12 .1 .2 .254)
#   g 198.18.1.1 -- i 198.18.1.10 + 203.0.113.10 -- r1 203.0.113.1   ("internet")
#
# Overlay: r1 100.64.0.1, r2 100.64.0.2, c1 100.64.0.11, c2 100.64.0.12.
# h and i answer TCP on 8080 (h also 9090) with the source address they saw.

# switch_add NS: a namespace with a bridge, the segment's switch.
switch_add() {
  netns_add "$1"
  ip -n "${MESH_RUN}$1" link add br0 type bridge
  ip -n "${MESH_RUN}$1" link set br0 up
}

# plug NS SWITCH ADDR: NS joins the switch's segment with ADDR.
plug() {
  local ns=$1 sw=$2 addr=$3
  local a="${MESH_RUN}${ns:0:3}${sw:0:3}" b="${MESH_RUN}${sw:0:3}${ns:0:3}"
  ip link add "${a:0:15}" netns "${MESH_RUN}$ns" type veth peer name "${b:0:15}" netns "${MESH_RUN}$sw"
  ip -n "${MESH_RUN}$ns" addr add "$addr" dev "${a:0:15}"
  ip -n "${MESH_RUN}$ns" link set "${a:0:15}" up
  ip -n "${MESH_RUN}$sw" link set "${b:0:15}" master br0 up
}

# The underlay device of NS on switch SW.
dev_of() { local d="${MESH_RUN}${1:0:3}${2:0:3}"; echo "${d:0:15}"; }

routes_lab() {
  require_root
  D=$BATS_TEST_TMPDIR
  export MESH_APPLY_STATE_DIR=$D/state
  switch_add u
  switch_add l
  for n in c1 c2 r1 r2 h g i; do netns_add "$n"; done
  plug c1 u 192.0.2.11/24; plug c2 u 192.0.2.12/24
  plug r1 u 192.0.2.1/24;  plug r2 u 192.0.2.2/24
  plug g u 192.0.2.254/24
  plug r1 l 198.51.100.1/24; plug r2 l 198.51.100.2/24; plug h l 198.51.100.10/24
  # The "internet": i is reached from the gateway g and from r1.
  veth_link g 198.18.1.1/24 i 198.18.1.10/24
  veth_link r1 203.0.113.1/24 i 203.0.113.10/24
  nsx g sysctl -qw net.ipv4.ip_forward=1
  ip -n "${MESH_RUN}g" route add 203.0.113.0/24 via 198.18.1.10
  ip -n "${MESH_RUN}i" route add 192.0.2.0/24 via 198.18.1.1
  # The clients' real uplink is the gateway.
  for n in c1 c2; do ip -n "${MESH_RUN}$n" route add default via 192.0.2.254; done
  for n in c1 c2 r1 r2; do
    (umask 077; wg genkey >"$D/$n.key")
    eval "P_$n=\$(wg pubkey <\"\$D/\$n.key\")"
    eval "IF_$n=\$(wg_name \"w$n\")"
  done
  for n in c1 c2 r1 r2; do
    on_teardown "nsx $n mesh-apply down --interface $(wg_name "w$n") --hosts-file none >/dev/null 2>&1"
  done
  # Who answers: h and i tell the caller the source address they saw.
  start_daemon h8080 nsx h socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo \$SOCAT_PEERADDR'
  start_daemon h9090 nsx h socat TCP-LISTEN:9090,reuseaddr,fork SYSTEM:'echo \$SOCAT_PEERADDR'
  start_daemon i80 nsx i socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo \$SOCAT_PEERADDR'
  start_daemon g80 nsx g socat TCP-LISTEN:8080,bind=198.18.1.1,reuseaddr,fork SYSTEM:'echo \$SOCAT_PEERADDR'
}

# peer NAME OVERLAY ENDPOINT [ROUTES_JSON]
peer() {
  local n=$1 k
  k=$(eval echo "\$P_$n")
  jq -cn --arg n "$n" --arg k "$k" --arg a "$2" --arg e "$3" --argjson r "${4:-[]}" \
    '{name:$n, public_key:$k, addresses:[$a], endpoints:[{endpoint:$e, kind:"host"}]}
     + (if $r == [] then {} else {routes:$r} end)'
}

# map NAME OVERLAY PEERS_JSON [SELF_ROUTES_JSON] [FORWARD_JSON]
map() {
  local n=$1 k
  k=$(eval echo "\$P_$n")
  jq -n --arg n "$n" --arg k "$k" --arg a "$2" --argjson peers "$3" \
    --argjson sr "${4:-[]}" --argjson fw "${5:-[]}" \
    '{version:1, serial:1,
      self:({name:$n, public_key:$k, addresses:[$a], listen_port:51820}
            + (if $sr == [] then {} else {routes:$sr} end)),
      peers:$peers,
      firewall:{inbound:[{sources:["100.64.0.0/10"], proto:"icmp"}], forward:$fw}}' >"$D/$n.json"
}

apply() {
  local n=$1; shift
  mrun -s 0 ip netns exec "${MESH_RUN}$n" mesh-apply --interface "$(eval echo "\$IF_$n")" \
    --key "$D/$n.key" --hosts-file none "$@" "$D/$n.json"
}

LAN='198.51.100.0/24'

# Routers r1 (metric 10) and r2 (metric 20) route the LAN; c1 may use it
# for ping and tcp/8080, c2 not at all (its map lists the route anyway:
# the router's firewall is what stops it).
lan_maps() {
  local fwd
  fwd='[{"sources":["100.64.0.11/32"],"destinations":["198.51.100.0/24"],"proto":"icmp","rule":"lan-ping"},
        {"sources":["100.64.0.11/32"],"destinations":["198.51.100.0/24"],"proto":"tcp","ports":[8080],"rule":"lan-web"}]'
  for r in r1 r2; do
    map "$r" "100.64.0.${r#r}/10" \
      "[$(peer c1 100.64.0.11/32 192.0.2.11:51820), $(peer c2 100.64.0.12/32 192.0.2.12:51820)]" \
      '[{"network":"198.51.100.0/24","masquerade":true}]' "$fwd"
  done
  local routes1='[{"network":"198.51.100.0/24","metric":10,"masquerade":true}]'
  local routes2='[{"network":"198.51.100.0/24","metric":20,"masquerade":true}]'
  for c in c1 c2; do
    map "$c" "100.64.0.1${c#c}/10" \
      "[$(peer r1 100.64.0.1/32 192.0.2.1:51820 "$routes1"), $(peer r2 100.64.0.2/32 192.0.2.2:51820 "$routes2")]"
  done
}

via() { mrun -s 0 ip netns exec "${MESH_RUN}$1" socat -T 5 - "TCP:$2,connect-timeout=5" </dev/null; }

