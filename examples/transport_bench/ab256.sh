#!/usr/bin/env bash
# Usage: ROUNDS=2 DUR=30s ./ab256.sh BIN_A BIN_B [EXTRA_SERVE_ARGS...]
# Interleaved A/B: per binary and round, a fresh server; wrk c=8 for 10 s (base), then c=256 for
# $DUR; prints c=8 req/s, c=256 goodput (2xx/s), goodput/c8 ratio, p50/p99, non-2xx, peak RSS,
# and /healthz latency (curl, 20 samples, median and max) measured during the c=256 run.
set -u
A=$(realpath "$1"); B=$(realpath "$2"); shift 2
ROUNDS=${ROUNDS:-2}; DUR=${DUR:-30s}
cd "$(dirname "$0")/../.."   # the repository root
export WRK_BODY=tests/fixtures/images/chelsea.jpg
LUA=examples/wrk_post_image.lua
OUT=${OUT:-/tmp/tagger-transport-bench}; mkdir -p $OUT
PORT=18600
echo "load before: $(cat /proc/loadavg)"
for r in $(seq 1 $ROUNDS); do for BIN in $A $B; do
  PORT=$((PORT+1)); name=$(basename $BIN)
  TAGGER_LOG=warn $BIN serve --addr 127.0.0.1:$PORT --workers 2 "$@" 2>$OUT/c256-$PORT.log &
  PID=$!
  for i in $(seq 1 600); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.02; done
  ( while kill -0 $PID 2>/dev/null; do awk '/VmRSS/{print $2}' /proc/$PID/status 2>/dev/null; sleep 0.5; done ) > $OUT/rss-$PORT.txt &
  SAMPLER=$!
  wrk -t2 -c8 -d10s --latency -s $LUA http://127.0.0.1:$PORT/v1/tags > $OUT/base-$PORT.txt
  ( sleep 8; for i in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:$PORT/healthz; sleep 0.5; done ) > $OUT/health-$PORT.txt &
  HC=$!
  wrk -t2 -c256 -d$DUR --timeout ${WRK_TIMEOUT:-2s} --latency -s $LUA http://127.0.0.1:$PORT/v1/tags > $OUT/c256-$PORT.txt
  wait $HC
  kill -TERM $PID; wait $PID 2>/dev/null; kill $SAMPLER 2>/dev/null
  python3 - $OUT $PORT $name <<'PY'
import re, sys, statistics
out, port, name = sys.argv[1:]
def parse(f):
    t = open(f).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    total = int(re.search(r"(\d+) requests in ([\d.]+)s", t).group(1))
    secs = float(re.search(r"(\d+) requests in ([\d.]+)s", t).group(2))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", t)) else 0
    lat = lambda p: re.search(rf"\s{p}%\s+(\S+)", t).group(1)
    sock = (m.group(0).strip() if (m := re.search(r"Socket errors:.*", t)) else "")
    return rps, (total - non2xx) / secs, non2xx, lat(50), lat(99), sock
b = parse(f"{out}/base-{port}.txt"); c = parse(f"{out}/c256-{port}.txt")
rss = max(int(x) for x in open(f"{out}/rss-{port}.txt").read().split() or [0])
h = [float(x) * 1e3 for x in open(f"{out}/health-{port}.txt").read().split()]
print(f"{name:12s} c8 {b[0]:6.1f}/s p50 {b[3]} p99 {b[4]} | c256 goodput {c[1]:6.1f}/s = {c[1]/b[0]*100:4.0f}% of c8, "
      f"non-2xx {c[2]} ({c[2]/float(open(f'{out}/c256-{port}.txt').read().split('requests in ')[1].split('s')[0]):.0f}/s), p50 {c[3]} p99 {c[4]} {c[5]} | "
      f"healthz med {statistics.median(h):.1f} ms max {max(h):.1f} ms | peak RSS {rss/1024:.0f} MB", flush=True)
PY
done; done
echo "load after: $(cat /proc/loadavg)"
