#!/usr/bin/env bash
# Load test of `tagger serve` with wrk, on 127.0.0.1 only.
#
#   cargo build --release && examples/load_test.sh            # 10 s per row
#   DURATION=20s examples/load_test.sh                         # longer rows
#
# Starts the server on an ephemeral loopback port, measures the time from exec to the first
# 200 on /readyz, then runs wrk (keep-alive, raw JPEG/PNG bodies, examples/wrk_post_image.lua)
# at concurrency 1, 2 and 8 for: /v1/tags with the 451x300 photo (default model and
# ?model=resnet18), /v1/tags with a 12 MP phone photo (decode=exact and decode=fast), and
# /v1/digits. Prints a markdown table (req/s, p50, p99, answers by status, and the median of
# the server's own time per request, decode + preprocess + inference from `timing_ms` of the
# same requests: at c=1 its difference from p50 is what HTTP costs) and the server's peak RSS
# (VmHWM), then stops the server it started, by PID.
#
# Environment: TAGGER_BIN (default target/release/tagger), DURATION (default 10s), CONCS
# (default "1 2 8"), WORKERS (default: the server's default, one per core), PHOTO_12MP (a JPEG
# to use as the phone photo; default: generated from chelsea.jpg with ImageMagick, 4000x3000 q90
# with mild noise, else tests/fixtures/images/big.jpg), ROWS (default: all; a space-separated
# subset of: cat cat_resnet18 phone_exact phone_fast digits).
# wrk shares the cores with the server: on a 2-core machine the figures are a floor.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${TAGGER_BIN:-target/release/tagger}
DURATION=${DURATION:-10s}
CONCS=${CONCS:-"1 2 8"}
ROWS=${ROWS:-"cat cat_resnet18 phone_exact phone_fast digits"}
LUA=examples/wrk_post_image.lua
CAT=tests/fixtures/images/chelsea.jpg
DIGIT=tests/fixtures/digits/eval/8_000.png
WORK=$(mktemp -d /tmp/tagger-load.XXXXXX)
SERVER_PID=""

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[[ -x "$BIN" ]] || { echo "$BIN not found: cargo build --release first" >&2; exit 2; }

PHOTO=${PHOTO_12MP:-}
if [[ -z "$PHOTO" ]]; then
    if command -v convert >/dev/null; then
        PHOTO=$WORK/phone_12mp.jpg
        convert "$CAT" -resize '4000x3000!' -attenuate 0.3 +noise Gaussian -quality 90 "$PHOTO"
    else
        PHOTO=tests/fixtures/images/big.jpg
    fi
fi
PHOTO_DESC=$(python3 - "$PHOTO" <<'PY' 2>/dev/null || echo "$PHOTO"
import struct, sys
d = open(sys.argv[1], "rb").read()
i = 2
while i < len(d):
    marker, length = d[i + 1], struct.unpack(">H", d[i + 2:i + 4])[0]
    if marker in (0xC0, 0xC1, 0xC2):
        h, w = struct.unpack(">HH", d[i + 5:i + 9])
        print(f"{w}x{h}, {len(d) / 1e6:.2f} MB")
        break
    i += 2 + length
PY
)

# Start the server and time exec -> /readyz 200.
args=(serve --addr 127.0.0.1:0)
[[ -n "${WORKERS:-}" ]] && args+=(--workers "$WORKERS")
start_ns=$(date +%s%N)
TAGGER_LOG=warn,tagger::server=info "$BIN" "${args[@]}" 2>"$WORK/server.log" &
SERVER_PID=$!
addr=""
for _ in $(seq 600); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's|listening on http://||') || true
    [[ -n "$addr" ]] && break
    sleep 0.01
done
[[ -n "$addr" ]] || { echo "server did not start:"; cat "$WORK/server.log"; exit 1; }
case "$addr" in 127.0.0.1:*) ;; *) echo "refusing to load-test $addr (loopback only)"; exit 1 ;; esac
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz")" == 200 ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.005
done
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
rss_idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")

ms() { # wrk latency (e.g. 41.20ms, 1.02s, 850.00us) -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.1f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.1f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.1f", v * 1000 }
        else printf "%s", v }'
}

row() { # name path file content-type
    local name=$1 path=$2 file=$3 ctype=$4
    # Warm-up (not recorded).
    WRK_BODY=$file WRK_CONTENT_TYPE=$ctype wrk -t1 -c2 -d2s -s "$LUA" "http://$addr$path" >/dev/null
    for c in $CONCS; do
        local t=$(( c < 2 ? 1 : 2 ))
        local out
        out=$(WRK_BODY=$file WRK_CONTENT_TYPE=$ctype wrk -t"$t" -c"$c" -d"$DURATION" --timeout 10s \
              --latency -s "$LUA" "http://$addr$path")
        echo "$out" >>"$WORK/wrk.txt"
        local rps p50 p99 statuses inside
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
        p99=$(ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
        statuses=$(sed -n 's/^statuses: //p' <<<"$out")
        inside=$(sed -n 's/^server-side median: \([0-9.]*\) ms/\1/p' <<<"$out")
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$c" "$rps" "$p50" "$p99" "$inside" "$statuses"
    done
}

echo "tagger load test: $(nproc) cores, wrk on the same machine, $DURATION per row"
echo "server: $("$BIN" --help >/dev/null 2>&1; echo "$BIN"), $(grep -o '[0-9]* workers x [0-9]* inference' "$WORK/server.log" | head -1)"
echo "exec -> /readyz 200: ${ready_ms} ms; RSS when ready: $((rss_idle_kb / 1024)) MiB"
echo "12 MP photo: $PHOTO_DESC"
echo
echo "| row | c | req/s | p50 ms | p99 ms | server-side median ms | statuses |"
echo "|---|---|---|---|---|---|---|"
for r in $ROWS; do
    case $r in
        cat) row "tags, 451x300, default model" "/v1/tags" "$CAT" image/jpeg ;;
        cat_resnet18) row "tags, 451x300, resnet18" "/v1/tags?model=resnet18" "$CAT" image/jpeg ;;
        phone_exact) row "tags, 12 MP, decode=exact" "/v1/tags?decode=exact" "$PHOTO" image/jpeg ;;
        phone_fast) row "tags, 12 MP, decode=fast" "/v1/tags?decode=fast" "$PHOTO" image/jpeg ;;
        digits) row "digits, 35x35 PNG" "/v1/digits" "$DIGIT" image/png ;;
        *) echo "unknown row $r" >&2; exit 2 ;;
    esac
done
peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
echo
echo "peak RSS (VmHWM): $((peak_kb / 1024)) MiB"
