#!/usr/bin/env bash
# Checks systemd/tagger.service: `systemd-analyze verify` must be clean and the offline security
# exposure must be at most 1.5. Usage: tests/deploy/systemd.sh [path/to/tagger]
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/tagger}")
[[ -x $binary ]] || { echo "systemd check: build the binary first ($binary is missing)" >&2; exit 1; }

# verify insists that ExecStart exists: point a copy of the unit at the binary we just built.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/local/bin/tagger|ExecStart=$binary|" systemd/tagger.service > "$work/tagger.service"
if ! out=$(systemd-analyze verify "$work/tagger.service" 2>&1) || [[ -n $out ]]; then
    echo "systemd-analyze verify is not clean:"; echo "$out"; exit 1
fi
echo "systemd-analyze verify: clean"

exposure=$(systemd-analyze security --offline=yes systemd/tagger.service 2>&1 | sed -n 's/.*Overall exposure level for tagger.service: \([0-9.]*\).*/\1/p')
[[ -n $exposure ]] || { echo "could not read the exposure level"; exit 1; }
echo "systemd-analyze security exposure: $exposure (limit 1.5)"
awk -v e="$exposure" 'BEGIN { exit !(e <= 1.5) }' || { echo "exposure $exposure is above 1.5"; exit 1; }
