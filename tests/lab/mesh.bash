# The demo mesh: the five programs composed by mesh-up(8) in the NAT lab.
# Shared by scripts/demo (the README's main job) and tests/e2e/090-mesh.bats.
# Needs tests/e2e/helpers.bash and tests/lab/lab.bash loaded first, and
# $BATS_TEST_TMPDIR set (a scratch directory).
#
#   mesh_lab_start       the internet with mesh-relay (TURN+STUN, RFC 5780 with
#                        two addresses) and mesh-coord on 203.0.113.1, a setup
#                        key and the demo policy; then the 8 nodes (router):
#                          pub   no NAT (directly on the internet)
#                          eim   behind an endpoint-independent NAT that drops
#                                unsolicited inbound (home router; r1)
#                          open  behind an endpoint-independent NAT without a
#                                firewall (ro)
#                          sym   behind a symmetric NAT (random port per
#                                destination; r2)
#                          sym2  behind a second symmetric NAT (rs)
#                          dbl   behind two NATs: an eim home router (rh) behind
#                                an eim carrier-grade NAT (rc)
#                          lan1, lan2  both behind one endpoint-independent NAT (r3)
#                        Which pairs end direct: every pair without a symmetric
#                        NAT (lan1-lan2 on their LAN addresses, dbl through both
#                        NATs' mappings), and sym-pub, sym2-pub (pub answers
#                        whatever port the symmetric NAT picked). A symmetric
#                        NAT facing any filtering NAT (eim, open, dbl, lan*:
#                        conntrack filters by address and port even without a
#                        firewall) or another symmetric NAT (sym-sym2) cannot
#                        be punched and goes through the relay: 17 of the 28
#                        pairs direct, 11 relayed (mesh_lab_expected).
#   mesh_lab_core       only the internet, relay, coordinator, setup key and policy
#                        (extra mesh-coord serve flags from $MESH_LAB_COORD_ARGS)
#   mesh_lab_up NAME     start mesh-up for node NAME (state in $MESH_NODES/NAME);
#                        extra mesh-up arguments from $MESH_LAB_UP_ARGS (split
#                        on white space), and --punch-interval
#                        $MESH_LAB_PUNCH_INTERVAL only when that is set
#   mesh_lab_expected A B  "direct" or "relayed": what the pair should end as,
#                        from MESH_LAB_KIND (pub, eim or sym) of A and B
#   mesh_lab_wait_all SECONDS   wait until every pair of running nodes pings
#   mesh_lab_ip NAME     NAME's overlay IPv4 address
#   mesh_lab_pubkey NAME NAME's public key
#   mesh_lab_path A B    "direct" or "relayed": how A's WireGuard reaches B
#                        (relayed: via A's relay client or B's allocation)
#   mesh_lab_path_of EP  the same for a WireGuard endpoint EP
#   mesh_lab_rtt A B     median RTT in ms of 5 pings from A to B over the mesh
#   mesh_lab_ping A B    one ping (1 s timeout) from A to B over the mesh
#   mesh_lab_table       the pair table (pair, path, endpoint, RTT) on stdout
# Variables: COORD_URL, MESH_ADMIN_TOKEN (exported), MESH_NODES,
# MESH_LAB_NODES (the node names, in order), MESH_LAB_KIND[NAME] (the kind of
# NAT in front of NAME: pub none, eim endpoint-independent mapping (however
# many, whatever filter), sym symmetric).

MESH_LAB_NODES=(pub eim open sym sym2 dbl lan1 lan2)
declare -gA MESH_LAB_KIND=([pub]=pub [eim]=eim [open]=eim [sym]=sym [sym2]=sym [dbl]=eim
  [lan1]=eim [lan2]=eim)
MESH_LAB_POLICY_PORT_OK=8080
MESH_LAB_POLICY_PORT_DENIED=2323
MESH_LAB_RELAY_IP=203.0.113.1   # mesh-relay's relayed addresses

mesh_lab_start() {
  mesh_lab_core
  lab_peer_public pub
  lab_nat r1 eim drop
  lab_peer eim r1
  lab_nat r2 symmetric drop
  lab_peer sym r2
  lab_nat r3 eim drop
  lab_peer lan1 r3
  lab_peer lan2 r3
  lab_nat ro eim open
  lab_peer open ro
  lab_nat rs symmetric drop
  lab_peer sym2 rs
  lab_nat rc eim drop           # the carrier's NAT
  lab_nat rh eim drop rc        # the home router behind it
  lab_peer dbl rh
}

# Direct unless a symmetric NAT faces anything but a public node.
mesh_lab_expected() {
  local ka=${MESH_LAB_KIND[$1]:-} kb=${MESH_LAB_KIND[$2]:-}
  if { [ "$ka" = sym ] && [ "$kb" != pub ]; } || { [ "$kb" = sym ] && [ "$ka" != pub ]; }; then
    echo relayed
  else
    echo direct
  fi
}

