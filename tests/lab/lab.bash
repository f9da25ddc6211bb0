# The NAT lab: an "internet" with a real STUN server, NAT routers made with
# nftables, and peers (optionally running wireguard-go) behind them, all in
# network namespaces that tests/e2e/helpers.bash removes in teardown.
#
# Use from a bats file in tests/e2e:
#   load helpers
#   load ../lab/lab
#   @test "..." {
#     require_root
#     lab_internet                 # namespace "inet" + coturn STUN server
#     lab_nat r1 eim drop          # a home router
#     lab_peer a r1                # a peer behind it
#     lab_wg a 51820 100.64.0.1/10 # wireguard-go on port 51820 in "a"
#     nsx a mesh-punch stun --server "$LAB_STUN1" --server "$LAB_STUN2" --port 51820
#   }
#
# Functions (call them directly, not in $(...): they set global variables):
#   lab_internet [coturn|none]   create namespace "inet" (IPv4 forwarding, the
#                 "internet"); it owns 203.0.113.1 and 203.0.113.2 (on lo).
#                 With coturn (default) it starts coturn's turnserver in
#                 STUN-only mode listening on both addresses, ports 3478 and
#                 3479 (RFC 5780: OTHER-ADDRESS, CHANGE-REQUEST), and waits
#                 until it answers. Sets LAB_STUN1=203.0.113.1:3478,
#                 LAB_STUN2=203.0.113.2:3478. The server's log is
#                 $BATS_TEST_TMPDIR/turnserver.out. IPv6: inet also owns
#                 2001:db8::1 and 2001:db8::2 (coturn listens there too:
#                 LAB_STUN6_1="[2001:db8::1]:3478", LAB_STUN6_2), and every
#                 link to inet carries 2001:db8:0:n::/64 without NAT (routers'
#                 LANs are IPv4 only). IPv6 is skipped when the kernel has none.
#   lab_nat NAME eim|symmetric [drop|open] [PARENT]
#                 a NAT router namespace NAME with a WAN link to inet
#                 (nftables masquerade on the WAN interface):
#                   eim        plain masquerade: the source port is kept when
#                              free, so the mapping is endpoint-independent
#                   symmetric  masquerade fully-random: a new random port per
#                              destination (address-and-port-dependent mapping)
#                 filter:
#                   drop (default)  a home router: input and forward from the
#                              WAN accept only established/related traffic
#                   open       no firewall at all: an unsolicited packet to the
#                              router's own address is accepted locally and
#                              leaves a conntrack entry that can collide with a
#                              later mapping (the case short-TTL opening
#                              packets in mesh-punch(1) handle)
#                 Conntrack NAT filters address-and-port-dependently either way.
#                 Its LAN is a bridge with subnet LAB_LAN[NAME] (the k-th router
#                 gets 198.51.100.32*(k-1)/27 for k <= 8, then 192.0.2.32*(k-9)/27
#                 for k <= 16); the router is .1 of it.
#                 With PARENT (a router made by lab_nat), NAME's WAN link is on
#                 PARENT's LAN instead of a /30 to inet: it is attached like a
#                 lab_peer of PARENT (LAN address, default route via PARENT,
#                 LAB_ROUTER[NAME]=PARENT, no IPv6). That is a home router
#                 behind a carrier-grade NAT (double NAT): LAB_WAN[NAME] is its
#                 address on PARENT's LAN, the public address is LAB_WAN[PARENT].
#                 e.g.  lab_nat cgn eim drop; lab_nat home eim drop cgn
#   lab_peer NAME ROUTER         a host namespace NAME on ROUTER's LAN, address
#                 LAN base + 10 + j for its j-th peer, default route via the router.
#   lab_peer_public NAME         a host namespace NAME directly on the internet.
#   lab_wg NAME PORT [OVERLAY]   start wireguard-go in NAME (interface
#                 LAB_WG[NAME] = $(wg_name NAME), killed in teardown), with a
#                 fresh private key ($BATS_TEST_TMPDIR/NAME.key, public key in
#                 LAB_PUB[NAME]) listening on UDP PORT; OVERLAY (e.g.
#                 100.64.0.1/10) is assigned to the interface and kept in
#                 LAB_OVERLAY[NAME]. LAB_PORT[NAME]=PORT.
#   lab_ns NAME                  print the real namespace name (for commands run
#                 through `mrun`/`timeout`, which cannot call the nsx function:
#                 mrun ip netns exec "$(lab_ns a)" mesh-punch ...).
#   lab_key NAME                 a key for NAME without wireguard-go (sets
#                 $BATS_TEST_TMPDIR/NAME.key and LAB_PUB[NAME]).
#   lab_stun NAME PORT [ARGS...] run `mesh-punch stun` in NAME against both lab
#                 servers on PORT; the endpoints document goes to
#                 $BATS_TEST_TMPDIR/NAME.endpoints.json (status in $status).
#   lab_map SELF PEER...         print a network map (man/mesh-netmap.5) for
#                 SELF listing each PEER with its public key, overlay address
#                 and the candidates of $BATS_TEST_TMPDIR/PEER.endpoints.json
#                 (none when that file is missing), keepalive 25, and an inbound
#                 firewall rule accepting anything from the peers' overlay
#                 addresses; self has LAB_OVERLAY[SELF] and LAB_PORT[SELF].
#   lab_apply SELF [ENDPOINTS_FILE...]  run mesh-apply in SELF on its
#                 wireguard-go interface with $BATS_TEST_TMPDIR/SELF.map.json
#                 and the given endpoints documents (status in $status, like run).
# Addresses and variables (associative arrays indexed by namespace name):
#   LAB_ADDR[NAME]  the address of a router's WAN side, of a peer on its LAN,
#                   or of a public peer (203.0.113.4n+2 for the n-th link to
#                   inet; inet's side of that /30 is 203.0.113.4n+1)
#   LAB_ADDR6[NAME] the IPv6 address of a router's WAN side or a public peer
#                   (2001:db8:0:n::2)
#   LAB_WAN[NAME]   a router's WAN address (same as LAB_ADDR for routers): its
#                   public address, or for a router behind PARENT its address
#                   on PARENT's LAN
#   LAB_LAN[NAME]   a router's LAN prefix; LAB_ROUTER[PEER] the peer's router
#                   (also set for a router behind a PARENT router)
# Only test ranges are used (DEVELOPERS.md); everything is removed by
# mesh_teardown (namespaces, and so interfaces and nftables tables; daemons).

