#!/usr/bin/env bats
# mesh-apply's kernel backend (generic netlink WG_CMD_GET/SET_DEVICE).
# Runs only where the wireguard kernel module is available; skipped with
# that reason elsewhere (the userspace tests cover the rest of the path).

bats_require_minimum_version 1.5.0
load helpers
load apply-lib

setup() {
  apply_pair
  if ! ip -n "${MESH_RUN}a" link add "${MESH_RUN}probe" type wireguard 2>/dev/null; then
    modprobe wireguard 2>/dev/null || true
    ip -n "${MESH_RUN}a" link add "${MESH_RUN}probe" type wireguard 2>/dev/null ||
      skip "the wireguard kernel module is not available on this machine"
  fi
  ip -n "${MESH_RUN}a" link del "${MESH_RUN}probe"
  standard_maps
}

@test "kernel backend: maps applied, ping, no-op re-apply keeps the session, down" {
  apply_a --backend kernel "$D/a.json"
  [ "$(jq -r .backend <<<"$output")" = kernel ]
  apply_b --backend kernel "$D/b.json"
  ip -n "${MESH_RUN}a" -d link show "$IFA" | grep -q wireguard
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  local hs; hs=$(nsx a wg show "$IFA" latest-handshakes | awk '{print $2}')
  [ "$hs" -gt 0 ]
  apply_a "$D/a.json"  # auto picks the kernel device that exists
  [ "$(jq -r .backend <<<"$output")" = kernel ]
  [ "$(jq -r .changed <<<"$output")" = false ]
  [ "$(nsx a wg show "$IFA" latest-handshakes | awk '{print $2}')" = "$hs" ]
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA"
  ! ip -n "${MESH_RUN}a" link show "$IFA" 2>/dev/null
  ! nsx a nft list table inet "mesh_$IFA" 2>/dev/null
}

@test "kernel backend: a large peer set is split across netlink messages and read back" {
  local peers="[" i
  for i in $(seq 1 600); do
    peers+="$(peer_json "p$i" "$(wg genkey | wg pubkey)" "100.64.$((i / 250 + 1)).$((i % 250 + 1))/32" "" \
      "[\"198.18.$((i / 250)).$((i % 250))/32\", \"fd00::$i/128\"]"),"
  done
  peers="${peers%,}]"
  write_map "$D/big.json" "$PA" 100.64.0.1/10 51820 "$peers" '[]'
  apply_a --backend kernel "$D/big.json"
  [ "$(jq '.peers.added | length' <<<"$output")" = 600 ]
  [ "$(nsx a wg show "$IFA" peers | wc -l)" = 600 ]
  [ "$(nsx a wg show "$IFA" allowed-ips | wc -w)" = 2400 ]
  apply_a --backend kernel "$D/big.json"
  [ "$(jq -r .changed <<<"$output")" = false ]
}
