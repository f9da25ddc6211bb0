#!/usr/bin/env bats
# Node key rotation (mesh-coord rotate-key): the peer keeps its id, name,
# addresses and groups; peers get the new key by push; replayed, forged and
# colliding rotations are refused; an interrupted rotation is finished by the
# next run.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  coord_key k --reusable --group g
  printf '{"groups":{"g":{}},"rules":[{"src":["g"],"dst":["g"]}]}' >p.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" p.json
  coord_join a k
  coord_join b k
  # a's files laid out as mesh-up keeps them.
  mkdir -m 700 st
  cp a.key st/node.key
  cp a.json st/registration.json
  OLD=$(mesh-keygen pubkey <a.key)
}

lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; }
rotations() {
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action peer.rotate-key
  grep -c . <<<"$output" || true
}

@test "rotate-key keeps id, name, addresses and groups and pushes the new key to peers" {
  start_daemon watch mesh-coord watch --registration b.json --key b.key --cache b.cache
  wait_until 10 has_lines watch.out 1
  [ "$(head -1 watch.out | jq -r '.peers[] | select(.name == "a") | .public_key')" = "$OLD" ]
  sleep 0.3   # parked in its long-poll

  mrun -s 0 mesh-coord rotate-key --state st
  NEW=$(jq -r .public_key <<<"$output")
  [ "$NEW" != "$OLD" ]
  [ "$(jq -r .previous_public_key <<<"$output")" = "$OLD" ]
  [ "$(jq -r .resumed <<<"$output")" = false ]
  for f in id name addresses groups listen_port; do
    [ "$(jq -c ".$f" <<<"$output")" = "$(jq -c ".$f" a.json)" ]
  done
  # The files: the new key (0600) in place, nothing pending, registration
  # and map of the new key.
  [ "$(mesh-keygen pubkey <st/node.key)" = "$NEW" ]
  [ "$(stat -c %a st/node.key)" = 600 ]
  [ ! -e st/node.key.new ]
  [ "$(jq -r .public_key st/registration.json)" = "$NEW" ]
  [ "$(jq -r .server st/registration.json)" = "$COORD_URL" ]
  [ "$(jq -r .self.public_key st/map.json)" = "$NEW" ]
  [ "$(jq -c .self.addresses st/map.json)" = "$(jq -c .addresses a.json)" ]
  [ "$(stat -c %a st/map.json)" = 600 ]

  # b's watcher is pushed a map with a's new key, same name and addresses.
  wait_until 5 has_lines watch.out 2
  [ "$(sed -n 2p watch.out | jq -r '.peers[] | select(.name == "a") | .public_key')" = "$NEW" ]
  [ "$(sed -n 2p watch.out | jq -c '.peers[] | select(.name == "a") | .addresses')" = \
    "$(head -1 watch.out | jq -c '.peers[] | select(.name == "a") | .addresses')" ]
  [ "$(sed -n 2p watch.out | jq .serial)" -gt "$(head -1 watch.out | jq .serial)" ]

  # The old key is refused from now on, the new one works.
  mrun -s 77 mesh-coord map --registration a.json --key a.key
  [[ "$stderr" == *"not enrolled"* ]]
  mrun -s 0 mesh-coord map --registration st/registration.json --key st/node.key
  [ "$(jq -r '[.peers[].name] | join(",")' <<<"$output")" = b ]

  # The admin sees the same peer (id) with the new key; one audit event.
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '.peers[] | select(.name == "a") | "\(.id) \(.public_key)"' <<<"$output")" = \
    "$(jq -r .id a.json) $NEW" ]
  [ "$(jq -r '.peers | length' <<<"$output")" = 2 ]
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action peer.rotate-key
  [ "$(grep -c . <<<"$output")" = 1 ]
  [ "$(jq -r '"\(.actor) \(.target) \(.detail.from) \(.detail.to) \(.detail.maps_changed)"' <<<"$output")" = \
    "peer:a a $OLD $NEW 2" ]

  # The swap survives a restart of the coordinator.
  kill "$coord_pid"; wait "$coord_pid" || true
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord2
  mrun -s 0 mesh-coord map --registration st/registration.json --key st/node.key
  mrun -s 77 mesh-coord map --registration a.json --key a.key
}

