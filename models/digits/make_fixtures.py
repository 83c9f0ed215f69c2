"""Digit-reader fixtures (deterministic; run after models/digits/train.py).

  python models/digits/make_fixtures.py

tests/fixtures/digits/sklearn_digits.json
    JSON array, one object per line, for all 1797 samples of sklearn.datasets.load_digits(), in dataset order:
    {"x": [64 ints 0..16], "target": t, "predict": sklearn predict of the shipped (refit) SVC,
     "proba": [10 floats, predict_proba], "decision": [45 floats, decision_function ovo]}
    floats rounded to 7 significant digits.
tests/fixtures/digits/eval/<digit>_<nnn>.png  (+ README.md)
    300 synthetic hand-drawn-like digit images, NOT from the sklearn data: nnn 000-014 rendered from
    TrueType/OpenType fonts, 015-029 synthetic pen strokes; dark ink on light paper, seeded.
"""
from __future__ import annotations

import json
import os
import sys
import warnings

os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning"
warnings.simplefilter("ignore", FutureWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import export_common as ec  # noqa: E402
import train  # noqa: E402  (models/digits/train.py)
from reference import sha256_file  # noqa: E402

OUT = os.path.join(ec.REPO_DIR, "tests", "fixtures", "digits")
EVAL = os.path.join(OUT, "eval")
SEED = 20240
PER_DIGIT = 30
N_FONT = 15          # nnn 000..014 font-rendered, 015..029 pen strokes
FONT_DIR = "/usr/share/fonts"
FONTS = [
    "truetype/dejavu/DejaVuSans.ttf",
    "truetype/dejavu/DejaVuSans-Bold.ttf",
    "truetype/dejavu/DejaVuSans-Oblique.ttf",
    "truetype/dejavu/DejaVuSerif.ttf",
    "truetype/dejavu/DejaVuSansMono.ttf",
    "truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "truetype/noto/NotoSansMono-Regular.ttf",
    "opentype/urw-base35/NimbusSans-Regular.otf",
    "opentype/urw-base35/NimbusRoman-Regular.otf",
    "opentype/urw-base35/NimbusMonoPS-Bold.otf",
    "opentype/urw-base35/URWGothic-Book.otf",
    "opentype/urw-base35/URWBookman-Light.otf",
    "opentype/urw-base35/C059-Italic.otf",
    "opentype/urw-base35/P052-Roman.otf",
    "opentype/urw-base35/Z003-MediumItalic.otf",
]


def r7(v: float) -> float:
    return float(f"{v:.7g}")


# ------------------------------------------------------------------------------- sklearn fixture
def sklearn_fixture():
    man = json.load(open(os.path.join(HERE, "model.json")))
    svc = man["svc"]
    X, y = load_digits(return_X_y=True)
    clf = train.make_svc(C=svc["C"], gamma=svc["gamma"]).fit(X, y)
    # same model as the one shipped: identical Platt parameters and ONNX decision values
    assert np.array_equal(clf.probA_, svc["prob_a"]) and np.array_equal(clf.probB_, svc["prob_b"])
    assert sha256_file(os.path.join(HERE, "model.onnx")) == man["onnx"]["sha256"]
    sess = ec.ort_session(os.path.join(HERE, "model.onnx"))
    dec = clf.decision_function(X)
    dec_onnx = sess.run(["decision"], {"input": X.astype(np.float32)})[0]
    assert np.abs(dec - dec_onnx).max() < 1e-4
    pred = clf.predict(X)
    proba = clf.predict_proba(X)
    os.makedirs(OUT, exist_ok=True)
    lines = []
    for i in range(len(X)):
        lines.append(json.dumps({
            "x": [int(v) for v in X[i]], "target": int(y[i]), "predict": int(pred[i]),
            "proba": [r7(v) for v in proba[i]], "decision": [r7(v) for v in dec[i]],
        }, separators=(",", ":")))
    path = os.path.join(OUT, "sklearn_digits.json")
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(lines) + "\n]\n")
    back = json.load(open(path))
    assert len(back) == 1797
    print(f"wrote {path} ({os.path.getsize(path)} bytes); train accuracy {float((pred == y).mean()):.4f}")
    return clf


