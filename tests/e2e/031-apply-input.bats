#!/usr/bin/env bats
# mesh-apply input handling: bad maps and files leave the interface exactly
# as it was with the documented exit status; --dry-run; --print-conf
# accepted by `wg setconf`; endpoints documents; --listen-port; usage.

bats_require_minimum_version 1.5.0
load helpers
load apply-lib

setup() {
  apply_pair
  standard_maps
}

# Runs mesh-apply in namespace a and asserts exit status $1 and that the
# interface, addresses, routes and firewall are byte-for-byte unchanged.
expect_unchanged() {
  local want=$1; shift
  local before; before=$(snapshot a "$IFA")
  mrun -s "$want" "${NA[@]}" mesh-apply --interface "$IFA" "$@"
  [ -n "$stderr" ]
  [[ "$stderr" == mesh-apply:\ error:* ]]
  [ -z "$output" ]
  [ "$(snapshot a "$IFA")" = "$before" ]
}

@test "bad maps: exit 65 and the interface is left exactly as it was" {
  apply_a "$D/a.json"
  echo '{"version":1,' >"$D/trunc.json"
  expect_unchanged 65 --key "$D/a.key" "$D/trunc.json"
  jq '.peers[0].public_key = "not-a-key"' "$D/a.json" >"$D/badkey.json"
  expect_unchanged 65 --key "$D/a.key" "$D/badkey.json"
  jq '.peers[0].allowed_ips = ["198.18.0.0/33"]' "$D/a.json" >"$D/badcidr.json"
  expect_unchanged 65 --key "$D/a.key" "$D/badcidr.json"
  jq '.peers += [.peers[0]]' "$D/a.json" >"$D/dup.json"
  expect_unchanged 65 --key "$D/a.key" "$D/dup.json"
  jq '.self.surprise = 1' "$D/a.json" >"$D/unknown.json"
  expect_unchanged 65 --key "$D/a.key" --strict "$D/unknown.json"
  # Without --strict an unknown field is accepted (and changes nothing here).
  apply_a "$D/unknown.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  # A key that is not the map's self key.
  expect_unchanged 65 --key "$D/b.key" "$D/a.json"
  # A bad endpoints document.
  echo '{"version":1,"peers":[{"public_key":"x"}]}' >"$D/badeps.json"
  expect_unchanged 65 --key "$D/a.key" --endpoints "$D/badeps.json" "$D/a.json"
}

