#!/usr/bin/env bash
# Every route of tagger, with curl. Each example is a function; tests/examples.rs runs them all
# against a live server, so none of them can rot.
#   examples/curl.sh              run every example
#   examples/curl.sh tags_raw     run one
#   examples/curl.sh --list       list them
# TAGGER_URL (default http://127.0.0.1:8080) says where the server is.
set -euo pipefail
URL=${TAGGER_URL:-http://127.0.0.1:8080}
IMAGES=$(cd "$(dirname "$0")/images" && pwd)

# Tags for a photo sent as the raw body (the default model: efficientnet_lite0).
tags_raw() {
    curl -sS --fail-with-body -H 'Content-Type: image/jpeg' --data-binary @"$IMAGES/cat.jpg" "$URL/v1/tags"
}

# The same photo as multipart/form-data (file field `image`), three tags of at least 10%.
tags_multipart() {
    curl -sS --fail-with-body -F image=@"$IMAGES/cat.jpg" "$URL/v1/tags?top_k=3&min_confidence=0.1"
}

# Another model, and fast (reduced-DCT) JPEG decoding.
tags_resnet18_fast() {
    curl -sS --fail-with-body -H 'Content-Type: application/octet-stream' --data-binary @"$IMAGES/cat.jpg" \
        "$URL/v1/tags?model=resnet18&decode=fast"
}

# Read a hand-drawn digit (preprocess=default finds the ink; plain shrinks the whole picture).
digits_raw() {
    curl -sS --fail-with-body -H 'Content-Type: image/png' --data-binary @"$IMAGES/digit.png" "$URL/v1/digits"
}

digits_multipart_plain() {
    curl -sS --fail-with-body -F image=@"$IMAGES/digit.png" "$URL/v1/digits?preprocess=plain"
}

# The generic route: any model by name.
predict_generic() {
    curl -sS --fail-with-body -H 'Content-Type: image/jpeg' --data-binary @"$IMAGES/cat.jpg" \
        "$URL/v1/models/efficientnet_lite0/predict?top_k=2"
}

# Several images in one request: repeat the `image` field. The answer is {"results": [...]} in
# order; each entry is the single-image answer, or that image's own error.
tags_batch() {
    curl -sS --fail-with-body -F image=@"$IMAGES/cat.jpg" -F image=@"$IMAGES/digit.png" "$URL/v1/tags?top_k=1"
}

# Open Inference Protocol (KServe v2), spoken by Triton / KServe clients: server metadata,
# readiness (the status is the answer) and a model's inputs and outputs.
v2_server() {
    curl -sS --fail-with-body "$URL/v2"
}

v2_ready() {
    curl -sS --fail-with-body -o /dev/null -w '%{http_code}\n' "$URL/v2/models/efficientnet_lite0/ready"
}

v2_metadata() {
    curl -sS --fail-with-body "$URL/v2/models/digits"
}

# v2 inference with JSON tensors: a [1,64] feature vector (0..16) of a "1", the digit plus the
# top 3 as classification strings "score:index:label".
v2_infer_json() {
    curl -sS --fail-with-body -H 'Content-Type: application/json' "$URL/v2/models/digits/infer" -d '{
      "inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 64], "data":
        [0,0,0,12,13,5,0,0, 0,0,0,11,16,9,0,0, 0,0,3,15,16,6,0,0, 0,7,15,16,16,2,0,0,
         0,0,1,16,16,3,0,0, 0,0,1,16,16,6,0,0, 0,0,1,16,16,6,0,0, 0,0,0,11,16,10,0,0]}],
      "outputs": [{"name": "digit"}, {"name": "probabilities", "parameters": {"classification": 3}}]}'
}

# v2 inference with the binary tensor data extension: the JSON header, then the photo as one
# BYTES element (4-byte little-endian length, then the bytes); Inference-Header-Content-Length
# says where the JSON ends. The top 3 come back as JSON classification strings.
v2_infer_binary() {
    local size header body
    size=$(stat -c %s "$IMAGES/cat.jpg")
    header=$(printf '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":%d}}],"outputs":[{"name":"probabilities","parameters":{"classification":3,"binary_data":false}}]}' $((size + 4)))
    body=$(mktemp)
    {
        printf '%s' "$header"
        python3 -c 'import struct, sys; sys.stdout.buffer.write(struct.pack("<I", int(sys.argv[1])))' "$size"
        cat "$IMAGES/cat.jpg"
    } >"$body"
    curl -sS --fail-with-body -H 'Content-Type: application/octet-stream' \
        -H "Inference-Header-Content-Length: ${#header}" --data-binary @"$body" \
        "$URL/v2/models/efficientnet_lite0/infer"
    rm -f "$body"
}

# The try-it page (open $URL/ in a browser): here its title and security policy.
page() {
    curl -sS --fail-with-body -D - "$URL/" | grep -iE '^content-security-policy|<title>'
}

# What each model does, its weights (official or stand-in) and provenance.
models_list() {
    curl -sS --fail-with-body "$URL/v1/models"
}

models_one() {
    curl -sS --fail-with-body "$URL/v1/models/digits"
}

# Probes and monitoring.
healthz() {
    curl -sS --fail-with-body "$URL/healthz"
}

readyz() {
    curl -sS --fail-with-body "$URL/readyz"
}

# Prometheus text; here only the request counters and the model info gauge.
metrics() {
    curl -sS --fail-with-body "$URL/metrics" | grep -E '^tagger_(requests_total|model_info)'
}

# The OpenAPI 3.1 document of every route (here: its version and paths).
openapi() {
    curl -sS --fail-with-body "$URL/openapi.json" |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print("openapi", d["openapi"], *d["paths"])'
}

# An error: the body is not an image. Errors are JSON with a stable code (HTTP 415 here).
error_not_an_image() {
    curl -sS -w '\nHTTP %{http_code}\n' -H 'Content-Type: image/jpeg' --data-binary 'hello' "$URL/v1/tags"
}

# An error: a bad query value (HTTP 400 names the parameter).
error_bad_parameter() {
    curl -sS -w '\nHTTP %{http_code}\n' -H 'Content-Type: image/jpeg' --data-binary @"$IMAGES/cat.jpg" "$URL/v1/tags?top_k=9"
}

EXAMPLES=(tags_raw tags_multipart tags_resnet18_fast digits_raw digits_multipart_plain predict_generic
          tags_batch v2_server v2_ready v2_metadata v2_infer_json v2_infer_binary page
          models_list models_one healthz readyz metrics openapi error_not_an_image error_bad_parameter)

if [[ ${1:-} == --list ]]; then
    printf '%s\n' "${EXAMPLES[@]}"
elif [[ $# -gt 0 ]]; then
    "$1"
else
    for example in "${EXAMPLES[@]}"; do
        echo "== $example"
        "$example"
        echo
    done
fi
