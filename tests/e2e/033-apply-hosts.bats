#!/usr/bin/env bats
# DNS names for peers: a real coordinator's maps carry dns.domain, and
# mesh-apply keeps a marked block of the node's hosts file, which the
# system resolver (getent) answers from. In a namespace, `ip netns exec`
# bind-mounts /etc/netns/NS/hosts over /etc/hosts (netns_add gives each
# namespace its own), so nothing here touches the machine's /etc/hosts.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

setup() {
  require_root
  cd "$BATS_TEST_TMPDIR"
  D=$BATS_TEST_TMPDIR
  netns_add a
  NS=${MESH_RUN}a
  NA=(ip netns exec "$NS")
  IFA=$(wg_name ha)
  HOSTS=/etc/netns/$NS/hosts
  on_teardown "nsx a mesh-apply down --interface $IFA --hosts-file none >/dev/null 2>&1"
  # The user's own file: a comment, odd spacing, a blank line.
  printf '127.0.0.1\tlocalhost\n# hand-written, keep me\n192.0.2.7   printer.lan printer\n\n::1 localhost ip6-localhost\n' >"$HOSTS"
  chmod 0644 "$HOSTS"
  cp "$HOSTS" "$D/hosts.orig"
}

# enrol NAMES...: peers joined with one reusable key; a policy lets
# everyone reach everyone, so every map lists every other peer.
enrol() {
  coord_key all --reusable --group nodes
  local n
  for n in "$@"; do coord_join "$n" all; done
  printf '%s\n' '{"groups": {"nodes": {}}, "rules": [{"name": "all", "src": ["nodes"], "dst": ["nodes"], "proto": "any"}]}' >policy.json
  mrun -s 0 mesh-coord policy set --server "$COORD_URL" policy.json
}

addr() { jq -r ".addresses[$2] | split(\"/\")[0]" "$D/$1.json"; }

# apply_map [mesh-apply options...]: a's current map from the coordinator, applied in a's namespace.
apply_map() {
  coord_map a
  printf '%s\n' "$output" >"$D/a.map"
  mrun -s 0 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$@" "$D/a.map"
}

# The hosts file without mesh-apply's block for $IFA.
outside_block() { sed "/^# BEGIN mesh-apply $IFA\( \|\$\)/,/^# END mesh-apply $IFA\$/d" "$1"; }

resolves_v4() { [ "$(nsx a getent ahostsv4 "$1" | awk 'NR == 1 {print $1}')" = "$2" ]; }

@test "peers' names resolve in the namespace; deletes and renames follow the map; down removes the block" {
  coord_start coord
  enrol a b c
  apply_map
  [ "$(jq -r .hosts.file <<<"$output")" = /etc/hosts ]
  [ "$(jq -r .hosts.changed <<<"$output")" = true ]
  [ "$(jq -r .hosts.names <<<"$output")" = 6 ]  # a, b and c, IPv4 and IPv6 each
  [ "$(jq -r .dns.domain "$D/a.map")" = mesh ]
  # The system resolver answers, from the namespace's own hosts file.
  resolves_v4 b.mesh "$(addr b 0)"
  resolves_v4 c.mesh "$(addr c 0)"
  resolves_v4 a.mesh "$(addr a 0)"  # the node's own name too
  mrun -s 0 "${NA[@]}" getent ahostsv6 b.mesh
  [[ "$output" == *"$(addr b 1)"* ]]
  mrun -s 2 "${NA[@]}" getent hosts nobody.mesh
  # Only the block is ours: the rest of the file is byte for byte the user's.
  diff <(outside_block "$HOSTS") "$D/hosts.orig"
  [ "$(stat -c %a "$HOSTS")" = 644 ]
  grep -qx "$(addr b 0)	b.mesh" "$HOSTS"
  # The machine's own /etc/hosts never saw a block.
  ! grep -q "mesh-apply $IFA" /etc/hosts || false

  # The same map again: nothing to write.
  before=$(stat -c %Y.%y "$HOSTS")
  mrun -s 0 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.map"
  [ "$(jq -r .hosts.changed <<<"$output")" = false ]
  [ "$(jq -r .changed <<<"$output")" = false ]
  [ "$(stat -c %Y.%y "$HOSTS")" = "$before" ]

  # A deleted peer's name disappears with the next map.
  mrun -s 0 mesh-coord peer delete --server "$COORD_URL" c
  apply_map
  [ "$(jq -r .hosts.changed <<<"$output")" = true ]
  mrun -s 2 "${NA[@]}" getent hosts c.mesh
  resolves_v4 b.mesh "$(addr b 0)"

  # A renamed peer: the new name appears, the old one goes.
  mrun -s 0 mesh-coord peer rename --server "$COORD_URL" b db1
  apply_map
  resolves_v4 db1.mesh "$(addr b 0)"
  mrun -s 2 "${NA[@]}" getent hosts b.mesh
  diff <(outside_block "$HOSTS") "$D/hosts.orig"

  # A hand edit inside the block is repaired by the next run (the memo
  # does not vouch for the file).
  sed -i "s/	db1.mesh/	evil.mesh/" "$HOSTS"
  mrun -s 0 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.map"
  [ "$(jq -r .hosts.changed <<<"$output")" = true ]
  resolves_v4 db1.mesh "$(addr b 0)"
  mrun -s 2 "${NA[@]}" getent hosts evil.mesh

  # down removes the block and leaves exactly the user's file.
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA"
  [ "$(jq -r .hosts.changed <<<"$output")" = true ]
  [ "$(jq -r .hosts.file <<<"$output")" = /etc/hosts ]
  cmp "$HOSTS" "$D/hosts.orig"
  [ "$(stat -c %a "$HOSTS")" = 644 ]
  mrun -s 2 "${NA[@]}" getent hosts db1.mesh
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA"
  [ "$(jq -r .hosts.changed <<<"$output")" = false ]
}

