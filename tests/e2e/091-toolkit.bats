#!/usr/bin/env bats
# The toolkit as a whole: mesh-up's command line, man pages for every program
# and format, bash completion, and the integration files.

load helpers

setup() { cd "$BATS_TEST_TMPDIR"; }

@test "mesh-up: help, and usage errors exit 64 with one-line errors" {
  mrun -s 0 mesh-up --help
  [[ "$output" == *"--server URL [--server URL...] --setup-key-file FILE --interface IF --state DIR"* ]]
  mrun -s "$EX_USAGE" mesh-up --interface x
  [[ "$stderr" == "mesh-up: error: --interface and --state are required"* ]]
  mrun -s "$EX_USAGE" mesh-up --bogus
  [[ "$stderr" == "mesh-up: error: unknown option '--bogus'"* ]]
  mrun -s "$EX_USAGE" mesh-up --interface x --state st --punch-interval soon
  mrun -s "$EX_USAGE" mesh-up --interface x --state st --exit-node
  [[ "$stderr" == "mesh-up: error: --exit-node: expected a peer name"* ]]
  mrun -s 0 mesh-up --help
  [[ "$output" == *"--exit-node NAME"* ]]
  # Not enrolled yet and no server given: nothing to do.
  mrun -s "$EX_USAGE" mesh-up --interface x --state st
  [[ "$stderr" == *"not enrolled yet"* ]]
  [ -s st/node.key ]
  [ "$(stat -c %a st/node.key)" = 600 ]
}

@test "mesh-up: an unreachable coordinator at enrolment exits 69 and leaves no registration" {
  echo "not-a-real-key" > sk
  mrun -T 60 -s "$EX_UNAVAILABLE" mesh-up --server http://127.0.0.1:9 --setup-key-file sk \
    --interface x --state st
  [ ! -e st/registration.json ]
}

@test "every program and file format has a man page with the required sections" {
  for p in mesh-keygen.1 mesh-coord.8 mesh-punch.1 mesh-relay.1 mesh-apply.8 mesh-up.8; do
    f="$MESH_ROOT/man/$p"
    [ -f "$f" ] || { echo "missing $p"; false; }
    mrun -s 0 man -l "$f"
    for sec in NAME SYNOPSIS DESCRIPTION "OUTPUT FORMAT" "EXIT STATUS" EXAMPLES; do
      [[ "$output" == *"$sec"* ]] || { echo "$p: no $sec"; false; }
    done
  done
  for p in mesh-netmap.5 mesh-endpoints.5 mesh-policy.5 mesh.7; do
    [ -f "$MESH_ROOT/man/$p" ] || { echo "missing $p"; false; }
    mrun -s 0 man -l "$MESH_ROOT/man/$p"
  done
}

@test "every program's EXIT STATUS section lists the shared codes it uses" {
  for p in mesh-keygen.1 mesh-coord.8 mesh-punch.1 mesh-relay.1 mesh-apply.8 mesh-up.8; do
    section=$(MANWIDTH=100 man -l "$MESH_ROOT/man/$p" 2>/dev/null | sed -n '/^EXIT STATUS/,/^[A-Z][A-Z ]*$/p')
    for code in 0 64; do
      grep -Eq "^ +$code( |\$)" <<<"$section" || { echo "$p: EXIT STATUS lacks $code"; echo "$section"; false; }
    done
  done
}

@test "bash completion offers each program's verbs and a verb's options" {
  source "$MESH_ROOT/dist/bash-completion/mesh"
  complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _mesh_complete; echo "${COMPREPLY[*]}"; }
  has() { local w; for w in "${@:2}"; do [[ " $1 " == *" $w "* ]] || { echo "no '$w' in: $1"; return 1; }; done; }
  [[ "$(complete_words mesh-keygen "")" == "genkey pubkey genpsk pair token" ]]
  has "$(complete_words mesh-coord "")" serve join map watch announce punch setup-key peer policy events
  has "$(complete_words mesh-punch "")" stun probe
  has "$(complete_words mesh-relay "")" serve client
  has "$(complete_words mesh-coord join --)" --server --setup-key-file --key
  has "$(complete_words mesh-apply --)" --interface --endpoints --dry-run
  has "$(complete_words mesh-up --)" --server --state --interface
}

@test "systemd units and the cron example name real options" {
  grep -q -- '--state /var/lib/mesh-coord' "$MESH_ROOT/dist/systemd/mesh-coord.service"
  mesh-coord serve --help | grep -q -- --relay-secret-file
  mesh-relay serve --help | grep -q -- --auth-secret-file
  mesh-apply --help | grep -q -- --endpoints
  grep -q -- '--endpoints' "$MESH_ROOT/dist/cron/mesh-apply"
}

@test "mesh-up: a second agent on the same state directory exits 75 and touches nothing" {
  mkdir -p "$BATS_TEST_TMPDIR/st"
  bash -c 'exec -a mesh-up sleep 30' &
  other=$!
  printf '{"version":1,"pid":%d,"interface":"x"}\n' "$other" > "$BATS_TEST_TMPDIR/st/agent.json"
  mrun -s 75 mesh-up --interface x --state "$BATS_TEST_TMPDIR/st"
  [[ "$stderr" == "mesh-up: error: another mesh-up (pid $other) runs with --state"* ]]
  [ ! -e "$BATS_TEST_TMPDIR/st/node.key" ]
  kill "$other"; wait "$other" || true
  # Once it is gone, the same command goes on (and stops at the enrolment).
  mrun -s "$EX_USAGE" mesh-up --interface x --state "$BATS_TEST_TMPDIR/st"
}
