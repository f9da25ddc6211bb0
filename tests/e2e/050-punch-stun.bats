#!/usr/bin/env bats
# mesh-punch stun: STUN discovery and NAT classification in the NAT lab
# (tests/lab/lab.bash) against coturn's turnserver, with the port free (plain
# socket) and with wireguard-go holding it (raw socket + BPF).
load helpers
load ../lab/lab

@test "stun: usage errors and bad servers have documented exit statuses" {
  mrun -s "$EX_USAGE" mesh-punch stun --port 51820
  [[ "$stderr" == *"--server"* ]]
  mrun -s "$EX_USAGE" mesh-punch stun --server 127.0.0.1:3478 --port 0
  mrun -s "$EX_USAGE" mesh-punch stun --server 127.0.0.1:3478 --port 51820 --socket bogus
  mrun -s "$EX_DATAERR" mesh-punch stun --server 127.0.0.1 --port 51820
  [[ "$stderr" == "mesh-punch: error: "*"HOST:PORT"* ]]
  mrun -s "$EX_DATAERR" mesh-punch stun --server 127.0.0.1:99999 --port 51820
}

@test "stun: no server answering is 'unavailable' (69) within the timeout, nothing on stdout" {
  require_root
  netns_add solo
  mrun -T 10 -s "$EX_UNAVAILABLE" ip netns exec "$(lab_ns solo)" mesh-punch stun --server 127.0.0.1:3478 --port 40000 --timeout 0.5
  [ -z "$output" ]
  [[ "$stderr" == *"no STUN server answered"* ]]
}

# Asserts the endpoints document in $output: srflx = WAN:expected_port (or any
# port when "*"), host candidate, and the mapping/filtering classification.
check_doc() {
  local host=$1 srflx=$2 mapping=$3 filtering=$4
  jq -e . >/dev/null <<<"$output"
  [ "$(jq -r '.version' <<<"$output")" = 1 ]
  [ "$(jq -r '.nat.mapping' <<<"$output")" = "$mapping" ]
  [ "$(jq -r '.nat.filtering' <<<"$output")" = "$filtering" ]
  jq -e --arg h "$host" '.candidates | map(select(.kind == "host" and .endpoint == $h)) | length == 1' <<<"$output"
  if [ -n "$srflx" ]; then
    jq -e --arg s "$srflx" '.candidates | map(select(.kind == "srflx" and (.endpoint | test($s)))) | length >= 1' <<<"$output"
    jq -e '.stun | length == 2 and all(.[]; .mapped != null and .rtt_ms >= 0)' <<<"$output"
  fi
}

@test "stun: endpoint-independent NAT, port free: public address, EIM mapping, APD filtering" {
  require_root
  lab_internet
  lab_nat r1 eim drop
  lab_peer a r1
  MESH_LOG=info lab_stun a 51820
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"using a socket"* ]]
  check_doc "${LAB_ADDR[a]}:51820" "^${LAB_WAN[r1]//./\\.}:51820\$" endpoint-independent address-and-port-dependent
  # coturn is an RFC 5780 server: its OTHER-ADDRESS is reported.
  jq -e '.stun[0].other_address | test(":3479$")' <<<"$output"
}

@test "stun: symmetric NAT, port free: classified as dependent mapping" {
  require_root
  lab_internet
  lab_nat r1 symmetric drop
  lab_peer a r1
  lab_stun a 51820
  [ "$status" -eq 0 ]
  check_doc "${LAB_ADDR[a]}:51820" "^${LAB_WAN[r1]//./\\.}:" address-and-port-dependent address-and-port-dependent
  # Two servers saw two different mappings.
  [ "$(jq -r '.stun[0].mapped' <<<"$output")" != "$(jq -r '.stun[1].mapped' <<<"$output")" ]
}

@test "stun: endpoint-independent NAT while wireguard-go owns the port (raw socket + BPF)" {
  require_root
  lab_internet
  lab_nat r1 eim drop
  lab_peer a r1
  lab_wg a 51820 100.64.0.1/10
  mrun -s "$EX_TEMPFAIL" ip netns exec "$(lab_ns a)" mesh-punch stun --server "$LAB_STUN1" --port 51820 --socket socket
  MESH_LOG=info lab_stun a 51820
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"using a raw socket"* ]]
  check_doc "${LAB_ADDR[a]}:51820" "^${LAB_WAN[r1]//./\\.}:51820\$" endpoint-independent address-and-port-dependent
  # The overlay address on the WireGuard interface is not a host candidate.
  ! jq -e '.candidates[] | select(.endpoint | startswith("100.64."))' <<<"$output"
  # wireguard-go still owns and serves the port.
  nsx a wg show "${LAB_WG[a]}" listen-port | grep -qx 51820
}

@test "stun: symmetric NAT while wireguard-go owns the port" {
  require_root
  lab_internet
  lab_nat r1 symmetric open
  lab_peer a r1
  lab_wg a 51820 100.64.0.1/10
  MESH_LOG=info lab_stun a 51820
  [ "$status" -eq 0 ]
  [[ "$stderr" == *"using a raw socket"* ]]
  check_doc "${LAB_ADDR[a]}:51820" "^${LAB_WAN[r1]//./\\.}:" address-and-port-dependent address-and-port-dependent
}

@test "stun: a public host (no NAT) is reported as mapping none" {
  require_root
  lab_internet
  lab_peer_public p
  lab_stun p 51820
  [ "$status" -eq 0 ]
  [ "$(jq -r '.nat.mapping' <<<"$output")" = none ]
  [ "$(jq -r '.nat.filtering' <<<"$output")" = endpoint-independent ]
  jq -e --arg h "${LAB_ADDR[p]}:51820" '[.candidates[] | select(.kind == "host")][0].endpoint == $h' <<<"$output"
  ! jq -e '.candidates[] | select(.kind == "srflx")' <<<"$output"
}

@test "stun: IPv6 through raw sockets while wireguard-go owns the port" {
  require_root
  lab_internet
  lab_peer_public p
  [ -n "${LAB_ADDR6[p]:-}" ] || skip "no IPv6 in this kernel"
  lab_wg p 51820 100.64.0.1/10
  MESH_LOG=info mrun -s 0 ip netns exec "$(lab_ns p)" mesh-punch stun \
    --server "$LAB_STUN6_1" --server "$LAB_STUN6_2" --port 51820 --json
  [[ "$stderr" == *"using a raw socket"* ]]
  jq -e --arg m "[${LAB_ADDR6[p]}]:51820" '.stun | length == 2 and all(.[]; .mapped == $m)' <<<"$output"
  [ "$(jq -r '.nat.mapping' <<<"$output")" = none ]
  jq -e --arg h "[${LAB_ADDR6[p]}]:51820" '.candidates[] | select(.kind == "host" and .endpoint == $h)' <<<"$output"
}