declare -gA LAB_ADDR LAB_ADDR6 LAB_WAN LAB_LAN LAB_ROUTER LAB_PUB LAB_WG LAB_OVERLAY LAB_PORT LAB_NPEERS
_lab_links=0
_lab_routers=0
_lab_v6=

# _lab_uplink NAME: a /30 link from inet to NAME; sets LAB_ADDR[NAME].
_lab_uplink() {
  local name=$1
  _lab_links=$((_lab_links + 1))
  local n=$_lab_links base=$((4 * _lab_links))
  [ "$n" -le 62 ] || { echo "lab: too many links" >&2; return 1; }
  local a="${MESH_RUN}u${n}i" b="${MESH_RUN}u${n}x"
  ip link add "$a" netns "${MESH_RUN}inet" type veth peer name "$b" netns "${MESH_RUN}$name"
  ip -n "${MESH_RUN}inet" addr add "203.0.113.$((base + 1))/30" dev "$a"
  ip -n "${MESH_RUN}$name" addr add "203.0.113.$((base + 2))/30" dev "$b"
  ip -n "${MESH_RUN}inet" link set "$a" up
  ip -n "${MESH_RUN}$name" link set "$b" up
  ip -n "${MESH_RUN}$name" route add default via "203.0.113.$((base + 1))"
  LAB_ADDR[$name]="203.0.113.$((base + 2))"
  # IPv6 (documentation prefix, no NAT): 2001:db8:0:n::1 inet, ::2 the node.
  # Best effort: a kernel without IPv6 leaves LAB_ADDR6[NAME] empty.
  if [ -n "$_lab_v6" ] &&
    ip -n "${MESH_RUN}inet" -6 addr add "2001:db8:0:$n::1/64" dev "$a" nodad 2>/dev/null &&
    ip -n "${MESH_RUN}$name" -6 addr add "2001:db8:0:$n::2/64" dev "$b" nodad 2>/dev/null &&
    ip -n "${MESH_RUN}$name" -6 route add default via "2001:db8:0:$n::1" 2>/dev/null; then
    LAB_ADDR6[$name]="2001:db8:0:$n::2"
  fi
  _lab_ifname="$b"
}

