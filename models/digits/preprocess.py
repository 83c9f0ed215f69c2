"""Python twin of src/digits/ (the Rust code is what ships): picture -> 64 features.

Used by train.py (the augmented training set goes through the same `ink` path as a request does)
and by evaluate.py (prototype measurements). Resizes are Pillow's, which src/resample.rs mirrors;
everything else is plain float64 arithmetic written the same way on both sides.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

FRAME = 32              # side of the training bitmaps (UCI optdigits)
PARAMS = {
    "margin": 2,            # rows of paper above and below the digit in the 32x32 frame
    "threshold": 0.35,      # ink level above which a pixel of the rescaled digit is ink
    "deskew": True,         # shear by image moments so the main axis is vertical
    "com": True,            # centre by centre of mass (else by bounding box)
    "min_width": 2.2,       # mean stroke width (px in the 32x32 frame) below which strokes are thickened
    "max_width": 5.5,       # ... above which they are thinned
    "flatten": True,        # remove uneven lighting (block background estimate)
    "grid_residual": 0.2,   # an 8x8 grid rebuilds the picture within this (99th pct, of the contrast)
}


def darkness(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 -> (H,W) float64 in 0..1: sqrt(sum ((255-c)/255)^2) / sqrt(3)."""
    c = (255.0 - rgb.astype(np.float64)) / 255.0
    return np.sqrt((c * c).sum(-1)) / np.sqrt(3.0)


MAX_SIDE = 512