# ------------------------------------------------------------------------------- pen strokes
def arc(cx, cy, rx, ry, a0, a1, n=40):
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))   # y down: increasing angle = clockwise


def strokes_for(d: int, rng) -> list:
    """Polylines in a unit box (x right, y down), one of a few styles per digit."""
    v = int(rng.integers(0, 2))
    if d == 0:
        return [arc(0.5, 0.5, 0.36 + 0.06 * v, 0.48, -90 - 10 * v, 285)]
    if d == 1:
        s = [[(0.55, 0.0), (0.52, 1.0)]]
        if v:
            s[0].insert(0, (0.28, 0.25))
        if rng.random() < 0.3:
            s.append([(0.3, 1.0), (0.8, 1.0)])
        return s
    if d == 2:
        return [arc(0.5, 0.3, 0.36, 0.3, 170, 395) + [(0.1, 1.0), (0.92, 1.0 - 0.04 * v)]]
    if d == 3:
        return [arc(0.5, 0.26, 0.33, 0.25, 200, 450) + arc(0.5, 0.73, 0.38, 0.27, 270, 520)]
    if d == 4:
        if v:
            return [[(0.35, 0.0), (0.12, 0.6), (0.92, 0.6)], [(0.7, 0.18), (0.7, 1.0)]]
        return [[(0.62, 0.0), (0.06, 0.68), (0.94, 0.68)], [(0.66, 0.3), (0.66, 1.0)]]
    if d == 5:
        return [[(0.84, 0.02), (0.26, 0.02), (0.2, 0.46)] + arc(0.48, 0.68, 0.36, 0.3, 235, 515)]
    if d == 6:
        return [[(0.74, 0.0), (0.45, 0.14), (0.25, 0.42)] + arc(0.5, 0.72, 0.32, 0.27, 190, 540)]
    if d == 7:
        s = [[(0.08, 0.08 * v), (0.92, 0.02), (0.42 + 0.1 * v, 1.0)]]
        if rng.random() < 0.3:
            s.append([(0.4, 0.52), (0.82, 0.52)])
        return s
    if d == 8:
        if v:
            return [arc(0.5, 0.25, 0.27, 0.24, 90, 450), arc(0.5, 0.72, 0.33, 0.27, -90, 270)]
        # one continuous figure of eight
        return [arc(0.5, 0.25, 0.27, 0.24, 90, -180, 40) + arc(0.5, 0.74, 0.33, 0.26, -90, 270, 60)[::-1]
                + arc(0.5, 0.25, 0.27, 0.24, 180, 90, 20)]
    if d == 9:
        return [arc(0.5, 0.3, 0.3, 0.28, 0, 360), [(0.8, 0.3), (0.74, 0.65), (0.62 - 0.1 * v, 1.0)]]
    raise ValueError(d)


def stroke_glyph(d: int, rng) -> Image.Image:
    """High-res (about 256 px tall) mask of a pen-drawn digit, tightly cropped."""
    size, pad = 256, 64
    rel_w = rng.uniform(0.05, 0.16)
    width = max(2, int(rel_w * size))
    shear = rng.uniform(-0.3, 0.15)
    sx = rng.uniform(0.7, 1.1)
    img = Image.new("L", (size + 2 * pad, size + 2 * pad), 0)
    dr = ImageDraw.Draw(img)
    for s in strokes_for(d, rng):
        p = np.array(s, dtype=np.float64)
        # smooth random wobble: a few random knots interpolated along the stroke
        n = len(p)
        knots = rng.normal(0, 0.025, (4, 2))
        t = np.linspace(0, 3, n)
        wob = np.stack([np.interp(t, np.arange(4), knots[:, k]) for k in (0, 1)], axis=1)
        p = p + wob + rng.normal(0, 0.004, p.shape)
        x = (p[:, 0] - 0.5) * sx + 0.5 + shear * (0.5 - p[:, 1])
        y = p[:, 1]
        pts = [(float(pad + xi * size), float(pad + yi * size)) for xi, yi in zip(x, y)]
        dr.line(pts, fill=255, width=width, joint="curve")
        r = width / 2
        for q in (pts[0], pts[-1]):
            dr.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=255)
    return img.crop(img.getbbox())