lab_internet() {
  local stun=${1:-coturn}
  _lab_links=0 _lab_routers=0
  netns_add inet
  nsx inet sysctl -qw net.ipv4.ip_forward=1
  ip -n "${MESH_RUN}inet" addr add 203.0.113.1/32 dev lo
  ip -n "${MESH_RUN}inet" addr add 203.0.113.2/32 dev lo
  _lab_v6=
  if ip -n "${MESH_RUN}inet" -6 addr add 2001:db8::1/128 dev lo nodad 2>/dev/null &&
    ip -n "${MESH_RUN}inet" -6 addr add 2001:db8::2/128 dev lo nodad 2>/dev/null &&
    nsx inet sysctl -qw net.ipv6.conf.all.forwarding=1 2>/dev/null; then
    _lab_v6=1
  fi
  LAB_STUN1=203.0.113.1:3478
  LAB_STUN2=203.0.113.2:3478
  LAB_STUN6_1="[2001:db8::1]:3478"
  LAB_STUN6_2="[2001:db8::2]:3478"
  export LAB_STUN1 LAB_STUN2 LAB_STUN6_1 LAB_STUN6_2
  [ "$stun" = none ] && return 0
  # -n: never read the system configuration; STUN only, no TLS/DTLS, no CLI.
  local v6=()
  [ -n "$_lab_v6" ] && v6=(-L 2001:db8::1 -L 2001:db8::2)
  start_daemon turnserver nsx inet turnserver -n --no-cli --stun-only \
    -L 203.0.113.1 -L 203.0.113.2 "${v6[@]}" -p 3478 --alt-listening-port 3479 \
    --no-tls --no-dtls --log-file stdout --simple-log \
    --pidfile "$BATS_TEST_TMPDIR/turnserver.pid" --db "$BATS_TEST_TMPDIR/turndb"
  wait_until 15 _lab_stun_listening
}

_lab_stun_listening() {
  local s
  s=$(nsx inet ss -Hunl 2>/dev/null)
  grep -q '203.0.113.1:3478' <<<"$s" && grep -q '203.0.113.2:3479' <<<"$s"
}

lab_nat() {
  local name=$1 type=$2 filter=${3:-drop} parent=${4:-}
  case "$type" in eim|symmetric) ;; *) echo "lab_nat: type must be eim or symmetric" >&2; return 1 ;; esac
  case "$filter" in drop|open) ;; *) echo "lab_nat: filter must be drop or open" >&2; return 1 ;; esac
  if [ -n "$parent" ] && [ -z "${LAB_LAN[$parent]:-}" ]; then
    echo "lab_nat: unknown parent router $parent" >&2; return 1
  fi
  netns_add "$name"
  nsx "$name" sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$parent" ]; then
    _lab_lanlink "$name" "$parent"
  else
    _lab_uplink "$name"
  fi
  local wan=$_lab_ifname
  LAB_WAN[$name]=${LAB_ADDR[$name]}
  _lab_routers=$((_lab_routers + 1))
  local k=$_lab_routers lan
  if [ "$k" -le 8 ]; then lan="198.51.100.$((32 * (k - 1)))"
  elif [ "$k" -le 16 ]; then lan="192.0.2.$((32 * (k - 9)))"
  else echo "lab_nat: at most 16 routers" >&2; return 1; fi
  LAB_LAN[$name]="$lan/27"
  LAB_NPEERS[$name]=0
  ip -n "${MESH_RUN}$name" link add lan0 type bridge
  ip -n "${MESH_RUN}$name" addr add "${lan%.*}.$(( ${lan##*.} + 1 ))/27" dev lan0
  ip -n "${MESH_RUN}$name" link set lan0 up
  local masq="masquerade"
  [ "$type" = symmetric ] && masq="masquerade fully-random"
  local rules="table ip lab {
  chain postrouting { type nat hook postrouting priority srcnat; oifname \"$wan\" $masq; }"
  if [ "$filter" = drop ]; then
    rules+="
  chain input { type filter hook input priority filter; policy drop;
    ct state established,related accept; iifname != \"$wan\" accept; }
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept; iifname != \"$wan\" accept; }"
  fi
  rules+="
}"
  nsx "$name" nft -f - <<<"$rules"
}

lab_peer() {
  local name=$1 router=$2
  [ -n "${LAB_LAN[$router]:-}" ] || { echo "lab_peer: unknown router $router" >&2; return 1; }
  netns_add "$name"
  _lab_lanlink "$name" "$router"
}

