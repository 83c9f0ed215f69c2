#!/usr/bin/env bash
# Usage: ROUNDS=2 ./bench8.sh BIN_A BIN_B
# c=8 latency tail, A/B interleaved, a fresh server per row (so "first" includes the first
# seconds after 8 new connections): wrk -c8 6 s on a fresh server, then c=1 10 s and c=8 10 s.
# Prints req/s, p50, p99 and p99/p50 per row.
set -u
A=$(realpath "$1"); B=$(realpath "$2")
cd "$(dirname "$0")/../.."   # the repository root
export WRK_BODY=tests/fixtures/images/chelsea.jpg
LUA=examples/wrk_post_image.lua
OUT=${OUT:-/tmp/tagger-transport-bench}; mkdir -p $OUT
PORT=18900
row() { # name bin wrk-args...
  local name=$1 bin=$2; shift 2
  PORT=$((PORT+1))
  TAGGER_LOG=warn $bin serve --addr 127.0.0.1:$PORT --workers 2 2>$OUT/$name-$PORT.log &
  local pid=$!
  for i in $(seq 1 600); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.02; done
  wrk --latency -s $LUA "$@" http://127.0.0.1:$PORT/v1/tags > $OUT/$name-$PORT.txt
  python3 - $OUT/$name-$PORT.txt $name <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(p):
    v = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", t)
    return float(v.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[v.group(2)]
rps = re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)
non = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{sys.argv[2]:22s} {float(rps):7.1f} req/s  p50 {ms(50):7.2f} ms  p99 {ms(99):7.2f} ms  p99/p50 {ms(99)/ms(50):.2f}"
      + (f"  non-2xx {non.group(1)}" if non else ""), flush=True)
PY
  kill -TERM $pid; wait $pid 2>/dev/null
}
echo "load before: $(cat /proc/loadavg)"
for rep in $(seq 1 ${ROUNDS:-2}); do
  for BIN in $A $B; do row "$(basename $BIN)-c8-first" $BIN -t2 -c8 -d6s; done
  for BIN in $A $B; do row "$(basename $BIN)-c1" $BIN -t1 -c1 -d10s; done
  for BIN in $A $B; do row "$(basename $BIN)-c8" $BIN -t2 -c8 -d10s; done
done
echo "load after: $(cat /proc/loadavg)"
