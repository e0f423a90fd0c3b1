#!/usr/bin/env bash
# Regenerates crates/skiff/hot-code.txt: the functions an idle, joined node agent runs, which
# the build lays out together at the start of the binary's code (see crates/skiff/build.rs and
# docs/adr/0010). Run as root on Linux after a release build; needs valgrind and python3.
#
#   scripts/hot-code.sh [path/to/release/skiff] [seconds to record, default 200]
#
# It starts `skiff server --disable-agent` and a joined `skiff agent` in network, mount and PID
# namespaces of their own, lets the agent start for 25 s, then records (callgrind) every
# function of the `skiff` binary the agent runs for the given time: lease renewals, node
# status posts, watches, the periodic checks. The list is sorted by name so diffs stay small.
set -euo pipefail
cd "$(dirname "$0")/.."
skiff="$(readlink -f "${1:-${CARGO_TARGET_DIR:-target}/release/skiff}")"
secs="${2:-200}"
out="$PWD/crates/skiff/hot-code.txt"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
work="$(mktemp -d)"

cat >"$work/inner.sh" <<'INNER'
set -euo pipefail
skiff="$1"; secs="$2"; d="$3"
mount -t tmpfs tmpfs /run
ip link set lo up
mkdir -p "$d/server" "$d/agent" "$d/run"
"$skiff" server --disable-agent --bind-address 127.0.0.1 --https-listen-port 6443 \
  --data-dir "$d/server" >"$d/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do grep -q "listening on" "$d/server.log" && break; sleep 0.2; done
# MIMALLOC_ARENA_EAGER_COMMIT set: skiff does not re-execute itself (valgrind would lose it).
SKIFF_LOG=warn MIMALLOC_ARENA_EAGER_COMMIT=0 valgrind --tool=callgrind --instr-atstart=no \
  --demangle=no --trace-children=no --callgrind-out-file="$d/cg.out" \
  "$skiff" agent --server https://127.0.0.1:6443 --token "$(cat "$d/server/token")" \
  --ca-file "$d/server/tls/ca.crt" --data-dir "$d/agent" --run-dir "$d/run" \
  --node-name hot-code --node-ip 127.0.0.1 --private-registry /nonexistent >"$d/agent.log" 2>&1 &
vg=$!
sleep 25
callgrind_control -i on "$vg" >/dev/null 2>&1
sleep "$secs"
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 5
kill -9 "$vg" "$server" 2>/dev/null || true
wait || true
INNER

unshare --net --mount --pid --fork --mount-proc bash "$work/inner.sh" "$skiff" "$secs" "$work"
dump="$(ls "$work"/cg.out.* 2>/dev/null | head -1)"
[ -s "$dump" ] || { echo "no callgrind dump; see $work/agent.log" >&2; exit 1; }
python3 - "$dump" "$skiff" >"$out" <<'PY'
import re, sys
dump, exe = sys.argv[1], sys.argv[2]
objects, names, hot, ob = {}, {}, set(), None
for line in open(dump):
    m = re.match(r'(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$', line.rstrip('\n'))
    if not m:
        continue
    kind, ident, name = m.groups()
    # Names are given once, where an id first appears (callee lines included), then reused.
    table = objects if kind in ('ob', 'cob') else names
    if name:
        table[ident] = name
    if kind == 'ob':
        ob = objects.get(ident)
    elif kind == 'fn' and ob == exe:
        hot.add(names[ident])
print('\n'.join(sorted(hot)))
PY
n="$(wc -l <"$out")"
[ "$n" -gt 100 ] || { echo "only $n functions recorded: see $work" >&2; exit 1; }
rm -rf "$work"
echo "$n functions in $out"
