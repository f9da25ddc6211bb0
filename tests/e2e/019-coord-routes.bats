#!/usr/bin/env bats
# Routes and exit nodes at the coordinator (issue 19), at map level (no
# WireGuard; the data plane is mesh-apply's, tests/e2e/03*): the route verbs
# round-trip and survive a restart; an allowed client's map has the route via
# both HA routers with their metrics, a client the policy does not allow has
# none; the router's map has self.routes and forward rules; deleting a router
# or the route pushes maps to a watcher; bad input changes nothing.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

LAN=198.51.100.0/24

setup() {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  coord_key gw --reusable --group gateways
  coord_key dev --reusable --group dev
  coord_key other --reusable --group other
  coord_join gw1 gw
  coord_join gw2 gw
  coord_join alice dev
  coord_join bob other
  cat >p.json <<'EOF'
{"groups": {"dev": {}, "other": {}, "gateways": {}},
 "rules": [{"name": "dev-lan", "src": ["dev"], "dst": ["route:lan"], "proto": "tcp", "ports": [22]}],
 "tests": [{"from": "group:dev", "to": "group:other", "expect": "deny"}]}
EOF
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
}

lan_create() {
  mrun -s 0 mesh-coord route create --server "$COORD_URL" lan --network "$LAN" \
    --router gw1:10 --router gw2:20 --description "office LAN" --json
}

# routes_via PEER: "NAME:METRIC:NETWORK" of every route in the map in $output.
routes_via() {
  jq -r '[.peers[] | .name as $n | (.routes // [])[] | "\($n):\(.metric):\(.network)"] | join(" ")' <<<"$output"
}

@test "route verbs round-trip and survive a restart" {
  lan_create
  [ "$(jq -r .name <<<"$output")" = lan ]
  [ "$(jq -c .networks <<<"$output")" = "[\"$LAN\"]" ]
  [ "$(jq -c .routers <<<"$output")" = '[{"metric":10,"peer":"gw1"},{"metric":20,"peer":"gw2"}]' ]
  [ "$(jq -r '.masquerade, .source, .exit_node' <<<"$output" | tr '\n' ' ')" = "true admin false " ]
  mrun -s 0 mesh-coord route create --server "$COORD_URL" internet --network 0.0.0.0/0 \
    --network ::/0 --router-group gateways:5
  [ "$(jq -r .exit_node <<<"$output")" = true ]
  [ "$(jq -r '[.active_routers[].peer] | join(",")' <<<"$output")" = gw1,gw2 ]
  mrun -s 0 mesh-coord route update --server "$COORD_URL" lan --no-masquerade --router gw2:5 --router gw1:7
  [ "$(jq -r .masquerade <<<"$output")" = false ]
  [ "$(jq -c .routers <<<"$output")" = '[{"metric":5,"peer":"gw2"},{"metric":7,"peer":"gw1"}]' ]
  [ "$(jq -r .description <<<"$output")" = "office LAN" ]   # kept
  mrun -s 0 mesh-coord route show --server "$COORD_URL" lan
  [ "$(jq -c .clients <<<"$output")" = '["alice"]' ]
  # Restart: the same routes come back.
  mrun -s 0 mesh-coord route list --server "$COORD_URL"
  before=$output
  kill "$coord_pid"; wait "$coord_pid" || true
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord2
  mrun -s 0 mesh-coord route list --server "$COORD_URL"
  [ "$output" = "$before" ]
  [ "$(jq -r '[.routes[].name] | join(",")' <<<"$output")" = internet,lan ]
  coord_map alice
  [ "$(routes_via)" = "gw1:7:$LAN gw2:5:$LAN" ]
  mrun -s 0 mesh-coord route delete --server "$COORD_URL" internet
  [ "$(jq -r .deleted <<<"$output")" = internet ]
  mrun -s "$EX_DATAERR" mesh-coord route show --server "$COORD_URL" internet
  grep -q "no route 'internet'" <<<"$stderr"
  # The audit log has each change.
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action route
  [ "$(jq -r .action <<<"$output" | tr '\n' ' ')" = "route.create route.create route.update route.delete " ]
  [ "$(jq -r 'select(.action=="route.create") | .target' <<<"$output" | head -1)" = lan ]
}