# The internet with mesh-relay and mesh-coord, the setup key and the policy.
mesh_lab_core() {
  MESH_NODES=$BATS_TEST_TMPDIR/nodes
  mkdir -p "$MESH_NODES"
  lab_internet none
  mesh-keygen token -o "$BATS_TEST_TMPDIR/relay.secret" --force
  local coord_args=()
  read -ra coord_args <<<"${MESH_LAB_COORD_ARGS:-}" || true  # extra serve flags
  start_daemon coord nsx inet mesh-coord serve --listen 203.0.113.1:0 \
    --state "$BATS_TEST_TMPDIR/coord" --relay-secret-file "$BATS_TEST_TMPDIR/relay.secret" \
    --stun 203.0.113.1:3478 --stun 203.0.113.2:3479 --turn 203.0.113.1:3478 "${coord_args[@]}"
  wait_for_line "$BATS_TEST_TMPDIR/coord.out" '^listening on http://' 15
  COORD_URL=$(sed -n 's/^listening on //p' "$BATS_TEST_TMPDIR/coord.out")
  # The relay follows the coordinator's revocations: a deleted node's cached
  # credentials stop working within seconds.
  start_daemon relay nsx inet mesh-relay serve --listen 203.0.113.1:3478 \
    --alt-listen 203.0.113.2:3479 --relay-ip "$MESH_LAB_RELAY_IP" \
    --auth-secret-file "$BATS_TEST_TMPDIR/relay.secret" --allow-peer 203.0.113.0/24 \
    --revocations "$COORD_URL"
  wait_for_line "$BATS_TEST_TMPDIR/relay.out" '^listening udp 203.0.113.1:3478' 15
  MESH_ADMIN_TOKEN=$(cat "$BATS_TEST_TMPDIR/coord/admin.token")
  export COORD_URL MESH_ADMIN_TOKEN

  # The admin talks to the coordinator from inside the internet namespace.
  nsx inet mesh-coord setup-key create --server "$COORD_URL" --name demo --reusable \
    --group nodes -o "$BATS_TEST_TMPDIR/demo.sk" >/dev/null
  cat > "$BATS_TEST_TMPDIR/policy.json" <<POLICY
{
  "groups": {"nodes": {}},
  "rules": [
    {"name": "ping", "src": ["nodes"], "dst": ["nodes"], "proto": "icmp"},
    {"name": "web", "src": ["nodes"], "dst": ["nodes"], "proto": "tcp", "ports": [$MESH_LAB_POLICY_PORT_OK]}
  ],
  "tests": [
    {"from": "group:nodes", "to": "group:nodes", "port": "$MESH_LAB_POLICY_PORT_OK/tcp", "expect": "allow"},
    {"from": "group:nodes", "to": "group:nodes", "port": "$MESH_LAB_POLICY_PORT_DENIED/tcp", "expect": "deny"}
  ]
}
POLICY
  nsx inet mesh-coord policy set --server "$COORD_URL" "$BATS_TEST_TMPDIR/policy.json" >/dev/null
}

mesh_lab_up() {
  local name=$1 args=()
  # Split on white space, no globbing.
  read -ra args <<<"${MESH_LAB_UP_ARGS:-}" || true
  [ -z "${MESH_LAB_PUNCH_INTERVAL:-}" ] || args+=(--punch-interval "$MESH_LAB_PUNCH_INTERVAL")
  start_daemon "up-$name" nsx "$name" mesh-up --server "$COORD_URL" \
    --setup-key-file "$BATS_TEST_TMPDIR/demo.sk" --interface "$(wg_name "$name")" \
    --state "$MESH_NODES/$name" --name "$name" "${args[@]}" -v
}

mesh_lab_ip() { jq -r '.addresses[0] | split("/")[0]' "$MESH_NODES/$1/registration.json"; }
mesh_lab_pubkey() { mesh-keygen pubkey < "$MESH_NODES/$1/node.key"; }

mesh_lab_ping() { nsx "$1" ping -n -c 1 -W 1 "$(mesh_lab_ip "$2")" >/dev/null 2>&1; }

mesh_lab_enrolled() { [ -s "$MESH_NODES/$1/registration.json" ]; }

mesh_lab_all_ping() {
  local a b
  for a in "$@"; do
    for b in "$@"; do
      [ "$a" = "$b" ] && continue
      mesh_lab_ping "$a" "$b" || return 1
    done
  done
}

mesh_lab_wait_all() {
  local secs=$1; shift
  local n
  for n in "$@"; do wait_until 20 mesh_lab_enrolled "$n" || return 1; done
  wait_until "$secs" mesh_lab_all_ping "$@"
}

mesh_lab_endpoint() {
  local a=$1 b=$2
  nsx "$a" wg show "$(wg_name "$a")" endpoints | awk -v k="$(mesh_lab_pubkey "$b")" '$1 == k {print $2}'
}

# Relayed: through our own relay client (a loopback port) or straight to the
# peer's allocation on the relay.
mesh_lab_path_of() {
  case "$1" in
    127.*|"$MESH_LAB_RELAY_IP":*) echo relayed ;;
    ""|"(none)") echo none ;;
    *) echo direct ;;
  esac
}

mesh_lab_path() { mesh_lab_path_of "$(mesh_lab_endpoint "$1" "$2")"; }

mesh_lab_rtt() {
  nsx "$1" ping -n -q -c 5 -i 0.05 -W 1 "$(mesh_lab_ip "$2")" 2>/dev/null |
    awk -F'/' '/^rtt|^round-trip/ {printf "%.2f", $5}'
}

mesh_lab_table() {
  local a b i j nodes=("$@")
  printf '%-12s %-8s %-24s %s\n' PAIR PATH "ENDPOINT (as seen by A)" "RTT ms"
  for (( i=0; i<${#nodes[@]}; i++ )); do
    for (( j=i+1; j<${#nodes[@]}; j++ )); do
      a=${nodes[i]} b=${nodes[j]}
      printf '%-12s %-8s %-24s %s\n' "$a-$b" "$(mesh_lab_path "$a" "$b")" \
        "$(mesh_lab_endpoint "$a" "$b")" "$(mesh_lab_rtt "$a" "$b")"
    done
  done
}
