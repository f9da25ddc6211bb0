#!/usr/bin/env bash
# Regenerates the captured coturn replies used by tests/unit/stun_test.cpp:
# runs coturn's turnserver (STUN only, RFC 5780 on two addresses) in a
# throwaway network namespace, sends it Binding requests with
# `mesh-punch stun` (IPv4 and IPv6), captures the traffic with tcpdump and
# stores each server reply's UDP payload as coturn-*.bin.
# Usage (root): tests/unit/data/capture-coturn.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")"
bin=$(cd ../../.. && pwd)/${1:-build}
ns="mcap$$"
tmp=$(mktemp -d)
cleanup() {
  [ -f "$tmp/turn.pid" ] && kill "$(cat "$tmp/turn.pid")" 2>/dev/null || true
  [ -n "${dump:-}" ] && kill "$dump" 2>/dev/null || true
  sleep 0.2
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add 203.0.113.1/32 dev lo
ip -n "$ns" addr add 203.0.113.2/32 dev lo
ip -n "$ns" addr add 2001:db8::1/128 dev lo nodad
ip netns exec "$ns" tcpdump -i lo -U -s 0 -w "$tmp/cap.pcap" 'udp and (port 3478 or port 3479)' \
  >/dev/null 2>&1 &
dump=$!
ip netns exec "$ns" turnserver -n --no-cli --stun-only -L 203.0.113.1 -L 203.0.113.2 \
  -L 2001:db8::1 -p 3478 --alt-listening-port 3479 --no-tls --no-dtls --log-file stdout \
  --simple-log --pidfile "$tmp/turn.pid" --db "$tmp/turndb" >"$tmp/turn.log" 2>&1 &
for _ in $(seq 1 100); do
  ip netns exec "$ns" ss -Hunl | grep -q '203.0.113.2:3479' && break
  sleep 0.1
done
sleep 0.5
ip netns exec "$ns" "$bin/mesh-punch" stun --server 203.0.113.1:3478 --port 40000 --json >/dev/null
ip netns exec "$ns" "$bin/mesh-punch" stun --server '[2001:db8::1]:3478' --port 40006 --json \
  >/dev/null || true
sleep 0.5
kill "$dump"; wait "$dump" 2>/dev/null || true; dump=
# Extract the payloads of the server's replies (source port 3478/3479).
python3 - "$tmp/cap.pcap" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
magic = struct.unpack('<I', data[:4])[0]
endian = '<' if magic in (0xa1b2c3d4, 0xa1b23c4d) else '>'
linktype = struct.unpack(endian + 'I', data[20:24])[0]
off, n = 24, 0
names = {}
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(endian + 'IIII', data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if linktype == 1: pkt = pkt[14:]          # Ethernet
    elif linktype == 113: pkt = pkt[16:]      # Linux cooked
    elif linktype == 276: pkt = pkt[20:]      # Linux cooked v2
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 15) * 4; udp = pkt[ihl:]; fam = 'v4'
    else:
        udp = pkt[40:]; fam = 'v6'
    sport, dport, ulen = struct.unpack('>HHH', udp[:6])
    payload = udp[8:ulen]
    if sport not in (3478, 3479) or len(payload) < 20: continue
    req_kind = 'binding'
    # Name replies: the first reply per (family, source port, class).
    cls = ((payload[0] & 1) << 1) | ((payload[1] >> 4) & 1)
    key = (fam, sport, cls)
    if key in names: continue
    name = 'coturn-%s-%s-from%d.bin' % ('success' if cls == 2 else 'error', fam, sport)
    names[key] = name
    open(name, 'wb').write(payload)
    print(name, len(payload))
PY