def font_glyph(d: int, font_path: str, rng) -> Image.Image:
    font = ImageFont.truetype(font_path, 220)
    img = Image.new("L", (400, 400), 0)
    ImageDraw.Draw(img).text((90, 60), str(d), font=font, fill=255)
    if rng.random() < 0.7:
        img = img.rotate(float(rng.uniform(-12, 12)), resample=Image.BICUBIC)
    return img.crop(img.getbbox())


def render(glyph: Image.Image, rng, *, rgb: bool) -> Image.Image:
    S = int(rng.integers(32, 97))
    ss = 4                                           # supersampling
    frac = rng.uniform(0.2, 0.9)                     # digit height / frame height
    gh = max(4, int(round(frac * S * ss)))
    aspect = glyph.size[0] / glyph.size[1] * rng.uniform(0.85, 1.15)
    gw = max(2, min(int(round(gh * aspect)), int(0.95 * S * ss)))
    g = glyph.resize((gw, gh), Image.LANCZOS)
    canvas = Image.new("L", (S * ss, S * ss), 0)
    x0 = int(rng.integers(0, S * ss - gw + 1))       # uniform: usually off-centre
    y0 = int(rng.integers(0, S * ss - gh + 1))
    canvas.paste(g, (x0, y0))
    m = np.asarray(canvas.resize((S, S), Image.BOX), dtype=np.float64) / 255.0
    m *= rng.uniform(0.75, 1.0)                      # ink coverage / pressure
    paper_l = rng.uniform(205, 255)
    ink_l = rng.uniform(0, 110)
    sigma = 0.0 if rng.random() < 0.6 else rng.uniform(0.4, 2.0)   # paper noise (kept small: PNG size)
    noise = rng.normal(0, sigma, (S, S, 1))
    if rgb:
        paper = np.array([paper_l, paper_l - rng.uniform(0, 8), paper_l - rng.uniform(0, 28)])  # white..cream
        ink = np.array([ink_l * 0.5, ink_l * 0.6, ink_l + rng.uniform(0, 60)]) if rng.random() < 0.5 \
            else np.array([ink_l, ink_l, ink_l])        # blue-ish pen or black
    else:
        paper = np.array([paper_l])
        ink = np.array([ink_l])
    out = paper[None, None, :] * (1 - m[..., None]) + ink[None, None, :] * m[..., None] + noise
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB") if rgb else Image.fromarray(out[..., 0], "L")


def make_eval():
    os.makedirs(EVAL, exist_ok=True)
    for f in os.listdir(EVAL):
        os.remove(os.path.join(EVAL, f))
    rng = np.random.default_rng(SEED)
    fonts = [os.path.join(FONT_DIR, f) for f in FONTS]
    missing = [f for f in fonts if not os.path.exists(f)]
    if missing:
        ec.die(f"fonts missing: {missing} (apt-get install fonts-dejavu fonts-urw-base35 fonts-noto-mono)")
    rows = []
    for d in range(10):
        for n in range(PER_DIGIT):
            if n < N_FONT:
                font = fonts[(n + d) % len(fonts)]
                glyph, kind = font_glyph(d, font, rng), os.path.basename(font)
            else:
                glyph, kind = stroke_glyph(d, rng), "strokes"
            rgb = rng.random() < 0.4
            im = render(glyph, rng, rgb=rgb)
            name = f"{d}_{n:03d}.png"
            im.save(os.path.join(EVAL, name), optimize=True)
            rows.append((name, d, kind, im.mode, im.size[0]))
    return rows