def limited(img: Image.Image) -> Image.Image:
    """Pictures over MAX_SIDE px are area-averaged down to it on their longer side first."""
    w, h = img.size
    m = max(w, h)
    if m <= MAX_SIDE:
        return img
    return img.convert("RGB").resize((max(1, (w * MAX_SIDE + m // 2) // m), max(1, (h * MAX_SIDE + m // 2) // m)),
                                     Image.BOX)


def plain(img: Image.Image) -> np.ndarray:
    small = np.asarray(img.convert("RGB").resize((8, 8), Image.BOX))
    return np.round(16.0 * darkness(small)).reshape(64)


# --------------------------------------------------------------------------------- grid
def upscale_matrix(n_out: int, kind: str, n_in: int = 8) -> np.ndarray:
    """(n_out, n_in) weights of an upscale from n_in to n_out pixels along one axis.
    nearest: Pillow's sample point (x + 0.5) n_in / n_out; a row that falls exactly on a cell edge is left
    empty (Pillow's fixed point rounds those either way), so it takes no part in the fit or the residual.
    nearest_floor: OpenCV's x n_in / n_out. bilinear: Pillow's triangle filter (support 1 when upscaling)."""
    A = np.zeros((n_out, n_in))
    for x in range(n_out):
        if kind == "nearest":
            if ((2 * x + 1) * n_in) % (2 * n_out) != 0:
                A[x, ((2 * x + 1) * n_in) // (2 * n_out)] = 1.0
        elif kind == "nearest_floor":
            A[x, x * n_in // n_out] = 1.0
        else:
            c = (x + 0.5) * n_in / n_out
            lo, hi = max(int(c - 0.5), 0), min(int(c + 1.5), n_in)
            w = [max(0.0, 1.0 - abs(xx - c + 0.5)) for xx in range(lo, hi)]
            for xx, wx in zip(range(lo, hi), w):
                A[x, xx] = wx / sum(w)
    return A


def grid_residual(img: Image.Image) -> float:
    """How far the picture is from an upscaled 8x8 grid: the 99th percentile of |darkness - best 8x8
    rebuild| over the contrast (1st..99th percentile), the least over the upscalers. The rebuild is the
    least-squares 8x8 grid under that upscaler (separable: G = Py D Px^T, Py = (Ay^T Ay)^-1 Ay^T)."""
    rgb = limited(img).convert("RGB")
    w, h = rgb.size
    if w <= 8 or h <= 8:
        return 0.0
    d = darkness(np.asarray(rgb))
    contrast = max(sorted_at(d, 0.99) - sorted_at(d, 0.01), 0.05)
    best = np.inf
    for kind in ("nearest", "nearest_floor", "bilinear"):
        Ay, Ax = upscale_matrix(h, kind), upscale_matrix(w, kind)
        try:
            Py = np.linalg.solve(Ay.T @ Ay, Ay.T)
            Px = np.linalg.solve(Ax.T @ Ax, Ax.T)
        except np.linalg.LinAlgError:
            continue
        rebuilt = Ay @ (Py @ d @ Px.T) @ Ax.T
        used = (Ay.sum(1) > 0)[:, None] & (Ax.sum(1) > 0)[None, :]
        best = min(best, sorted_at(np.abs(d - rebuilt)[used], 0.99) / contrast)
    return best


def is_grid(img: Image.Image, p=PARAMS) -> bool:
    return grid_residual(img) <= p["grid_residual"]


# --------------------------------------------------------------------------------- ink
def sorted_at(v: np.ndarray, q: float) -> float:
    """The element at rank floor((n-1) q) (same as the Rust side)."""
    s = np.sort(v.reshape(-1))
    return float(s[int((len(s) - 1) * q)])


def ink_level(img: Image.Image, p=PARAMS):
    """Ink 0..1 per pixel: polarity from the border, lighting flattened, contrast normalised."""
    d = darkness(np.asarray(img.convert("RGB")))
    h, w = d.shape
    border = np.concatenate([d[0], d[-1], d[:, 0], d[:, -1]])
    paper = sorted_at(border, 0.5)
    if paper - sorted_at(d, 0.01) > sorted_at(d, 0.99) - paper:   # light ink on a dark ground
        d = 1.0 - d
    if p["flatten"]:
        bg = background(d)
    else:
        bg = np.full_like(d, sorted_at(np.concatenate([d[0], d[-1], d[:, 0], d[:, -1]]), 0.5))
    ink = d - bg
    top = sorted_at(ink, 0.99)
    if top < 0.1:
        return None
    return np.clip(ink / top, 0.0, 1.0)


BLOCKS = 4


def background(d: np.ndarray) -> np.ndarray:
    """Paper darkness everywhere: the 20th percentile of each of 4x4 blocks, bilinear between block centres."""
    h, w = d.shape
    nb = BLOCKS
    vals = np.zeros((nb, nb))
    for by in range(nb):
        for bx in range(nb):
            blk = d[by * h // nb:(by + 1) * h // nb, bx * w // nb:(bx + 1) * w // nb]
            vals[by, bx] = sorted_at(blk, 0.2) if blk.size else 0.0
    fy = np.clip((np.arange(h) + 0.5) * nb / h - 0.5, 0, nb - 1)
    fx = np.clip((np.arange(w) + 0.5) * nb / w - 0.5, 0, nb - 1)
    y0 = np.minimum(fy.astype(int), nb - 2)
    x0 = np.minimum(fx.astype(int), nb - 2)
    ty = (fy - y0)[:, None]
    tx = (fx - x0)[None, :]
    v00 = vals[y0][:, x0]
    v01 = vals[y0][:, x0 + 1]
    v10 = vals[y0 + 1][:, x0]
    v11 = vals[y0 + 1][:, x0 + 1]
    return (v00 * (1 - ty) * (1 - tx) + v01 * (1 - ty) * tx + v10 * ty * (1 - tx) + v11 * ty * tx)


def bbox(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def sample(a: np.ndarray, x: float, y: float) -> float:
    """Bilinear sample of a at (x, y) in pixel-centre coordinates, 0 outside."""
    h, w = a.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    tx, ty = x - x0, y - y0
    v = 0.0
    for yy, wy in ((y0, 1 - ty), (y0 + 1, ty)):
        for xx, wx in ((x0, 1 - tx), (x0 + 1, tx)):
            if 0 <= yy < h and 0 <= xx < w:
                v += a[yy, xx] * wy * wx
    return v


def deskewed(level: np.ndarray) -> np.ndarray:
    """Shear rows so that the ink's principal axis is vertical (x' = x - s (y - cy), s = mu11/mu02)."""
    h, w = level.shape
    m = level.sum()
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = (level * xs).sum() / m, (level * ys).sum() / m
    mu11 = (level * (xs - cx) * (ys - cy)).sum() / m
    mu02 = (level * (ys - cy) ** 2).sum() / m
    s = float(np.clip(mu11 / mu02, -0.6, 0.6)) if mu02 > 0 else 0.0
    pad = int(np.ceil(abs(s) * h / 2)) + 1
    out = np.zeros((h, w + 2 * pad))
    for y in range(h):
        shift = s * (y - cy)
        xs_out = np.arange(w + 2 * pad)
        src = xs_out - pad + shift
        x0 = np.floor(src).astype(int)
        t = src - x0
        row = level[y]
        a = np.where((x0 >= 0) & (x0 < w), row[np.clip(x0, 0, w - 1)], 0.0)
        b = np.where((x0 + 1 >= 0) & (x0 + 1 < w), row[np.clip(x0 + 1, 0, w - 1)], 0.0)
        out[y] = a * (1 - t) + b * t
    return out


def to_frame(level: np.ndarray, p=PARAMS) -> np.ndarray | None:
    """The ink (0..1 levels) -> a 32x32 boolean bitmap like the training data's."""
    mask = level > 0.5
    if not mask.any():
        return None
    y0, y1, x0, x1 = bbox(mask)
    crop = level[y0:y1, x0:x1]
    if p["deskew"]:
        crop = deskewed(crop)
        y0, y1, x0, x1 = bbox(crop > 0.5 * crop.max())
        crop = crop[y0:y1, x0:x1]
    ch, cw = crop.shape
    out_h = FRAME - 2 * p["margin"]
    out_w = int(np.clip(round(cw * out_h / ch), 1, FRAME))
    grey = Image.fromarray(np.round(255 * (1 - crop)).astype(np.uint8), "L").convert("RGB")
    scaled = darkness(np.asarray(grey.resize((out_w, out_h), Image.BILINEAR)))
    frame = np.zeros((FRAME, FRAME))
    if p["com"]:
        m = scaled.sum()
        ys, xs = np.mgrid[0:out_h, 0:out_w]
        cx = (scaled * xs).sum() / m if m > 0 else (out_w - 1) / 2
        left = int(np.clip(round((FRAME - 1) / 2 - cx), 0, FRAME - out_w))
    else:
        left = (FRAME - out_w) // 2
    top = (FRAME - out_h) // 2
    frame[top:top + out_h, left:left + out_w] = scaled
    bitmap = frame > p["threshold"]
    return normalise_width(bitmap, p)


def stroke_width(b: np.ndarray) -> float:
    """Mean stroke width: ink area / half the ink-paper boundary length."""
    area = b.sum()
    edges = (b[:, 1:] != b[:, :-1]).sum() + (b[1:] != b[:-1]).sum() + b[:, 0].sum() + b[:, -1].sum() \
        + b[0].sum() + b[-1].sum()
    return 2.0 * area / max(edges, 1)


def dilate(b: np.ndarray) -> np.ndarray:
    p = np.pad(b, 1)
    out = np.zeros_like(b)
    for dy in range(3):
        for dx in range(3):
            out |= p[dy:dy + b.shape[0], dx:dx + b.shape[1]]
    return out


def erode(b: np.ndarray) -> np.ndarray:
    """Cross-shaped erosion (removes one pixel from each side of a stroke)."""
    p = np.pad(b, 1)
    h, w = b.shape
    return b & p[0:h, 1:w + 1] & p[2:h + 2, 1:w + 1] & p[1:h + 1, 0:w] & p[1:h + 1, 2:w + 2]


def normalise_width(b: np.ndarray, p=PARAMS) -> np.ndarray:
    if stroke_width(b) < p["min_width"]:
        b = dilate(b)
    elif stroke_width(b) > p["max_width"]:
        e = erode(b)
        if e.sum() >= 0.5 * b.sum():
            b = e
    return b


def counts(bitmap: np.ndarray) -> np.ndarray:
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).reshape(64).astype(np.float64)


def ink(img: Image.Image, p=PARAMS) -> np.ndarray:
    level = ink_level(limited(img), p)
    frame = None if level is None else to_frame(level, p)
    return plain(img) if frame is None else counts(frame)


def auto(img: Image.Image, p=PARAMS):
    """(features, path): an 8x8 grid picture is read as is, anything else by its ink."""
    if is_grid(img, p):
        return plain(img), "grid"
    return ink(img, p), "ink"
