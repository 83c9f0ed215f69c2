#!/usr/bin/env python3
"""Drives a running tagger through tritonclient[http]'s InferenceServerClient, a client of the
Open Inference Protocol that nobody here wrote: health, metadata, a BYTES image sent as binary
tensor data with the classification extension, a batch of three, digits from features.

    python triton_client.py HOST:PORT        (exit 0: every check passed)
"""

import pathlib
import sys

import numpy as np
import tritonclient.http as httpclient

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "fixtures" / "images"
CAT_LABELS = ("tabby", "tiger cat", "Egyptian cat")


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def image_input(paths):
    data = np.array([p.read_bytes() for p in paths], dtype=np.object_)
    tensor = httpclient.InferInput("image", [len(paths)], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    return tensor


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    client = httpclient.InferenceServerClient(url=url)

    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    server = client.get_server_metadata()
    check(
        {"binary_tensor_data", "classification"} <= set(server["extensions"]),
        f"server metadata lists the extensions: {server}",
    )
    for name in ("efficientnet_lite0", "resnet18", "digits"):
        check(client.is_model_ready(name), f"model {name} ready")
        check(client.is_model_ready(name, model_version="1"), f"model {name} version 1 ready")
    meta = client.get_model_metadata("efficientnet_lite0")
    check(meta["platform"] == "onnx_onnxv1", "platform onnx_onnxv1")
    inputs = {i["name"]: i for i in meta["inputs"]}
    check(inputs["image"]["datatype"] == "BYTES" and inputs["image"]["shape"] == [-1], "image input BYTES [-1]")
    check(inputs["input"]["shape"] == [-1, 3, 224, 224], "input FP32 [-1,3,224,224]")
    check(meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]},
          "probabilities FP32 [-1,1000]")

    # One cat photo as a BYTES element in binary data, top 5 as classification strings.
    result = client.infer(
        "efficientnet_lite0",
        [image_input([IMAGES / "chelsea.jpg"])],
        outputs=[httpclient.InferRequestedOutput("probabilities", class_count=5)],
    )
    top = [s.decode() for s in result.as_numpy("probabilities").reshape(-1)]
    print("top 5:", top)
    check(len(top) == 5, "five classifications")
    score, index, label = top[0].split(":", 2)
    check(any(c in label for c in CAT_LABELS), f"the cat photo comes back as a cat ({top[0]})")
    check(0 < float(score) <= 1 and int(index) in (281, 282, 285), "score and class index")

    # A batch of three, full probabilities as binary FP32.
    batch = [IMAGES / n for n in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
    result = client.infer(
        "efficientnet_lite0",
        [image_input(batch)],
        outputs=[httpclient.InferRequestedOutput("probabilities")],
    )
    probabilities = result.as_numpy("probabilities")
    check(probabilities.shape == (3, 1000) and probabilities.dtype == np.float32, "batch of 3: [3,1000] FP32")
    check(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3), "each row sums to 1")
    best = probabilities.argmax(axis=1)
    print("batch top classes:", best.tolist())
    check(best[0] in (281, 282, 285) and best[1] == 967, "cat, then espresso (967)")

    # The same batch, classification as JSON (not binary) strings.
    result = client.infer(
        "efficientnet_lite0",
        [image_input(batch)],
        outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=2)],
    )
    check(result.as_numpy("probabilities").shape == (3, 2), "classification [3,2] as JSON")

    # Digits from a [1,64] feature vector (scikit-learn's digits layout, 0..16): a "1".
    one = np.array([[0, 0, 0, 12, 13, 5, 0, 0, 0, 0, 0, 11, 16, 9, 0, 0, 0, 0, 3, 15, 16, 6, 0, 0,
                     0, 7, 15, 16, 16, 2, 0, 0, 0, 0, 1, 16, 16, 3, 0, 0, 0, 0, 1, 16, 16, 6, 0, 0,
                     0, 0, 1, 16, 16, 6, 0, 0, 0, 0, 0, 11, 16, 10, 0, 0]], dtype=np.float32)
    features = httpclient.InferInput("features", [1, 64], "FP32")
    features.set_data_from_numpy(one)
    result = client.infer(
        "digits",
        [features],
        outputs=[httpclient.InferRequestedOutput("digit"), httpclient.InferRequestedOutput("probabilities")],
    )
    digit = result.as_numpy("digit")
    probs = result.as_numpy("probabilities")
    print("digit:", digit.tolist(), "p:", np.round(probs, 3).tolist())
    check(digit.tolist() == [1] and probs.shape == (1, 10) and probs.argmax() == 1, "digits reads the 1")

    # An error in the protocol's shape.
    try:
        client.infer("no_such_model", [features])
        check(False, "unknown model is refused")
    except Exception as e:  # tritonclient raises InferenceServerException
        check("no_such_model" in str(e), f"unknown model refused: {e}")
    print("all tritonclient checks passed")


if __name__ == "__main__":
    main()
