"""Export torchvision ResNet-18 to models/resnet18/model.onnx (+ model.json, + models/labels.txt).

  python models/resnet18/export.py --weights IMAGENET1K_V1   # official ImageNet weights (needs network)
  python models/resnet18/export.py --weights none --seed 0   # stand-in: seeded random weights (what is shipped now)

Both modes share one code path once the model is built: TorchScript exporter (dynamo=False),
opset 17, input "input" f32 [N,3,224,224] (dynamic N), output "logits" f32 [N,1000],
do_constant_folding=True, onnx.checker, torch-vs-onnxruntime check, manifest.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import export_common as ec  # noqa: E402
from reference import sha256_file  # noqa: E402

OFFICIAL_FILE = "resnet18-f37072fd.pth"  # torchvision's published name; 'f37072fd' = sha256 prefix
OFFICIAL_SHA256_PREFIX = "f37072fd"


def build_official(name: str):
    try:
        w = torchvision.models.ResNet18_Weights[name]
    except KeyError:
        ec.die(f"unknown weights {name!r}; choose from {[e.name for e in torchvision.models.ResNet18_Weights]} or 'none'")
    fname = os.path.basename(w.url)
    if fname != OFFICIAL_FILE:
        ec.die(f"torchvision's {name} points at {fname}, expected {OFFICIAL_FILE}; update this script deliberately")
    hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(hub_dir, fname)
    try:
        # check_hash=True: torch verifies the file's sha256 starts with the hash in its name
        state = torch.hub.load_state_dict_from_url(w.url, progress=True, check_hash=True, map_location="cpu")
    except Exception as e:  # URLError, OSError, RuntimeError (hash mismatch)
        ec.die(f"could not obtain {w.url} ({type(e).__name__}: {e}). "
               f"This mode needs network access (or the file already in {hub_dir}). "
               f"Offline, use --weights none --seed 0.")
    digest = sha256_file(path)
    if not digest.startswith(OFFICIAL_SHA256_PREFIX):
        ec.die(f"{path}: sha256 {digest} does not start with {OFFICIAL_SHA256_PREFIX}")
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(state)
    info = {
        "weights": "official",
        "description": "ResNet-18 trained on ImageNet-1k (torchvision IMAGENET1K_V1): 1000 ImageNet-category logits.",
        "source": f"torchvision.models.resnet18 architecture + torchvision ResNet18_Weights.{name} ({w.url})",
        "license": "BSD-3-Clause (torchvision weights)",
        "weights_file": {"name": fname, "sha256": digest},
        "generated_by": f"models/resnet18/export.py --weights {name}",
    }
    return model, info


def build_standin(seed: int):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    info = {
        "weights": "stand-in",
        "description": (f"ResNet-18 architecture with seeded random weights (torch.manual_seed({seed})): "
                        "real shapes, cost and I/O, but its tags are meaningless."),
        "source": f"torchvision.models.resnet18(weights=None) after torch.manual_seed({seed}); no pretrained weights",
        "license": "BSD-3-Clause (torchvision code; random weights, no third-party weights)",
        "weights_file": None,
        "generated_by": f"models/resnet18/export.py --weights none --seed {seed}",
    }
    return model, info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="IMAGENET1K_V1 (official) or none (stand-in)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --weights none")
    ap.add_argument("--out-dir", default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    if args.weights.lower() == "none":
        model, info = build_standin(args.seed)
    else:
        model, info = build_official(args.weights)

    # ---- one code path from here on ----
    model.eval()
    ec.write_labels()
    labels = ec.labels()
    onnx_path = os.path.join(args.out_dir, "model.onnx")
    export = ec.export_image_classifier(model, onnx_path)
    verification = dict(export)
    verification.update(ec.torch_vs_ort(model, onnx_path))

    import skimage.data

    sess = ec.ort_session(onnx_path)
    imgs = {}
    for name in ("chelsea", "coffee"):
        imgs[name] = ec.classify_image(model, sess, np.ascontiguousarray(getattr(skimage.data, name)()), "imagenet", labels)
    verification["skimage_images"] = imgs
    if info["weights"] == "official":
        ok_cat = imgs["chelsea"]["top5"][0][0] in (281, 282, 285)
        ok_coffee = imgs["coffee"]["top5"][0][0] in (967, 968, 504)
        verification["sanity_official"] = {"chelsea_is_cat": ok_cat, "coffee_is_coffee": ok_coffee}
        if not (ok_cat and ok_coffee):
            ec.die(f"official weights misclassify skimage images: {imgs}")
    verification["note"] = ("max_abs_diff figures: float32 torch eager vs onnxruntime 1 thread, CPU; "
                            "image top5 from torch logits, float64 softmax")

    manifest = {
        "name": "resnet18",
        "task": "imagenet-tags",
        "description": info["description"],
        "weights": info["weights"],
        "source": info["source"],
        "license": info["license"],
        "packages": ec.versions("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pillow"),
        "weights_file": info["weights_file"],
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
            "resize": 256, "crop": 224, "interpolation": "bilinear", "normalize": "imagenet",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "formula": "(float32(u8)/255 - mean[c]) / std[c]",
            "notes": ec.PREPROCESS_NOTES,
        },
        "labels": "labels.txt",
        "verification": verification,
        "svc": None,
        "generated_by": info["generated_by"],
    }
    ec.write_json(os.path.join(args.out_dir, "model.json"), manifest)
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes), model.json, labels.txt")
    for k, v in verification.items():
        if k.startswith("max_abs") or k.startswith("same_"):
            print(f"  {k}: {v}")
    for k, v in imgs.items():
        print(f"  {k}: top1 {v['top5'][0]}  max|torch-ort| {v['max_abs_diff_torch_vs_ort']:.3g}")


if __name__ == "__main__":
    main()
