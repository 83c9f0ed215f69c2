"""Reference image preprocessing: the contract the Rust side reproduces bit for bit.

This is the ONLY definition of the photo pipeline; export.py, make_fixtures.py and
anything else in models/ import it from here.

load_rgb(path, draft=False) -> uint8 numpy array [H, W, 3]
    1. im = Image.open(path)
    2. if draft and im.format == "JPEG": im.draft("RGB", (256, 256))
       (Pillow: s = largest of 8,4,2,1 with s <= min(W // 256, H // 256); the JPEG is
       decoded at 1/s scale by libjpeg's DCT scaling -> ceil(W/s) x ceil(H/s); the
       colour mode is not changed: grey stays L, CMYK stays CMYK.)
    3. im = ImageOps.exif_transpose(im)
    4. to RGB8:
       - alpha (mode RGBA, LA, PA, or P/L/RGB with "transparency" in im.info):
         im.convert("RGBA"), then per colour channel, in uint32 integer arithmetic,
         out = (c*a + 255*(255-a) + 127) // 255        (composite on white)
       - otherwise im.convert("RGB")   (Pillow's own conversions: palette lookup,
         L -> R=G=B, CMYK -> RGB, I;16 -> RGB, ...)

image_tensor(rgb, normalize) -> float32 torch tensor [1, 3, 224, 224]
    pil = Image.fromarray(rgb)
    torchvision transforms.Resize(256)   (bilinear, antialias; PIL's Image.resize):
        shorter side -> 256, longer side -> int(256 * long / short) (truncation);
        (no resampling at all when that computed size equals the input size)
    CenterCrop(224): top = int(round((H - 224) / 2.0)), left = int(round((W - 224) / 2.0))
        (Python round: half to even)
    ToTensor(): float32(u8) / 255 (float32 division), CHW
    "imagenet": (t - mean[c]) / std[c], float32, mean=[0.485,0.456,0.406], std=[0.229,0.224,0.225]
    "tflite":   (t * 255 - 127) / 128, float32, in that order
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RESIZE = 256
CROP = 224
DRAFT_SIZE = (256, 256)

_ALPHA_MODES = ("RGBA", "LA", "PA")
_TRNS_MODES = ("P", "L", "RGB")


def has_alpha(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES:
        return True
    return im.mode in _TRNS_MODES and "transparency" in im.info


def to_rgb8(im: Image.Image) -> np.ndarray:
    if has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
        c = rgba[..., :3]
        a = rgba[..., 3:4]
        out = (c * a + 255 * (255 - a) + 127) // 255
        return np.ascontiguousarray(out.astype(np.uint8))
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def load_rgb(path, draft: bool = False) -> np.ndarray:
    im = Image.open(path)
    if draft and im.format == "JPEG":
        im.draft("RGB", DRAFT_SIZE)
    im = ImageOps.exif_transpose(im)
    return to_rgb8(im)


_RESIZE_CROP = transforms.Compose([transforms.Resize(RESIZE), transforms.CenterCrop(CROP)])
_TO_TENSOR = transforms.ToTensor()
_NORMALIZE_IMAGENET = transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def resized_cropped(rgb: np.ndarray) -> Image.Image:
    """The uint8 224x224 RGB image after Resize(256) + CenterCrop(224) (intermediate, for debugging)."""
    return _RESIZE_CROP(Image.fromarray(rgb))


def image_tensor(rgb: np.ndarray, normalize: str) -> torch.Tensor:
    t = _TO_TENSOR(resized_cropped(rgb))
    if normalize == "imagenet":
        t = _NORMALIZE_IMAGENET(t)
    elif normalize == "tflite":
        t = (t * 255 - 127) / 128
    else:
        raise ValueError(f"unknown normalize {normalize!r}")
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, CROP, CROP)
    return t.unsqueeze(0).contiguous()


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().numpy().astype("<f4", copy=False).tobytes(order="C")


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def softmax64(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)