# ------------------------------------------------------------------------------- informative baseline
def naive_features(path: str) -> np.ndarray:
    """A simple reading pipeline, only to show the set is legible (NOT the Rust contract)."""
    g = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    bg = np.median(g)
    ink = np.clip((bg - g) / max(bg - g.min(), 1), 0, 1)
    ys, xs = np.nonzero(ink > 0.3)
    crop = ink[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    h, w = crop.shape
    s = 28 / max(h, w)
    im = Image.fromarray((crop * 255).astype(np.uint8)).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    box = np.zeros((32, 32))
    a = np.asarray(im, dtype=np.float64) / 255
    oy, ox = (32 - a.shape[0]) // 2, (32 - a.shape[1]) // 2
    box[oy: oy + a.shape[0], ox: ox + a.shape[1]] = a
    return (box > 0.35).reshape(8, 4, 8, 4).sum(axis=(1, 3)).reshape(64).astype(np.float64)


def write_readme(rows, acc_font, acc_strokes):
    sizes = sorted({r[4] for r in rows})
    modes = {m: sum(1 for r in rows if r[3] == m) for m in ("L", "RGB")}
    fonts = "\n".join(f"  - {f}" for f in FONTS)
    text = f"""# Digit evaluation images

Synthetic, hand-drawn-like digits that are NOT from scikit-learn's digits data: {len(rows)} PNGs,
{PER_DIGIT} per digit, named `<digit>_<nnn>.png` (the digit is the label).

- made by `models/digits/make_fixtures.py` (`python models/digits/make_fixtures.py`), numpy
  `default_rng({SEED})`, Pillow's FreeType and ImageDraw; deterministic for fixed package versions
- `nnn` 000-{N_FONT - 1:03d}: the digit rendered from a font (font index (nnn + digit) mod {len(FONTS)}),
  70 % of them rotated by up to +-12 degrees; fonts (under /usr/share/fonts):
{fonts}
- `nnn` {N_FONT:03d}-{PER_DIGIT - 1:03d}: synthetic pen strokes: per-digit polylines/arcs with smooth random
  wobble, slant (shear -0.3..0.15), width 5-16 % of the digit height, round caps
- each image: square frame of {sizes[0]}-{sizes[-1]} px; digit height 20-90 % of the frame, aspect jitter
  +-15 %, placed uniformly at random (usually off-centre); drawn at 4x and box-filtered down (anti-aliased);
  ink coverage 75-100 %, ink level 0-110 (black or blue-ish pen in RGB), paper 205-255 (white, light grey,
  cream in RGB), Gaussian noise: none in 60 %, else sigma 0.4-2.0
- {modes['L']} greyscale (mode L) and {modes['RGB']} RGB PNGs, 8-bit, no alpha

Sanity figure (informative only, not a contract): a naive reader (median background, ink threshold,
bbox crop, fit into 28 px inside 32x32, threshold, 4x4 block counts -> the shipped SVC) gets
{acc_font:.1%} on the font images and {acc_strokes:.1%} on the pen-stroke images.
"""
    with open(os.path.join(EVAL, "README.md"), "w") as f:
        f.write(text)


def main():
    clf = sklearn_fixture()
    rows = make_eval()
    pred = clf.predict(np.stack([naive_features(os.path.join(EVAL, r[0])) for r in rows]))
    truth = np.array([r[1] for r in rows])
    is_font = np.array([r[2] != "strokes" for r in rows])
    acc_font = float((pred[is_font] == truth[is_font]).mean())
    acc_strokes = float((pred[~is_font] == truth[~is_font]).mean())
    for d in range(10):
        sel = truth == d
        print(f"digit {d}: naive-reader accuracy {float((pred[sel] == d).mean()):.2f}")
    write_readme(rows, acc_font, acc_strokes)
    total = sum(os.path.getsize(os.path.join(EVAL, f)) for f in os.listdir(EVAL))
    print(f"eval: {len(rows)} images, {total} bytes; naive reader: fonts {acc_font:.3f}, strokes {acc_strokes:.3f}")


if __name__ == "__main__":
    main()