@test "pristine device started by another tool: the SET begun while reading the map is undone on bad input" {
  # On a wireguard-go device with no key, no peers and the link down,
  # mesh-apply writes the peers while it still reads the map (mesh-apply(8),
  # PERFORMANCE). An error found later, here after 300 peers, must leave the
  # device exactly as it was.
  nsx a env LOG_LEVEL= wireguard-go "$IFA" 2>/dev/null
  local i peers
  peers=$(for i in $(seq 1 300); do wg genkey | wg pubkey; done | jq -Rsc '
    split("\n") | map(select(length > 0)) | to_entries | map((.key + 1) as $i |
      {name: "p\($i)", public_key: .value, addresses: ["100.65.\($i / 250 | floor).\($i % 250)/32"],
       endpoints: [{endpoint: "198.18.0.\($i % 250):51820", kind: "host"}]})')
  [ "$(jq length <<<"$peers")" = 300 ]
  write_map "$D/many.json" "$PA" 100.64.0.1/10 51820 "$peers" \
    '[{"sources":["100.64.0.0/10"],"proto":"icmp"}]'
  jq '.peers += [.peers[0]]' "$D/many.json" >"$D/many-dup.json"
  mrun -s 65 "${NA[@]}" env MESH_LOG=debug mesh-apply --interface "$IFA" --key "$D/a.key" "$D/many-dup.json"
  [[ "$stderr" == *"SET begun on the pristine device"* ]]
  expect_unchanged 65 --key "$D/a.key" "$D/many-dup.json"
  [ "$(nsx a wg show "$IFA" peers | wc -l)" = 0 ]
  [ "$(nsx a wg show "$IFA" private-key)" = "(none)" ]
  # The map's self key is checked once the whole map is read.
  expect_unchanged 65 --key "$D/b.key" "$D/many.json"
  # A map the fast reader leaves to the full one (an escaped string): the
  # streamed part is replaced by the plan's SET.
  jq '.peers[7].name = "p\u00e9"' "$D/many.json" >"$D/escaped.json"
  grep -q '\\u00e9\|é' "$D/escaped.json"
  mrun -s 0 "${NA[@]}" env MESH_LOG=debug mesh-apply --interface "$IFA" --key "$D/a.key" "$D/escaped.json"
  [[ "$stderr" == *"SET begun on the pristine device"* ]]
  [ "$(jq '.peers.added | length' <<<"$output")" = 300 ]
  [ "$(nsx a wg show "$IFA" peers | wc -l)" = 300 ]
  apply_a --verify "$D/escaped.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  # And the ordinary case on a new pristine device: every peer, as planned.
  nsx a mesh-apply down --interface "$IFA" >/dev/null
  nsx a env LOG_LEVEL= wireguard-go "$IFA" 2>/dev/null
  mrun -s 0 "${NA[@]}" env MESH_LOG=debug mesh-apply --interface "$IFA" --key "$D/a.key" "$D/many.json"
  [[ "$stderr" == *"SET begun on the pristine device"* ]]
  [[ "$stderr" != *"not the plan's"* ]]
  [ "$(nsx a wg show "$IFA" peers | wc -l)" = 300 ]
  [ "$(nsx a wg show "$IFA" listen-port)" = 51820 ]
  apply_a --verify "$D/many.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
}

@test "pristine device: the listen port sent ahead of the peers is checked against the map" {
  # mesh-apply sends the port with the key, before any peer (as wg(8)
  # does), taking it from the map's text before the map is parsed
  # (mesh-apply(8), "A pristine device"). Here the last "listen_port" in the
  # text is a peer's unknown member, ignored by the map: a wrong guess,
  # which must be corrected, or undone with the rest on bad input.
  jq -c '.peers[0].listen_port = 999' "$D/a.json" >"$D/decoy.json"
  jq -c '.peers += [.peers[0]]' "$D/decoy.json" >"$D/decoy-dup.json"
  jq -c 'del(.self.listen_port)' "$D/decoy.json" >"$D/decoy-noport.json"
  nsx a env LOG_LEVEL= wireguard-go "$IFA" 2>/dev/null
  local own; own=$(nsx a wg show "$IFA" listen-port)  # wireguard-go picks one at start
  [ "$own" != 999 ]
  expect_unchanged 65 --key "$D/a.key" "$D/decoy-dup.json"
  [ "$(nsx a wg show "$IFA" listen-port)" = "$own" ]
  mrun -s 0 "${NA[@]}" env MESH_LOG=debug mesh-apply --interface "$IFA" --key "$D/a.key" "$D/decoy.json"
  [[ "$stderr" == *"SET begun on the pristine device"* ]]
  [[ "$stderr" == *"listen port sent with the key was a wrong guess"* ]]
  [ "$(nsx a wg show "$IFA" listen-port)" = 51820 ]
  [ "$(nsx a wg show "$IFA" peers | wc -l)" = 1 ]
  # No port in the map: the device keeps its own, whatever the text
  # suggested.
  nsx a mesh-apply down --interface "$IFA" >/dev/null
  nsx a env LOG_LEVEL= wireguard-go "$IFA" 2>/dev/null
  own=$(nsx a wg show "$IFA" listen-port)
  mrun -s 0 "${NA[@]}" env MESH_LOG=debug mesh-apply --interface "$IFA" --key "$D/a.key" "$D/decoy-noport.json"
  [[ "$stderr" == *"wrong guess"* ]]
  [ "$(nsx a wg show "$IFA" listen-port)" = "$own" ]
  # --listen-port wins over the map, and is no guess.
  nsx a mesh-apply down --interface "$IFA" >/dev/null
  nsx a env LOG_LEVEL= wireguard-go "$IFA" 2>/dev/null
  mrun -s 0 "${NA[@]}" env MESH_LOG=debug mesh-apply --interface "$IFA" --key "$D/a.key" --listen-port 40000 "$D/decoy.json"
  [[ "$stderr" == *"SET begun on the pristine device"* ]]
  [[ "$stderr" != *"wrong guess"* ]]
  [ "$(nsx a wg show "$IFA" listen-port)" = 40000 ]
}

@test "missing files: exit 66, nothing created" {
  expect_unchanged 66 --key "$D/a.key" "$D/nope.json"
  expect_unchanged 66 --key "$D/nope.key" "$D/a.json"
  ! ip -n "${MESH_RUN}a" link show "$IFA" 2>/dev/null
}

@test "not root (unprivileged user): exit 77 and the interface is untouched" {
  command -v setpriv >/dev/null || skip "setpriv (util-linux) not installed"
  apply_a "$D/a.json"
  local u; u=$(mktemp -d /tmp/mesh-apply-nobody.XXXXXX)
  on_teardown "rm -rf $u"
  cp "$D/a.key" "$u/"
  jq '.peers = []' "$D/a.json" >"$u/a2.json"
  chmod 755 "$u"; chmod 644 "$u"/*
  local before; before=$(snapshot a "$IFA")
  mrun -s 77 "${NA[@]}" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    "$MESH_BIN/mesh-apply" --interface "$IFA" --key "$u/a.key" "$u/a2.json"
  [[ "$stderr" == *"needs root"* ]]
  [ "$(snapshot a "$IFA")" = "$before" ]
  mrun -s 77 "${NA[@]}" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    "$MESH_BIN/mesh-apply" down --interface "$IFA"
  [ "$(snapshot a "$IFA")" = "$before" ]
}

@test "wireguard-go unavailable: exit 69, nothing created" {
  mrun -s 69 env WG_USERSPACE_IMPLEMENTATION=/nonexistent/wireguard-go \
    "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [[ "$stderr" == mesh-apply:\ error:* ]]
  ! ip -n "${MESH_RUN}a" link show "$IFA" 2>/dev/null
  ! nsx a nft list table inet "mesh_$IFA" 2>/dev/null
  # The kernel backend is unavailable here unless the module is loaded.
  if ! ip link add "${MESH_RUN}kt" type wireguard 2>/dev/null; then
    mrun -s 69 "${NA[@]}" mesh-apply --backend kernel --interface "$IFA" --key "$D/a.key" "$D/a.json"
    [[ "$stderr" == *"kernel"* ]]
  else
    ip link del "${MESH_RUN}kt"
  fi
}

@test "usage errors: exit 64" {
  mrun -s 64 "${NA[@]}" mesh-apply --key "$D/a.key" "$D/a.json"
  mrun -s 64 "${NA[@]}" mesh-apply --interface "$IFA" "$D/a.json"
  mrun -s 64 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" --backend bogus "$D/a.json"
  mrun -s 64 "${NA[@]}" mesh-apply --interface "a/b" --key "$D/a.key" "$D/a.json"
  mrun -s 64 "${NA[@]}" mesh-apply --interface waytoolonginterfacename --key "$D/a.key" "$D/a.json"
  mrun -s 64 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" --dry-run --print-conf "$D/a.json"
  mrun -s 64 "${NA[@]}" mesh-apply down
  mrun -s 0 "${NA[@]}" mesh-apply --help
  [[ "$output" == *--interface* ]]
}

@test "--dry-run prints the plan and changes nothing" {
  mrun -s 0 "${NA[@]}" mesh-apply --dry-run --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [ "$(jq -r .dry_run <<<"$output")" = true ]
  [ "$(jq -r .changed <<<"$output")" = true ]
  [ "$(jq -r .created <<<"$output")" = true ]
  [ "$(jq -r '.peers.added[0].public_key' <<<"$output")" = "$PB" ]
  ! ip -n "${MESH_RUN}a" link show "$IFA" 2>/dev/null
  ! nsx a nft list table inet "mesh_$IFA" 2>/dev/null
  apply_a "$D/a.json"
  jq '.peers = []' "$D/a.json" >"$D/a2.json"
  local before; before=$(snapshot a "$IFA")
  mrun -s 0 "${NA[@]}" mesh-apply -n --interface "$IFA" --key "$D/a.key" "$D/a2.json"
  [ "$(jq -r '.peers.removed[0].public_key' <<<"$output")" = "$PB" ]
  [ "$(snapshot a "$IFA")" = "$before" ]
  # The map can come on stdin.
  mrun -s 0 "${NA[@]}" sh -c "mesh-apply -n --interface $IFA --key $D/a.key - <$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
}

@test "--print-conf output is accepted by wg setconf (after wg-quick strip)" {
  command -v wg-quick >/dev/null || skip "wg-quick not installed"
  apply_a "$D/a.json"
  mrun -s 0 "${NA[@]}" mesh-apply --print-conf --interface "$IFA" --key "$D/a.key" "$D/a.json"
  [[ "$output" == "[Interface]"* ]]
  grep -q '^Address = 100.64.0.1/10$' <<<"$output"
  (umask 077; printf '%s\n' "$output" >"$D/$IFA.conf")
  mrun -s 0 wg-quick strip "$D/$IFA.conf"
  (umask 077; printf '%s\n' "$output" >"$D/stripped.conf")
  # Load it into a fresh wireguard-go interface (in b: the port is free
  # there) and compare with what mesh-apply configured.
  local IFC; IFC=$(wg_name wc)
  on_teardown "nsx b mesh-apply down --interface $IFC >/dev/null 2>&1"
  nsx b env LOG_LEVEL= wireguard-go "$IFC" 2>/dev/null
  mrun -s 0 "${NB[@]}" wg setconf "$IFC" "$D/stripped.conf"
  [ "$(nsx b wg show "$IFC" peers)" = "$PB" ]
  [ "$(nsx b wg show "$IFC" allowed-ips)" = "$(nsx a wg show "$IFA" allowed-ips)" ]
  [ "$(nsx b wg show "$IFC" endpoints)" = "$(nsx a wg show "$IFA" endpoints)" ]
  [ "$(nsx b wg show "$IFC" public-key)" = "$PA" ]
  [ "$(nsx b wg show "$IFC" listen-port)" = 51820 ]
}

@test "--endpoints overrides the map; later documents win; relay-needed keeps the current endpoint" {
  apply_a "$D/a.json"
  [ "$(nsx a wg show "$IFA" endpoints | awk '{print $2}')" = 198.51.100.2:51820 ]
  jq -n --arg k "$PB" '{version:1, peers:[{public_key:$k, status:"relayed", endpoint:"127.0.0.1:40001", kind:"relay"}]}' >"$D/e1.json"
  jq -n --arg k "$PB" '{version:1, peers:[{public_key:$k, status:"direct", endpoint:"198.51.100.2:51999", kind:"host"}]}' >"$D/e2.json"
  jq -n --arg k "$PB" '{version:1, peers:[{public_key:$k, status:"relay-needed"}]}' >"$D/e3.json"
  apply_a --endpoints "$D/e1.json" "$D/a.json"
  [ "$(jq -c '.peers.updated[0].changes' <<<"$output")" = '["endpoint"]' ]
  [ "$(nsx a wg show "$IFA" endpoints | awk '{print $2}')" = 127.0.0.1:40001 ]
  apply_a --endpoints "$D/e1.json" --endpoints "$D/e2.json" "$D/a.json"
  [ "$(nsx a wg show "$IFA" endpoints | awk '{print $2}')" = 198.51.100.2:51999 ]
  # relay-needed, or no document at all: the endpoint WireGuard has is kept.
  apply_a --endpoints "$D/e3.json" "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  apply_a "$D/a.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  [ "$(nsx a wg show "$IFA" endpoints | awk '{print $2}')" = 198.51.100.2:51999 ]
}

@test "--listen-port overrides the map's port" {
  apply_a --listen-port 40123 "$D/a.json"
  [ "$(jq -r .listen_port <<<"$output")" = 40123 ]
  [ "$(nsx a wg show "$IFA" listen-port)" = 40123 ]
  apply_a "$D/a.json"
  [ "$(nsx a wg show "$IFA" listen-port)" = 51820 ]
}

@test "an existing non-WireGuard interface is refused (exit 78) and left alone" {
  ip -n "${MESH_RUN}a" link add "$IFA" type veth peer name "${IFA:0:13}-p"
  mrun -s 78 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.json"
  mrun -s 78 "${NA[@]}" mesh-apply down --interface "$IFA"
  ip -n "${MESH_RUN}a" link show "$IFA" | grep -q "$IFA"
  ip -n "${MESH_RUN}a" link del "$IFA"
}

@test "IPv6 overlay: addresses, routes, endpoints and firewall sets" {
  jq -n --arg k "$PA" --arg b "$PB" '{version:1, serial:1,
    self:{public_key:$k, addresses:["100.64.0.1/10","fd00:64::1/64"], listen_port:51820},
    peers:[{name:"b\nPublicKey = evil", public_key:$b, addresses:["100.64.0.2/32","fd00:64::2/128"],
            allowed_ips:["fd00:7::/64"], endpoints:[{endpoint:"[2001:db8::2]:51820"}]}],
    firewall:{inbound:[{sources:["fd00:64::2/128"], proto:"tcp", ports:[22]},
                       {sources:["fd00:64::/64"], proto:"icmp"}]}}' >"$D/v6.json"
  apply_a "$D/v6.json"
  [ "$(jq -c .routes.added <<<"$output")" = '["fd00:7::/64"]' ]
  ip -n "${MESH_RUN}a" -6 route show dev "$IFA" | grep -q '^fd00:7::/64 proto 77'
  ip -n "${MESH_RUN}a" -6 addr show dev "$IFA" | grep -q 'fd00:64::1/64'
  [ "$(nsx a wg show "$IFA" endpoints | awk '{print $2}')" = '[2001:db8::2]:51820' ]
  nsx a nft list set inet "mesh_$IFA" tcp6 | grep -q 'fd00:64::2 . 22'
  apply_a "$D/v6.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
  # A peer name cannot inject configuration into --print-conf.
  mrun -s 0 "${NA[@]}" mesh-apply --print-conf --interface "$IFA" --key "$D/a.key" "$D/v6.json"
  [ "$(grep -c '^PublicKey' <<<"$output")" = 1 ]
}
