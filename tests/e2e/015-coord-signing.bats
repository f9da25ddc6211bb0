#!/usr/bin/env bats
# The request/response authentication scheme of mesh-coord(8), implemented
# independently with the openssl command line: proves the documented scheme
# is the one the coordinator speaks, and exercises the staleness check with
# a correctly signed old request.

bats_require_minimum_version 1.5.0
load helpers
load 010-coord

hex() { od -An -tx1 -v | tr -d ' \n'; }
unhex() { tr 'a-f' 'A-F' | basenc --base16 -d; }
priv_pem() { { printf '302e020100300506032b656e04220420'; base64 -d <"$1" | hex; } | unhex | openssl pkey -inform DER -out "$2"; }
pub_pem() { { printf '302a300506032b656e032100'; printf %s "$1" | base64 -d | hex; } | unhex | openssl pkey -pubin -inform DER -out "$2"; }

setup() {
  cd "$BATS_TEST_TMPDIR"
  coord_start coord
  coord_key k
  coord_join a k
  CP=$(cat state/coordinator.pub)
  NP=$(jq -r .public_key a.json)
  priv_pem a.key a.pem
  pub_pem "$CP" coord.pem
  SS=$(openssl pkeyutl -derive -inkey a.pem -peerkey coord.pem | hex)
  { printf 'mesh-coord v1 request'; printf %s "$NP" | base64 -d; printf %s "$CP" | base64 -d; } >req.lbl
  { printf 'mesh-coord v1 response'; printf %s "$NP" | base64 -d; printf %s "$CP" | base64 -d; } >res.lbl
  KREQ=$(openssl mac -macopt "hexkey:$SS" -macopt size:32 -in req.lbl BLAKE2BMAC | tr 'A-F' 'a-f')
  KRES=$(openssl mac -macopt "hexkey:$SS" -macopt size:32 -in res.lbl BLAKE2BMAC | tr 'A-F' 'a-f')
}

hmac() { openssl mac -digest SHA256 -macopt "hexkey:$1" -binary -in "$2" HMAC | base64; }

signed_get() {  # signed_get TARGET TIME NONCE -> $code, body in resp.body, headers in resp.hdr
  printf 'MESH-REQ-V1\nGET\n%s\n%s\n%s\n%s' "$1" "$2" "$3" "$(printf '' | sha256sum | cut -d' ' -f1)" >msg
  code=$(curl -s -D resp.hdr -o resp.body -w '%{http_code}' "$COORD_URL$1" \
    -H "X-Mesh-Key: $NP" -H "X-Mesh-Time: $2" -H "X-Mesh-Nonce: $3" \
    -H "X-Mesh-Auth: $(hmac "$KREQ" msg)")
}

@test "a request signed per the man page gets a map whose response MAC verifies" {
  t=$(date +%s)
  signed_get /v1/map "$t" QUFBQUFBQUFBQUFBQUFBQQ
  [ "$code" = 200 ]
  [ "$(jq -r .self.name resp.body)" = a ]
  got=$(sed -n 's/^X-Mesh-Auth: //Ip' resp.hdr | tr -d '\r')
  printf 'MESH-RES-V1\n200\n%s\n%s' QUFBQUFBQUFBQUFBQUFBQQ "$(sha256sum <resp.body | cut -d' ' -f1)" >rmsg
  [ "$got" = "$(hmac "$KRES" rmsg)" ]
  # The same request again is a replay.
  signed_get /v1/map "$t" QUFBQUFBQUFBQUFBQUFBQQ
  [ "$code" = 401 ]
  [[ "$(jq -r .error.message resp.body)" == *"replayed"* ]]
}

@test "a correctly signed but stale or future request is refused" {
  signed_get /v1/map "$(( $(date +%s) - 120 ))" QkJCQkJCQkJCQkJCQkJCQg
  [ "$code" = 401 ]
  [[ "$(jq -r .error.message resp.body)" == *"stale request"* ]]
  signed_get /v1/map "$(( $(date +%s) + 120 ))" Q0NDQ0NDQ0NDQ0NDQ0NDQw
  [ "$code" = 401 ]
  [[ "$(jq -r .error.message resp.body)" == *"stale request"* ]]
  # Within the window it works.
  signed_get "/v1/map?since=0&wait=0" "$(( $(date +%s) - 30 ))" RERERERERERERERERERERA
  [ "$code" = 200 ]
}
