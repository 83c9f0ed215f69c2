"""Augmented training pictures from load_digits(), read back through the `ink` path (preprocess.py).

Each 8x8 sample is grown into a smooth 64x64 glyph (bilinear, thresholded), then drawn as a picture the
way people photograph digits: rotated (+-12 degrees), sheared (+-0.3), squeezed (x 0.75-1.2), stroke
thinned or thickened (Pillow Min/MaxFilter), placed anywhere in a 20-96 px frame at 30-90 % of its height,
grey ink on lighter paper. The features the model learns are then the ones `ink` makes of such pictures.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

import preprocess as pp


def glyph(x: np.ndarray) -> Image.Image:
    """8x8 counts (0..16) -> 64x64 ink mask (255 = ink), smooth edges."""
    small = Image.fromarray(np.round(x.reshape(8, 8) * 255 / 16).astype(np.uint8), "L")
    big = np.asarray(small.resize((64, 64), Image.BILINEAR), dtype=np.float64)
    return Image.fromarray(((big > 110) * 255).astype(np.uint8), "L")


# Printed digits (serif 1s with a flag and a foot, open 6s and 9s) look like no load_digits sample, so
# the training set also gets digits rendered from these fonts. None of them is among the fonts that draw
# the evaluation pictures (make_fixtures.FONTS), so the `font` group stays a test of other typefaces.
FONT_DIR = "/usr/share/fonts"
TRAIN_FONTS = [
    "truetype/dejavu/DejaVuSans-ExtraLight.ttf",
    "truetype/dejavu/DejaVuSansCondensed.ttf",
    "truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "truetype/dejavu/DejaVuSerif-Bold.ttf",
    "truetype/dejavu/DejaVuSerifCondensed-Italic.ttf",
    "truetype/noto/NotoSansMono-Bold.ttf",
    "opentype/urw-base35/C059-Roman.otf",
    "opentype/urw-base35/NimbusSans-Bold.otf",
    "opentype/urw-base35/NimbusSansNarrow-Regular.otf",
    "opentype/urw-base35/NimbusRoman-Italic.otf",
    "opentype/urw-base35/NimbusMonoPS-Regular.otf",
    "opentype/urw-base35/P052-Bold.otf",
    "opentype/urw-base35/URWGothic-Demi.otf",
    "opentype/urw-base35/URWBookman-Demi.otf",
]


def font_glyph(d: int, font_path: str) -> Image.Image:
    """Digit d rendered white on black at 160 px, cropped to its ink."""
    font = ImageFont.truetype(os.path.join(FONT_DIR, font_path), 160)
    img = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(img).text((70, 40), str(d), font=font, fill=255)
    return img.crop(img.getbbox())


def picture(x: np.ndarray, rng) -> Image.Image:
    return photographed(glyph(x), rng)


def photographed(g: Image.Image, rng) -> Image.Image:
    g0 = g
    k = int(rng.integers(-1, 3))                    # stroke: thinner (-1), same, thicker (1, 2)
    if k < 0:
        g = g.filter(ImageFilter.MinFilter(3))
    for _ in range(max(k, 0)):
        g = g.filter(ImageFilter.MaxFilter(3))
    if g.getbbox() is None:
        g = g0
    g = g.crop(g.getbbox())
    pad = 40
    canvas = Image.new("L", (g.size[0] + 2 * pad, g.size[1] + 2 * pad), 0)
    canvas.paste(g, (pad, pad))
    shear = rng.uniform(-0.3, 0.3)
    sx = rng.uniform(0.75, 1.2)
    cx, cy = canvas.size[0] / 2, canvas.size[1] / 2
    # inverse affine (output -> input) for Image.transform: x_in = (x - cx) / sx + shear (y - cy) + cx
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1 / sx, shear, cx - cx / sx - shear * cy, 0, 1, 0),
                              resample=Image.BILINEAR)
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
    if canvas.getbbox() is None:
        canvas = g
    canvas = canvas.crop(canvas.getbbox())
    S = int(rng.integers(20, 97))
    frac = rng.uniform(0.3, 0.9)
    gh = max(4, int(round(frac * S)))
    gw = max(2, min(int(round(gh * canvas.size[0] / canvas.size[1])), S))
    m = np.zeros((S, S))
    x0, y0 = int(rng.integers(0, S - gw + 1)), int(rng.integers(0, S - gh + 1))
    m[y0:y0 + gh, x0:x0 + gw] = np.asarray(canvas.resize((gw, gh), Image.BILINEAR), dtype=np.float64) / 255
    paper, ink = rng.uniform(180, 255), rng.uniform(0, 120)
    a = paper * (1 - m) + ink * m + rng.normal(0, rng.uniform(0, 3), m.shape)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")


def augmented(X: np.ndarray, y: np.ndarray, copies: int, seed: int):
    """`copies` augmented pictures per sample, as `ink` features: (Xa, ya)."""
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for _ in range(copies):
        for x, t in zip(X, y):
            feats.append(pp.ink(picture(x, rng)))
            labels.append(t)
    return np.array(feats), np.array(labels)


def printed(copies: int, seed: int):
    """`copies` pictures of each digit in each of TRAIN_FONTS, as `ink` features: (Xf, yf)."""
    rng = np.random.default_rng(seed)
    glyphs = [(font_glyph(d, f), d) for f in TRAIN_FONTS for d in range(10)]
    feats, labels = [], []
    for _ in range(copies):
        for g, d in glyphs:
            feats.append(pp.ink(photographed(g, rng)))
            labels.append(d)
    return np.array(feats), np.array(labels)