# _lab_lanlink NAME ROUTER: attach the existing namespace NAME to ROUTER's LAN
# (the next peer address, default route via the router); sets LAB_ADDR[NAME],
# LAB_ROUTER[NAME] and _lab_ifname (NAME's side of the link).
_lab_lanlink() {
  local name=$1 router=$2
  local j=$(( ${LAB_NPEERS[$router]} + 1 ))
  LAB_NPEERS[$router]=$j
  local lan=${LAB_LAN[$router]%/*}
  local pre=${lan%.*} base=${lan##*.}
  local addr="$pre.$((base + 10 + j))" gw="$pre.$((base + 1))"
  local a="${MESH_RUN}${name:0:4}r" b="${MESH_RUN}${name:0:4}p"
  ip link add "${a:0:15}" netns "${MESH_RUN}$router" type veth peer name "${b:0:15}" netns "${MESH_RUN}$name"
  ip -n "${MESH_RUN}$router" link set "${a:0:15}" master lan0 up
  ip -n "${MESH_RUN}$name" addr add "$addr/27" dev "${b:0:15}"
  ip -n "${MESH_RUN}$name" link set "${b:0:15}" up
  ip -n "${MESH_RUN}$name" route add default via "$gw"
  LAB_ADDR[$name]=$addr
  LAB_ROUTER[$name]=$router
  _lab_ifname=${b:0:15}
}

lab_peer_public() {
  local name=$1
  netns_add "$name"
  _lab_uplink "$name"
}

lab_ns() { echo "${MESH_RUN}$1"; }

lab_key() {
  local name=$1
  mesh-keygen genkey -f -o "$BATS_TEST_TMPDIR/$name.key"
  LAB_PUB[$name]=$(mesh-keygen pubkey <"$BATS_TEST_TMPDIR/$name.key")
}

lab_wg() {
  local name=$1 port=$2 overlay=${3:-}
  local ifc
  ifc=$(wg_name "$name")
  lab_key "$name"
  start_daemon "wg-$name" nsx "$name" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifc"
  wait_until 10 test -S "/var/run/wireguard/$ifc.sock"
  nsx "$name" wg set "$ifc" private-key "$BATS_TEST_TMPDIR/$name.key" listen-port "$port"
  [ -n "$overlay" ] && ip -n "${MESH_RUN}$name" addr add "$overlay" dev "$ifc"
  ip -n "${MESH_RUN}$name" link set "$ifc" up
  # The socket buffers mesh-apply gives the daemons it manages (mesh-apply(8),
  # "Socket buffers"); LAB_WG_TUNE=0 leaves the kernel default.
  [ "${LAB_WG_TUNE:-1}" = 0 ] || nsx "$name" mesh-apply tune --interface "$ifc" >/dev/null
  LAB_WG[$name]=$ifc
  LAB_OVERLAY[$name]=$overlay
  LAB_PORT[$name]=$port
}

lab_stun() {
  local name=$1 port=$2; shift 2
  run --separate-stderr timeout 30 ip netns exec "${MESH_RUN}$name" \
    mesh-punch stun --server "$LAB_STUN1" --server "$LAB_STUN2" --port "$port" --json "$@"
  printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/$name.endpoints.json"
}

lab_map() {
  local self=$1; shift
  local peers='[]' p cands overlay
  for p in "$@"; do
    cands='[]'
    [ -s "$BATS_TEST_TMPDIR/$p.endpoints.json" ] &&
      cands=$(jq -c '.candidates // []' "$BATS_TEST_TMPDIR/$p.endpoints.json")
    overlay=${LAB_OVERLAY[$p]:-}
    peers=$(jq -c --arg k "${LAB_PUB[$p]}" --arg n "$p" --arg a "${overlay%/*}" \
      --argjson c "$cands" \
      '. + [{name: $n, public_key: $k,
             addresses: (if $a == "" then [] else [$a + "/32"] end),
             allowed_ips: (if $a == "" then [] else [$a + "/32"] end),
             endpoints: $c, keepalive: 25}]' <<<"$peers")
  done
  local fw
  fw=$(jq -c '[.[] | .addresses[]] | if length == 0 then [] else
             [{sources: ., proto: "any", rule: "lab"}] end' <<<"$peers")
  jq -n --arg k "${LAB_PUB[$self]}" --arg n "$self" --arg a "${LAB_OVERLAY[$self]:-}" \
    --argjson peers "$peers" --argjson port "${LAB_PORT[$self]:-0}" --argjson fw "$fw" \
    '{version: 1, serial: 1,
      self: ({name: $n, public_key: $k, addresses: (if $a == "" then [] else [$a] end)}
             + (if $port > 0 then {listen_port: $port} else {} end)),
      peers: $peers, firewall: {inbound: $fw}}'
}

lab_apply() {
  local self=$1; shift
  local args=() f
  for f in "$@"; do args+=(--endpoints "$f"); done
  run --separate-stderr timeout 30 ip netns exec "${MESH_RUN}$self" mesh-apply \
    --interface "${LAB_WG[$self]}" --key "$BATS_TEST_TMPDIR/$self.key" "${args[@]}" \
    "$BATS_TEST_TMPDIR/$self.map.json"
  [ "$status" -eq 0 ] || printf 'lab_apply %s: status %s\n%s\n' "$self" "$status" "$stderr" >&2
}