@test "an allowed client gets the route via both routers, a denied one nothing; routers get self.routes and forward rules" {
  lan_create
  coord_map alice
  [ "$(peer_names)" = gw1,gw2 ]   # routers are its peers with no peer rule
  [ "$(routes_via)" = "gw1:10:$LAN gw2:20:$LAN" ]
  [ "$(jq -r '[.peers[].routes[].masquerade] | unique | join(",")' <<<"$output")" = true ]
  # The route is not in allowed IPs: mesh-apply picks the router.
  [ "$(jq -r --arg n "$LAN" '[.peers[].allowed_ips[] | select(. == $n)] | length' <<<"$output")" = 0 ]
  alice4=$(jq -r '.self.addresses[0] | sub("/.*"; "")' <<<"$output")
  alice6=$(jq -r '.self.addresses[1] | sub("/.*"; "")' <<<"$output")
  # The map passes the one strict parser (mesh-apply's).
  printf '%s\n' "$output" >alice.map
  mrun -s 0 mesh-apply --print-conf --strict --interface x0 --key alice.key alice.map

  coord_map bob
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
  [ -z "$(routes_via)" ]

  coord_map gw1
  [ "$(jq -c .self.routes <<<"$output")" = "[{\"masquerade\":true,\"network\":\"$LAN\"}]" ]
  [ "$(peer_names)" = alice ]
  [ "$(jq -r '.firewall.forward | length' <<<"$output")" = 1 ]
  [ "$(jq -c '.firewall.forward[0] | {destinations, ports, proto, rule}' <<<"$output")" = \
    "{\"destinations\":[\"$LAN\"],\"ports\":[\"22\"],\"proto\":\"tcp\",\"rule\":\"dev-lan\"}" ]
  [ "$(jq -c '.firewall.forward[0].sources' <<<"$output")" = "[\"$alice4/32\",\"$alice6/128\"]" ]
  [ "$(jq -r '.firewall.inbound | length' <<<"$output")" = 0 ]

  # Policy check and plan understand route destinations.
  mrun -s 0 mesh-coord policy check --server "$COORD_URL" --from alice --to route:lan --port 22/tcp
  mrun -s "$EX_FAILURE" mesh-coord policy check --server "$COORD_URL" --from bob --to route:lan --port 22/tcp
  jq '.rules[0].src += ["other"]' p.json >p2.json
  mrun -s 0 mesh-coord policy plan --server "$COORD_URL" p2.json --json
  [ "$(jq -c .gained <<<"$output")" = '[{"dst":"route:lan","service":"tcp/22","src":"bob"}]' ]
  # A policy change that lets bob in gives him the route too.
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p2.json
  coord_map bob
  [ "$(routes_via)" = "gw1:10:$LAN gw2:20:$LAN" ]
}

@test "routes in the policy file: kept in git, refused to the verbs, clashing names refused" {
  cat >pf.json <<'EOF'
{"groups": {"dev": {}, "other": {}, "gateways": {}},
 "routes": {"office": {"networks": ["203.0.113.0/24"], "routers": [{"group": "gateways", "metric": 3}]}},
 "rules": [{"name": "dev-office", "src": ["dev"], "dst": ["203.0.113.0/24"], "proto": "icmp"}],
 "tests": [{"from": "group:dev", "to": "route:office", "port": "icmp", "expect": "allow"},
           {"from": "group:other", "to": "route:office", "port": "icmp", "expect": "deny"}]}
EOF
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" pf.json
  coord_map alice
  [ "$(routes_via)" = "gw1:3:203.0.113.0/24 gw2:3:203.0.113.0/24" ]
  mrun -s 0 mesh-coord route list --server "$COORD_URL" --json
  [ "$(jq -r '.routes[0].source' <<<"$output")" = policy ]
  mrun -s "$EX_DATAERR" mesh-coord route delete --server "$COORD_URL" office
  grep -q "defined in the policy file" <<<"$stderr"
  mrun -s "$EX_DATAERR" mesh-coord route create --server "$COORD_URL" office --network 192.0.2.0/24 --router gw1
  lan_create
  jq '.routes.lan = {"networks": ["192.0.2.0/24"], "routers": [{"group": "gateways"}]}' pf.json >clash.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" clash.json
  grep -q "defined by \`mesh-coord route\`" <<<"$stderr"
  # A failing route test refuses the policy.
  jq '.tests[1].expect = "allow"' pf.json >bad.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" bad.json
  grep -q "expected allow, policy says deny" <<<"$stderr"
}

