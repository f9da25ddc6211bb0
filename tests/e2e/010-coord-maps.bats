#!/usr/bin/env bats
# Enrolment with several setup keys, policy, and per-peer maps that show
# exactly the peers and firewall rules the policy allows.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  cd "$BATS_TEST_TMPDIR"
  printf 'test-relay-secret\n' >relay.secret
  coord_start coord --stun 192.0.2.10:3478 --turn 192.0.2.10:3478 \
    --turn 192.0.2.10:5349,tls --relay-secret-file relay.secret
}

@test "serve prints one listening line, keeps its secrets 0600" {
  [[ "$COORD_URL" =~ ^http://127\.0\.0\.1:[0-9]+$ ]]
  [ "$(stat -c %a state/admin.token)" = 600 ]
  [ "$(stat -c %a state/coordinator.key)" = 600 ]
  [ "$(stat -c %a state/coord.db)" = 600 ]
  mrun -s 0 curl -sf "$COORD_URL/v1/info"
  [ "$(jq -r .coordinator_public_key <<<"$output")" = "$(cat state/coordinator.pub)" ]
}

@test "maps show exactly the peers and firewall rules the policy allows" {
  coord_key web --reusable --group web
  coord_key db --group db
  coord_key ops --tag admin
  coord_join web1 web
  [ "$(jq -r '.addresses[0]' web1.json)" = 100.64.0.1/10 ]
  [[ "$(jq -r '.addresses[1]' web1.json)" =~ ^fd[0-9a-f:]+::1/48$ ]]
  [ "$(jq -r '.groups[0]' web1.json)" = web ]
  [ "$(jq -r .server web1.json)" = "$COORD_URL" ]
  port1=$(jq -r .listen_port web1.json)
  [ "$port1" -ge 20000 ]
  [ "$port1" -le 59999 ]
  coord_join web2 web
  [ "$(jq -r .listen_port web2.json)" != "$port1" ]
  coord_join db1 db
  coord_join ops1 ops
  [ "$(jq -r '.tags[0]' ops1.json)" = admin ]

  cat >policy.json <<'P'
{
  "groups": {"web": {}, "db": {}, "admins": {"tags": ["admin"]}},
  "rules": [
    {"name": "web-to-db", "src": ["web"], "dst": ["db"], "proto": "tcp", "ports": [5432]},
    {"name": "admin-ssh", "src": ["admins"], "dst": ["all"], "proto": "tcp", "ports": [22, "8000-8080"]}
  ],
  "tests": [
    {"from": "web1", "to": "db1", "port": "5432/tcp", "expect": "allow"},
    {"from": "db1", "to": "web1", "port": "5432/tcp", "expect": "deny"},
    {"from": "group:admins", "to": "group:db", "port": "22/tcp", "expect": "allow"}
  ]
}
P
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" policy.json
  [ "$(jq -r .rules <<<"$output")" = 2 ]

  coord_map web1
  [ "$(peer_names)" = "db1,ops1" ]
  [ "$(jq -r '.firewall.inbound | length' <<<"$output")" = 1 ]
  [ "$(jq -r '.firewall.inbound[0].rule' <<<"$output")" = admin-ssh ]
  [ "$(jq -c '.firewall.inbound[0].ports' <<<"$output")" = '["22","8000-8080"]' ]
  ops_v4=$(jq -r '.addresses[0] | sub("/10$"; "/32")' ops1.json)
  [ "$(jq -r '.firewall.inbound[0].sources[0]' <<<"$output")" = "$ops_v4" ]
  [ "$(jq -r '.self.addresses[0]' <<<"$output")" = 100.64.0.1/10 ]
  [ "$(jq -r '.peers[] | select(.name=="db1") | .addresses[0]' <<<"$output")" = 100.64.0.3/32 ]
  [ "$(jq -r '.peers[0].keepalive' <<<"$output")" = 25 ]

  coord_map db1
  [ "$(peer_names)" = "ops1,web1,web2" ]
  [ "$(jq -r '[.firewall.inbound[].rule] | join(",")' <<<"$output")" = "web-to-db,admin-ssh" ]
  # web-to-db admits exactly web1 and web2 (IPv4 and IPv6 each).
  [ "$(jq -r '.firewall.inbound[0].sources | length' <<<"$output")" = 4 ]
  [ "$(jq -r '.firewall.inbound[0].proto' <<<"$output")" = tcp ]

  coord_map ops1
  [ "$(peer_names)" = "db1,web1,web2" ]
  [ "$(jq -r '.firewall.inbound | length' <<<"$output")" = 0 ]

  coord_map web2
  [ "$(peer_names)" = "db1,ops1" ]
  # Relay servers with coturn REST credentials.
  [ "$(jq -c .stun <<<"$output")" = '["192.0.2.10:3478"]' ]
  [ "$(jq -r '.turn | length' <<<"$output")" = 2 ]
  [ "$(jq -r '.turn[1].transport' <<<"$output")" = tls ]
  user=$(jq -r '.turn[0].username' <<<"$output")
  [[ "$user" =~ ^[0-9]+:web2@[0-9]+$ ]]
  [ "${user%%:*}" = "$(jq -r '.turn[0].expires_at' <<<"$output")" ]
  want=$(printf %s "$user" | openssl dgst -sha1 -hmac test-relay-secret -binary | base64)
  [ "$(jq -r '.turn[0].password' <<<"$output")" = "$want" ]
  left=$(( ${user%%:*} - $(date +%s) ))
  # The default lifetime is an hour: between half of it and all of it left.
  [ "$left" -gt 1700 ]
  [ "$left" -le 3600 ]
}

@test "announce publishes candidates into the maps of peers that see it" {
  coord_key k --reusable --group g
  coord_join a k
  coord_join b k
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_map b
  serial=$(jq -r .serial <<<"$output")
  [ "$(jq -r '.peers[0].endpoints | length' <<<"$output")" = 0 ]
  cat >ep.json <<'E'
{"version": 1, "candidates": [{"endpoint": "192.0.2.44:41641", "kind": "srflx"},
                              {"endpoint": "[2001:db8::4]:41641", "kind": "host"}]}
E
  mrun -s 0 mesh-coord announce --registration a.json --key a.key <ep.json
  [ "$(jq -r .changed <<<"$output")" = true ]
  coord_map b
  [ "$(jq -c '.peers[0].endpoints' <<<"$output")" = \
    '[{"endpoint":"192.0.2.44:41641","kind":"srflx"},{"endpoint":"[2001:db8::4]:41641","kind":"host"}]' ]
  [ "$(jq -r .serial <<<"$output")" -gt "$serial" ]
  # Re-announcing the same candidates changes nothing.
  mrun -s 0 mesh-coord announce --registration a.json --key a.key -f ep.json
  [ "$(jq -r .changed <<<"$output")" = false ]
  # The same map through --server/--coordinator-key instead of --registration.
  mrun -s 0 mesh-coord map --server "$COORD_URL" --coordinator-key "$(cat state/coordinator.pub)" --key b.key
  [ "$(jq -r '.peers[0].name' <<<"$output")" = a ]
}

@test "policy get, check and plan" {
  coord_key k --reusable --group web
  coord_key d --reusable --group db
  coord_join w1 k
  coord_join d1 d
  printf '{"groups":{"web":{},"db":{}},"rules":[{"name":"sql","src":["web"],"dst":["db"],"proto":"tcp","ports":[5432]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  mrun -s 0 mesh-coord policy get --server "$COORD_URL"
  [ "$(jq -r '.rules[0].name' <<<"$output")" = sql ]
  mrun -s 0 mesh-coord policy check --server "$COORD_URL" --from w1 --to d1 --port 5432/tcp
  [ "$(jq -r .verdict <<<"$output")" = allow ]
  [ "$(jq -r .rule <<<"$output")" = sql ]
  mrun -s 1 mesh-coord policy check --server "$COORD_URL" --from d1 --to w1 --port 5432/tcp
  [ "$(jq -r .verdict <<<"$output")" = deny ]
  [ "$(jq -r .rule <<<"$output")" = default-deny ]
  printf '{"groups":{"web":{},"db":{}},"rules":[{"name":"sql","src":["web"],"dst":["db"],"proto":"tcp","ports":["5430-5433"]},{"name":"ping","src":["db"],"dst":["web"],"proto":"icmp"}]}' >p2.json
  mrun -s 0 mesh-coord policy plan --server "$COORD_URL" p2.json
  [ "$(jq -c '.gained' <<<"$output")" = \
    '[{"dst":"w1","service":"icmp","src":"d1"},{"dst":"d1","service":"tcp/5430-5431","src":"w1"},{"dst":"d1","service":"tcp/5433","src":"w1"}]' ]
  [ "$(jq -c '.lost' <<<"$output")" = '[]' ]
  # plan changes nothing
  mrun -s 1 mesh-coord policy check --server "$COORD_URL" --from w1 --to d1 --port 5431/tcp
}

@test "policy with failing tests is refused and nothing changes" {
  coord_key k --group web
  coord_join w1 k
  printf '{"groups":{"web":{}},"rules":[{"src":["web"],"dst":["web"],"proto":"tcp","ports":[22]}]}' >ok.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" ok.json
  before=$(mesh-coord policy get --server "$COORD_URL")
  printf '{"groups":{"web":{}},"rules":[],"tests":[{"from":"w1","to":"group:web","port":"22/tcp","expect":"allow"}]}' >bad.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" bad.json
  [[ "$stderr" == *"tests[0]: w1 -> group:web 22/tcp: expected allow, policy says deny"* ]]
  [ "$(mesh-coord policy get --server "$COORD_URL")" = "$before" ]
  printf '{"groups":{},"rules":[{"src":["nope"],"dst":["all"]}]}' >unknown.json
  mrun -s "$EX_DATAERR" mesh-coord policy set --server "$COORD_URL" unknown.json
  [[ "$stderr" == *"rules[0].src[0]: unknown group 'nope'"* ]]
}

@test "ephemeral peers are deleted after inactivity" {
  mesh_teardown
  COORD_STATE=$BATS_TEST_TMPDIR/eph coord_start coord2 --janitor-interval 1
  coord_key e --ephemeral --ephemeral-timeout 2s --reusable
  coord_join temp e
  mrun -s 0 mesh-coord peer list --server "$COORD_URL"
  [ "$(jq -r '.peers[0].ephemeral' <<<"$output")" = true ]
  wait_until 15 bash -c "mesh-coord peer list --server $COORD_URL | jq -e '.peers | length == 0'"
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action peer.delete
  [ "$(jq -r .actor <<<"$output")" = system ]
  [ "$(jq -r .detail.reason <<<"$output")" = "ephemeral peer inactive" ]
}
