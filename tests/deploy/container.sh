#!/usr/bin/env bash
# Builds the FROM-scratch image with podman (the builder stage replaced by a host-built static
# binary, so nothing is pulled), runs it, checks /readyz, the HEALTHCHECK command and a real
# classification over HTTP, then stops it with SIGTERM and expects a clean exit.
# Usage: tests/deploy/container.sh   (needs podman and runc; .ci/run installs them)
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${TAGGER_CONTAINER_PORT:-18080}
image=localhost/tagger:ci
podman=(podman --runtime runc --cgroup-manager cgroupfs)

echo "building the static binary"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target x86_64-unknown-linux-gnu
binary=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/tagger
if ! ldd "$binary" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
    echo "$binary is not static:"; ldd "$binary"; exit 1
fi

context=$(mktemp -d)
container=""
cleanup() {
    [[ -n $container ]] && "${podman[@]}" rm -f "$container" >/dev/null 2>&1 || true
    rm -rf "$context"
}
trap cleanup EXIT
cp "$binary" "$context/tagger"
strip "$context/tagger"   # as the Dockerfile's builder stage does
"${podman[@]}" build --format docker --build-context build="$context" -t "$image" .
size=$("${podman[@]}" image inspect "$image" --format '{{.Size}}')
echo "image size: $size bytes ($((size / 1024 / 1024)) MiB); binary $(stat -c %s "$binary") bytes"
user=$("${podman[@]}" image inspect "$image" --format '{{.Config.User}}')
[[ $user == 65532:65532 ]] || { echo "image runs as '$user', expected 65532:65532"; exit 1; }

container=$("${podman[@]}" run -d --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    "$image" serve --addr "127.0.0.1:$port")
for _ in $(seq 1 100); do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    [[ $status == 200 ]] && break
    sleep 0.2
done
[[ $status == 200 ]] || { echo "/readyz never answered 200 (last: $status)"; "${podman[@]}" logs "$container"; exit 1; }
echo "/readyz: 200"

"${podman[@]}" exec "$container" /tagger healthcheck --addr "127.0.0.1:$port"
echo "HEALTHCHECK command (tagger healthcheck inside the container): exit 0"

answer=$(curl -sf -H 'Content-Type: image/jpeg' --data-binary @examples/images/cat.jpg "http://127.0.0.1:$port/v1/tags")
echo "POST /v1/tags cat.jpg -> $answer"
grep -Eq '"class_id":(281|282|285)' <<<"$answer" || { echo "the cat was not tagged as a cat"; exit 1; }

"${podman[@]}" stop -t 30 "$container" >/dev/null
code=$("${podman[@]}" inspect "$container" --format '{{.State.ExitCode}}')
"${podman[@]}" logs "$container" 2>&1 | tail -3
[[ $code == 0 ]] || { echo "container exited with $code after SIGTERM"; exit 1; }
echo "SIGTERM: drained and exited 0"
echo "container check passed"