@test "disabling or deleting a router, or deleting the route, pushes maps to a watcher" {
  lan_create
  start_daemon watch mesh-coord watch --registration alice.json --key alice.key --count 5 --wait 5
  wait_for_line watch.out '"serial"' 10
  line() { wait_until 10 bash -c "[ \$(wc -l <watch.out) -ge $1 ]"; sed -n "${1}p" watch.out; }
  via() { jq -r '[.peers[] | "\(.name):\(.routes[0].metric)"] | join(",")'; }
  [ "$(line 1 | via)" = gw1:10,gw2:20 ]
  bob_serial=$(mesh-coord map --registration bob.json --key bob.key | jq .serial)
  mrun -s 0 mesh-coord peer disable --server "$COORD_URL" gw2
  [ "$(line 2 | via)" = gw1:10 ]
  mrun -s 0 mesh-coord peer enable --server "$COORD_URL" gw2
  [ "$(line 3 | via)" = gw1:10,gw2:20 ]
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" gw1
  [ "$(line 4 | via)" = gw2:20 ]
  # The deleted router's name stays reserved: a key not bound to it cannot
  # enrol a peer that would receive the route's traffic.
  mesh-keygen genkey -o thief.key
  mrun -s "$EX_DATAERR" mesh-coord join --server "$COORD_URL" --setup-key-file gw.sk --key thief.key --name gw1
  grep -q "not available to this setup key" <<<"$stderr"
  mrun -s 0 mesh-coord route delete --server "$COORD_URL" lan
  [ "$(line 5 | jq -r '.peers | length')" = 0 ]
  wait "$watch_pid"
  # Serials only grow along the way.
  [ "$(jq -s '[.[].serial] | . == (sort | unique)' watch.out)" = true ]
  # Bob, whom none of this concerns, kept his serial.
  [ "$(mesh-coord map --registration bob.json --key bob.key | jq .serial)" = "$bob_serial" ]
  coord_map gw2
  [ "$(jq -r '.self.routes // [] | length' <<<"$output")" = 0 ]
  [ "$(jq -r '.firewall.forward // [] | length' <<<"$output")" = 0 ]
  [ "$(jq -r '.peers | length' <<<"$output")" = 0 ]
}

@test "bad input gives clear errors and changes nothing" {
  lan_create
  mrun -s 0 mesh-coord route list --server "$COORD_URL" --json
  before=$output
  serial=$(mesh-coord map --registration alice.json --key alice.key | jq .serial)
  bad() {  # bad STATUS MESSAGE ARGS...
    local want=$1 msg=$2; shift 2
    mrun -s "$want" mesh-coord route "$@"
    grep -qF -- "$msg" <<<"$stderr" || { echo "stderr: $stderr"; return 1; }
  }
  bad "$EX_DATAERR" "overlaps the overlay prefix 100.64.0.0/10" create --server "$COORD_URL" x --network 100.64.7.0/24 --router gw1
  bad "$EX_DATAERR" "overlaps the overlay" create --server "$COORD_URL" x --network 100.0.0.0/8 --router gw1
  bad "$EX_USAGE" "invalid network" create --server "$COORD_URL" x --network 198.51.100.0/33 --router gw1
  bad "$EX_USAGE" "did you mean 198.51.100.0/24" create --server "$COORD_URL" x --network 198.51.100.1/24 --router gw1
  bad "$EX_DATAERR" "unknown peer 'ghost'" create --server "$COORD_URL" x --network 192.0.2.0/24 --router ghost
  bad "$EX_DATAERR" "unknown group 'ghosts'" create --server "$COORD_URL" x --network 192.0.2.0/24 --router-group ghosts
  bad "$EX_DATAERR" "already routed by route 'lan'" create --server "$COORD_URL" x --network "$LAN" --router gw1
  bad "$EX_DATAERR" "already exists" create --server "$COORD_URL" lan --network 192.0.2.0/24 --router gw1
  bad "$EX_USAGE" "needs masquerade" create --server "$COORD_URL" x --network 0.0.0.0/0 --router gw1 --no-masquerade
  bad "$EX_USAGE" "metric must be 0-65535" create --server "$COORD_URL" x --network 192.0.2.0/24 --router gw1:big
  bad "$EX_USAGE" "--network is required" create --server "$COORD_URL" x --router gw1
  bad "$EX_DATAERR" "no route 'nope'" update --server "$COORD_URL" nope --no-masquerade
  bad "$EX_DATAERR" "unknown peer 'ghost'" update --server "$COORD_URL" lan --router ghost
  bad "$EX_DATAERR" "overlaps the overlay" update --server "$COORD_URL" lan --network 100.64.0.0/16
  bad "$EX_DATAERR" "no route 'nope'" delete --server "$COORD_URL" nope
  # The API refuses the same with a JSON error naming the field.
  code=$(curl -s -o resp.json -w '%{http_code}' -X POST "$COORD_URL/v1/admin/routes/create" \
    -H "Authorization: Bearer $MESH_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data-binary '{"name": "x", "networks": ["192.0.2.0/24"], "routers": [{"peer": "gw1"}], "via": 1}')
  [ "$code" = 400 ]
  grep -q '"via"' resp.json
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$COORD_URL/v1/admin/routes/create" --data-binary '{}')" = 401 ]
  # Nothing changed: same routes, same map serial, no audit events.
  mrun -s 0 mesh-coord route list --server "$COORD_URL" --json
  [ "$output" = "$before" ]
  [ "$(mesh-coord map --registration alice.json --key alice.key | jq .serial)" = "$serial" ]
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action route
  [ "$(jq -r .action <<<"$output" | tr '\n' ' ')" = "route.create " ]
}