@test "a replayed or forged rotation is refused" {
  CAPTURE_MATCH=" request POST " capture mesh-coord rotate-key --state st
  [[ "$REQ_URL" == */v1/rotate-key ]]
  [ "$REQ_KEY" = "$OLD" ]
  NEW=$(jq -r .public_key capture.out)
  [ "$(mesh-keygen pubkey <st/node.key)" = "$NEW" ]
  # The captured request again: the old key it is signed with is no longer
  # enrolled (403); with another nonce its signature fails (401). The peer
  # keeps the key it rotated to.
  [ "$(replay "" @body.bin)" = 403 ]
  [[ "$(jq -r .error.message resp.json)" == *"not enrolled"* ]]
  [ "$(replay AAAAAAAAAAAAAAAAAAAAAA @body.bin)" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"bad request signature"* ]]
  [ "$(rotations)" = 1 ]
  mrun -s 0 mesh-coord map --registration st/registration.json --key st/node.key
  [ "$(jq -r .self.public_key <<<"$output")" = "$NEW" ]

  # Signed by a key that is not enrolled (the old one, or a stranger's).
  mesh-keygen genkey -o stranger.key
  mrun -s 77 mesh-coord rotate-key --registration a.json --key a.key
  [[ "$stderr" == *"not enrolled"* ]]
  mrun -s 77 mesh-coord rotate-key --registration a.json --key stranger.key
  [ "$(rotations)" = 1 ]
}

@test "a new key already in use by another peer is refused" {
  # A pending new key that is b's: the coordinator refuses it (409).
  cp b.key st/node.key.new
  mrun -s 65 mesh-coord rotate-key --state st
  [[ "$stderr" == *"public_key: already in use by a peer"* ]]
  # Nothing changed, and the unusable pending key is gone.
  [ "$(mesh-keygen pubkey <st/node.key)" = "$OLD" ]
  [ ! -e st/node.key.new ]
  [ "$(rotations)" = 0 ]
  # That request replayed: refused as a replay (the old key is still enrolled).
  cp b.key st/node.key.new
  CAPTURE_MATCH=" request POST " capture mesh-coord rotate-key --state st
  [ "$(replay "" @body.bin)" = 401 ]
  [[ "$(jq -r .error.message resp.json)" == *"replayed request"* ]]
  [ ! -e st/node.key.new ]
  mrun -s 0 mesh-coord map --registration b.json --key b.key
  [ "$(jq -r '.peers[] | select(.name == "a") | .public_key' <<<"$output")" = "$OLD" ]
  # The next run makes a fresh key and succeeds.
  mrun -s 0 mesh-coord rotate-key --state st
  [ "$(jq -r .public_key <<<"$output")" != "$(mesh-keygen pubkey <b.key)" ]
  [ "$(rotations)" = 1 ]
}

@test "an interrupted rotation is finished by the next run" {
  # 1. Interrupted before the coordinator was asked: KEY.new is used.
  mesh-keygen genkey -o st/node.key.new
  P1=$(mesh-keygen pubkey <st/node.key.new)
  mrun -s 0 mesh-coord rotate-key --state st
  [ "$(jq -r .public_key <<<"$output")" = "$P1" ]
  [ "$(jq -r .resumed <<<"$output")" = true ]
  [ "$(mesh-keygen pubkey <st/node.key)" = "$P1" ]

  # 2. Interrupted after the swap, before the files: the answer was lost.
  # Put the files back as they were before the rename.
  cp st/node.key before.key
  cp st/registration.json before.json
  mesh-keygen genkey -o st/node.key.new
  cp st/node.key.new pending.key
  P2=$(mesh-keygen pubkey <pending.key)
  mrun -s 0 mesh-coord rotate-key --state st
  [ "$(mesh-keygen pubkey <st/node.key)" = "$P2" ]
  cp before.key st/node.key
  cp before.json st/registration.json
  cp pending.key st/node.key.new
  rm st/map.json
  MESH_LOG=info mrun -s 0 mesh-coord rotate-key --state st
  [[ "$stderr" == *"holds the new key already"* ]]
  [ "$(jq -r .public_key <<<"$output")" = "$P2" ]
  [ "$(jq -r .previous_public_key <<<"$output")" = "$P1" ]
  [ "$(jq -r .resumed <<<"$output")" = true ]
  [ "$(mesh-keygen pubkey <st/node.key)" = "$P2" ]
  [ ! -e st/node.key.new ]
  [ "$(jq -r .public_key st/registration.json)" = "$P2" ]
  [ "$(jq -r .self.public_key st/map.json)" = "$P2" ]
  [ "$(rotations)" = 2 ]

  # 3. The coordinator is down: nothing changes but KEY.new, which the next
  # run (coordinator back) uses.
  kill "$coord_pid"; wait "$coord_pid" || true
  mrun -s 69 mesh-coord rotate-key --state st
  [ "$(mesh-keygen pubkey <st/node.key)" = "$P2" ]
  [ "$(stat -c %a st/node.key.new)" = 600 ]
  P3=$(mesh-keygen pubkey <st/node.key.new)
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord2
  mrun -s 0 mesh-coord rotate-key --state st
  [ "$(jq -r .public_key <<<"$output")" = "$P3" ]
  [ "$(jq -r .resumed <<<"$output")" = true ]
}

