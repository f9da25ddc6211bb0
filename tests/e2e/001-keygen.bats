#!/usr/bin/env bats
# mesh-keygen: every verb, every error path, and interop with wg(8).

load helpers
load apply-lib

setup() { cd "$BATS_TEST_TMPDIR"; }

@test "genkey prints one 44-character base64 key and nothing on stderr" {
  mrun -s 0 mesh-keygen genkey
  [[ "$output" =~ ^[A-Za-z0-9+/]{43}=$ ]]
  [ -z "$stderr" ]
}

@test "genkey keys are clamped like wg genkey" {
  for _ in 1 2 3 4 5; do
    mrun -s 0 mesh-keygen genkey
    first=$(printf '%s' "$output" | base64 -d | od -An -tu1 -N1 | tr -d ' ')
    last=$(printf '%s' "$output" | base64 -d | od -An -tu1 -j31 -N1 | tr -d ' ')
    [ $(( first & 7 )) -eq 0 ]
    [ $(( last & 192 )) -eq 64 ]
  done
}

@test "pubkey matches wg pubkey for keys from mesh-keygen (300 keys)" {
  for _ in $(seq 300); do mesh-keygen genkey; done > keys
  while read -r k; do printf '%s\n' "$k" | wg pubkey; done < keys > wg.pub
  while read -r k; do printf '%s\n' "$k" | mesh-keygen pubkey; done < keys > mesh.pub
  [ "$(wc -l < mesh.pub)" -eq 300 ]
  [ "$(sort -u keys | wc -l)" -eq 300 ]
  diff wg.pub mesh.pub
}

@test "pubkey accepts keys from wg genkey and agrees with wg (300 keys)" {
  for _ in $(seq 300); do wg genkey; done > keys
  while read -r k; do printf '%s\n' "$k" | wg pubkey; done < keys > wg.pub
  while read -r k; do printf '%s\n' "$k" | mesh-keygen pubkey; done < keys > mesh.pub
  [ "$(wc -l < mesh.pub)" -eq 300 ]
  diff wg.pub mesh.pub
}

@test "genpsk prints 32 random bytes in base64" {
  mrun -s 0 mesh-keygen genpsk
  [[ "$output" =~ ^[A-Za-z0-9+/]{43}=$ ]]
  [ "$(printf '%s' "$output" | base64 -d | wc -c)" -eq 32 ]
  second=$(mesh-keygen genpsk)
  [ "$second" != "$output" ]
}

# psk_maps PSK_A PSK_B: the apply-lib pair's maps, with the preshared key
# each side gives its peer (mesh-netmap(5), peers[].preshared_key).
psk_maps() {
  standard_maps
  jq --arg p "$1" '.peers[0].preshared_key = $p' "$D/a.json" >"$D/a.psk.json"
  jq --arg p "$2" '.peers[0].preshared_key = $p' "$D/b.json" >"$D/b.psk.json"
}

@test "genpsk is a working WireGuard preshared key: the same one on both sides passes traffic" {
  apply_pair
  mrun -s 0 mesh-keygen genpsk
  psk=$output
  psk_maps "$psk" "$psk"
  apply_a "$D/a.psk.json"
  apply_b "$D/b.psk.json"
  # WireGuard took it as the peer's preshared key on both sides.
  [ "$(nsx a wg show "$IFA" preshared-keys | awk '{print $2}')" = "$psk" ]
  [ "$(nsx b wg show "$IFB" preshared-keys | awk '{print $2}')" = "$psk" ]
  mrun -s 0 "${NA[@]}" ping -c 1 -W 5 100.64.0.2
  mrun -s 0 "${NB[@]}" ping -c 1 -W 5 100.64.0.1
}

@test "genpsk: different preshared keys on the two sides pass no traffic" {
  apply_pair
  psk_maps "$(mesh-keygen genpsk)" "$(mesh-keygen genpsk)"
  apply_a "$D/a.psk.json"
  apply_b "$D/b.psk.json"
  # Handshakes fail on the PSK mix-in: no session, no ping, either way.
  mrun "${NA[@]}" ping -c 3 -i 0.5 -W 2 100.64.0.2
  [ "$status" -ne 0 ]
  mrun "${NB[@]}" ping -c 1 -W 2 100.64.0.1
  [ "$status" -ne 0 ]
  [ "$(nsx a wg show "$IFA" latest-handshakes | awk '{print $2}')" = 0 ]
  # The same pair with matching keys talks: it was only the keys.
  psk=$(mesh-keygen genpsk)
  psk_maps "$psk" "$psk"
  apply_a "$D/a.psk.json"
  apply_b "$D/b.psk.json"
  mrun -s 0 "${NA[@]}" ping -c 1 -W 6 100.64.0.2
}

@test "pair --json gives a matching key pair" {
  mrun -s 0 mesh-keygen pair --json
  priv=$(jq -r .private_key <<< "$output")
  pub=$(jq -r .public_key <<< "$output")
  [ "$(wg pubkey <<< "$priv")" = "$pub" ]
}

