#!/usr/bin/env bash
# Client checks against the real binary, run by .ci/run after `cargo test`:
#   - tritonclient[http] (Open Inference Protocol) -> triton_client.py
#   - headless Chromium on the try-it page        -> page_check.py (prints the screenshot path)
# Installs what it needs itself: chromium + chromium-driver (apt, when missing) and a venv with
# requirements.txt. Usage: tests/clients/run.sh TARGET/release/tagger
set -euo pipefail
binary=$(realpath "${1:?usage: run.sh PATH/TO/tagger}")
cd "$(dirname "$0")"
work=${TAGGER_CLIENTS_DIR:-${TMPDIR:-/tmp}/tagger-clients}
mkdir -p "$work"

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ ! -x $work/venv/bin/python ]]; then
    python3 -m venv "$work/venv"
fi
"$work/venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt

# The server, on a free port; stopped by its PID whatever happens.
log=$work/server.log
"$binary" serve --addr 127.0.0.1:0 --workers 2 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    addr=$(sed -n 's/.*listening on http:\/\///p' "$log" | head -n1)
    [[ -n $addr ]] && curl -sf "http://$addr/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://$addr/readyz" >/dev/null || { cat "$log"; exit 1; }

echo "== tritonclient against http://$addr"
timeout 120 "$work/venv/bin/python" triton_client.py "$addr"
echo "== headless Chromium on http://$addr/"
timeout 180 "$work/venv/bin/python" page_check.py "http://$addr" "$work/page.png"