@test "rotate-key usage errors" {
  mrun -s 64 mesh-coord rotate-key
  [[ "$stderr" == *"--state DIR or --key FILE"* ]]
  mrun -s 64 mesh-coord rotate-key --state st --key a.key
  mrun -s 66 mesh-coord rotate-key --state nonexistent
  [ ! -e nonexistent ]
  [ "$(rotations)" = 0 ]
}

@test "coordinator key rotation: keys pinned to the previous key work during the overlap, not after" {
  K1=$(cat "$COORD_STATE/coordinator.pub")
  coord_key pinned --reusable --group g        # SECRET.K1
  cp a.json a-k1.json
  kill "$coord_pid"; wait "$coord_pid" || true
  mv "$COORD_STATE/coordinator.key" prev.key
  # The overlap: until 10 s from now.
  until=$(( $(date +%s) + 10 ))
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord2 \
    --previous-coordinator-key prev.key --previous-key-until "$until"
  K2=$(cat "$COORD_STATE/coordinator.pub")
  [ "$K2" != "$K1" ]
  curl -sf "$COORD_URL/v1/info" >info.json
  [ "$(jq -r .coordinator_public_key info.json)" = "$K2" ]
  [ "$(jq -r .previous_coordinator_public_key info.json)" = "$K1" ]
  [ "$(jq -r .previous_key_until info.json)" = "$until" ]

  # A setup key pinned to K1 enrols; the registration (authenticated by K1)
  # carries K2.
  mesh-keygen genkey -o c.key
  mrun -s 0 mesh-coord join --server "$COORD_URL" --setup-key-file pinned.sk --key c.key --name c
  [ "$(jq -r .coordinator_public_key <<<"$output")" = "$K2" ]
  # A node pinned to K1 still works, and learns K2 from its registration.
  mrun -s 0 mesh-coord map --registration a.json --key a.key
  mrun -s 0 mesh-coord refresh --registration a.json --key a.key
  [ "$(jq -r .coordinator_key_changed <<<"$output")" = true ]
  [ "$(jq -r .coordinator_public_key a.json)" = "$K2" ]
  [ "$(jq -r .name a.json) $(jq -r .server a.json)" = "a $COORD_URL" ]
  mrun -s 0 mesh-coord refresh --registration a.json --key a.key
  [ "$(jq -r .coordinator_key_changed <<<"$output")" = false ]
  mrun -s 0 mesh-coord map --registration a.json --key a.key
  # A node still pinned to K1 rotates its own key during the overlap.
  cp b.json b-k1.json
  mkdir -m 700 stb; cp b.key stb/node.key; cp b.json stb/registration.json
  mrun -s 0 mesh-coord rotate-key --state stb
  [ "$(jq -r .public_key <<<"$output")" = "$(mesh-keygen pubkey <stb/node.key)" ]
  [ "$(jq -r .coordinator_public_key stb/registration.json)" = "$K2" ]
  [ "$(jq -r .self.public_key stb/map.json)" = "$(mesh-keygen pubkey <stb/node.key)" ]
  # mesh-up's layout.
  mrun -s 0 mesh-coord refresh --state st
  [ "$(jq -r .coordinator_public_key st/registration.json)" = "$K2" ]

  # After the overlap, K1 is refused: the pinned setup key, the old registration.
  while [ "$(date +%s)" -lt "$until" ]; do sleep 0.2; done
  mesh-keygen genkey -o d.key
  mrun -s 77 mesh-coord join --server "$COORD_URL" --setup-key-file pinned.sk --key d.key --name d
  mrun -s 77 mesh-coord map --registration a-k1.json --key a.key
  mrun -s 0 mesh-coord map --registration a.json --key a.key
  mrun -s 0 mesh-coord peer list --server "$COORD_URL" --json
  [ "$(jq -r '[.peers[].name] | sort | join(",")' <<<"$output")" = "a,b,c" ]
  curl -sf "$COORD_URL/v1/info" >info.json
  [ "$(jq -r 'has("previous_coordinator_public_key")' info.json)" = false ]
  # New setup keys carry K2.
  coord_key fresh --group g
  [ "$(cut -d. -f2 fresh.sk)" = "$(printf '%s' "$K2" | tr '+/' '-_' | tr -d '=')" ]
}

@test "coordinator key rotation: bad previous-key options" {
  kill "$coord_pid"; wait "$coord_pid" || true
  mrun -s 64 mesh-coord serve --state "$COORD_STATE" --previous-coordinator-key "$COORD_STATE/coordinator.key"
  mrun -s 64 mesh-coord serve --state "$COORD_STATE" --previous-coordinator-key x --previous-key-until tomorrow
  # The current key as the previous one: refused, nothing started.
  mrun -s 78 mesh-coord serve --state "$COORD_STATE" \
    --previous-coordinator-key "$COORD_STATE/coordinator.key" --previous-key-until 2099-01-01T00:00:00Z
  [[ "$stderr" == *"is the current coordinator key"* ]]
  mrun -s 66 mesh-coord refresh --state nonexistent
}