@test "a hosts file of its own is replaced atomically and keeps its mode (0644 and 0640)" {
  coord_start coord
  enrol a b
  printf '127.0.0.1 localhost\n# mine\n' >"$D/hosts"
  chmod 0644 "$D/hosts"
  cp "$D/hosts" "$D/hosts.orig"
  ino=$(stat -c %i "$D/hosts")
  # Under umask 077 a naive temporary file would come out 0600.
  (umask 077; apply_map --hosts-file "$D/hosts")
  [ "$(stat -c %a "$D/hosts")" = 644 ]
  [ "$(stat -c %i "$D/hosts")" != "$ino" ]  # renamed into place, not written over
  grep -qx "$(addr b 0)	b.mesh" "$D/hosts"
  diff <(outside_block "$D/hosts") "$D/hosts.orig"
  # Nothing left behind in the directory.
  [ -z "$(find "$D" -maxdepth 1 -name '.hosts.mesh-apply.*')" ]
  # The namespace's /etc/hosts was left alone with another file named.
  ! grep -q "mesh-apply" "$HOSTS" || false
  chmod 0640 "$D/hosts"
  mrun -s 0 "${NA[@]}" mesh-apply down --interface "$IFA" --hosts-file "$D/hosts"
  [ "$(jq -r .hosts.changed <<<"$output")" = true ]
  cmp "$D/hosts" "$D/hosts.orig"
  [ "$(stat -c %a "$D/hosts")" = 640 ]
}

@test "a damaged block is refused (78) before anything is touched; --hosts-file none leaves the file alone" {
  coord_start coord
  enrol a b
  coord_map a
  printf '%s\n' "$output" >"$D/a.map"
  # A start marker without its end: rewriting would eat the user's lines.
  printf '# BEGIN mesh-apply %s\n100.64.0.9\told.mesh\n192.0.2.8 mine\n' "$IFA" >>"$HOSTS"
  cp "$HOSTS" "$D/hosts.damaged"
  mrun -s "$EX_CONFIG" "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" "$D/a.map"
  [[ "$stderr" == "mesh-apply: error: /etc/hosts: line 6: '# BEGIN mesh-apply $IFA' without '# END mesh-apply $IFA' after it"* ]]
  cmp "$HOSTS" "$D/hosts.damaged"
  # Nothing was touched: no interface.
  ! ip -n "$NS" link show "$IFA" 2>/dev/null || false
  mrun -s "$EX_CONFIG" "${NA[@]}" mesh-apply down --interface "$IFA"
  cmp "$HOSTS" "$D/hosts.damaged"
  # Without a hosts file to manage, the run goes ahead and leaves it as it is.
  mrun -s 0 "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" --hosts-file none "$D/a.map"
  [ "$(jq -r .hosts.file <<<"$output")" = null ]
  [ "$(jq -r .hosts.changed <<<"$output")" = false ]
  ip -n "$NS" link show "$IFA" >/dev/null
  cmp "$HOSTS" "$D/hosts.damaged"
  mrun -s "$EX_USAGE" "${NA[@]}" mesh-apply --interface "$IFA" --key "$D/a.key" --hosts-file "" "$D/a.map"
}

@test "the coordinator's --dns-domain: validated, kept across restarts, a change gives every map a new serial" {
  COORD_STATE=$D/state
  mrun -s "$EX_USAGE" mesh-coord serve --state "$D/bad" --dns-domain my_mesh
  [[ "$stderr" == *"--dns-domain my_mesh: expected a DNS name"* ]]
  mrun -s "$EX_USAGE" mesh-coord serve --state "$D/bad" --dns-domain "a..b"
  coord_start coord --dns-domain Corp.Example.
  enrol a b
  coord_map a
  [ "$(jq -r .dns.domain <<<"$output")" = corp.example ]
  serial=$(jq -r .serial <<<"$output")
  apply_map
  resolves_v4 b.corp.example "$(addr b 0)"

  # Restarted without the option: the stored domain, the same serial.
  kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord
  coord_map a
  [ "$(jq -r .dns.domain <<<"$output")" = corp.example ]
  [ "$(jq -r .serial <<<"$output")" = "$serial" ]

  # Restarted with another domain: a new serial for every map, so watchers
  # and mesh-up pick it up; the audit log says so.
  kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true
  COORD_LISTEN=127.0.0.1:$COORD_PORT coord_start coord --dns-domain mesh
  coord_map a
  [ "$(jq -r .dns.domain <<<"$output")" = mesh ]
  [ "$(jq -r .serial <<<"$output")" -gt "$serial" ]
  coord_map b
  [ "$(jq -r .serial <<<"$output")" -gt "$serial" ]
  mrun -s 0 mesh-coord events --server "$COORD_URL" --action dns.domain --json
  [ "$(jq -r '[.events[] | select(.target == "mesh" and .detail.previous == "corp.example")] | length' <<<"$output")" = 1 ]
  apply_map
  resolves_v4 b.mesh "$(addr b 0)"
  mrun -s 2 "${NA[@]}" getent hosts b.corp.example
}