@test "pair prints labelled text by default" {
  mrun -s 0 mesh-keygen pair
  [ "$(wc -l <<< "$output")" -eq 2 ]
  priv=$(sed -n 's/^private_key: //p' <<< "$output")
  pub=$(sed -n 's/^public_key: //p' <<< "$output")
  [ "$(wg pubkey <<< "$priv")" = "$pub" ]
}

@test "genkey -o writes a 0600 file atomically and refuses to overwrite" {
  mrun -s 0 mesh-keygen genkey -o node.key
  [ -z "$output" ]
  [ "$(stat -c %a node.key)" = 600 ]
  key=$(cat node.key)
  mrun -s "$EX_CANTCREATE" mesh-keygen genkey -o node.key
  [[ "$stderr" == "mesh-keygen: error: node.key: file exists (use --force to replace it)" ]]
  [ "$(cat node.key)" = "$key" ]
  mrun -s 0 mesh-keygen genkey -o node.key --force
  [ "$(cat node.key)" != "$key" ]
  [ "$(ls -A | grep -c tmp)" -eq 0 ]
}

@test "pair -o writes the private key and prints the public key" {
  mrun -s 0 mesh-keygen pair -o node.key
  [ "$(wg pubkey < node.key)" = "$output" ]
  mrun -s 0 mesh-keygen pair -o node2.key --json
  [ "$(jq -r .private_key_file <<< "$output")" = node2.key ]
  [ "$(wg pubkey < node2.key)" = "$(jq -r .public_key <<< "$output")" ]
}

@test "-o into a missing directory fails with cant-create and writes nothing" {
  mrun -s "$EX_CANTCREATE" mesh-keygen genkey -o nodir/node.key
  [ -z "$output" ]
  [ ! -e nodir ]
}

@test "writing a secret to a world-readable regular file warns" {
  umask 022
  mesh-keygen genkey > out.key 2> err
  grep -q "mesh-keygen: warning: writing a secret to a file that group or others can read" err
  [[ "$(cat out.key)" =~ ^[A-Za-z0-9+/]{43}=$ ]]
  umask 077
  mesh-keygen genkey > private.key 2> err2
  [ ! -s err2 ]
}

@test "token is URL-safe, random and sized by --bytes" {
  mrun -s 0 mesh-keygen token
  [[ "$output" =~ ^[A-Za-z0-9_-]{43}$ ]]
  first=$output
  mrun -s 0 mesh-keygen token
  [ "$output" != "$first" ]
  mrun -s 0 mesh-keygen token --bytes 16
  [ "${#output}" -eq 22 ]
  mrun -s "$EX_USAGE" mesh-keygen token --bytes 8
  [ -z "$output" ]
  mrun -s 0 mesh-keygen token -o admin.token
  [ "$(stat -c %a admin.token)" = 600 ]
}

@test "pubkey rejects bad input with the data error status and no stdout" {
  good=$(mesh-keygen genkey)
  for bad in "" "not base64 at all" "${good:0:43}" "${good}A" "${good:0:40}!!!=" \
             "$(head -c 16 /dev/urandom | base64)"; do
    mrun -s "$EX_DATAERR" mesh-keygen pubkey <<< "$bad"
    [ -z "$output" ]
    [ "$(wc -l <<< "$stderr")" -eq 1 ]
    [[ "$stderr" == "mesh-keygen: error: "* ]]
  done
  # trailing garbage on a second line
  mrun -s "$EX_DATAERR" mesh-keygen pubkey < <(printf '%s\nextra\n' "$good")
  [ -z "$output" ]
  # empty stdin
  mrun -s "$EX_DATAERR" mesh-keygen pubkey < /dev/null
  [[ "$stderr" == "mesh-keygen: error: no private key on standard input" ]]
}

@test "usage errors exit 64; help and version exit 0" {
  mrun -s "$EX_USAGE" mesh-keygen
  [[ "$stderr" == *"usage: mesh-keygen"* ]]
  mrun -s "$EX_USAGE" mesh-keygen frobnicate
  [[ "$stderr" == "mesh-keygen: error: unknown command 'frobnicate'"* ]]
  mrun -s "$EX_USAGE" mesh-keygen genkey --bogus
  [ -z "$output" ]
  mrun -s 0 mesh-keygen --help
  [[ "$output" == *"genkey"*"pubkey"*"genpsk"*"pair"*"token"* ]]
  mrun -s 0 mesh-keygen genkey --help
  [[ "$output" == *"--output"* ]]
  mrun -s 0 mesh-keygen --version
  [[ "$output" == "mesh-keygen "* ]]
}

@test "man page documents every verb and exit status" {
  man_page="$MESH_ROOT/man/mesh-keygen.1"
  for verb in genkey pubkey genpsk pair token; do grep -q "^\.B $verb" "$man_page"; done
  for code in 0 64 65 66 73 74; do grep -q "^\.B $code\$" "$man_page"; done
  mrun -s 0 man -l "$man_page"
  [[ "$output" == *"EXIT STATUS"* ]]
}
