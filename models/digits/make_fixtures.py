"""Digit evaluation pictures, in groups, with a fixed tuning/held-out split (deterministic).

  python models/digits/make_fixtures.py      (after models/digits/train.py)

tests/fixtures/digits/eval/<digit>_<nnn>.<png|jpg>   the pictures (the digit is the label)
tests/fixtures/digits/eval/index.csv                 name,digit,group,split,width,height,detail
tests/fixtures/digits/eval/README.md                 what each group is
tests/fixtures/digits/python_features.json           {name: the 64 `ink` features preprocess.py makes of it}
                                                     (tests/digits.rs holds the Rust `ink` path to them)

Groups (GROUPS below): hand-drawn-style kinds that are NOT from scikit-learn's data (pen, marker,
pencil, font, photo, inverted) and `sklearn`, load_digits() samples drawn as pictures the way the
challenge ships them (8x8 up to 256x256, nearest or bilinear upscale, PNG or JPEG q75-95).
The split is drawn here, before any tuning: within each (group, digit) a seeded shuffle sends half
the pictures to `tune` and half to `heldout`. Tune preprocessing on `tune` only; report `heldout`.
"""
from __future__ import annotations

import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageFont  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import export_common as ec  # noqa: E402
import preprocess as pp  # noqa: E402  (models/digits/preprocess.py)

EVAL = os.path.join(ec.REPO_DIR, "tests", "fixtures", "digits", "eval")
SEED = 20261204
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
# group -> pictures per digit (even: half tune, half held-out)
GROUPS = {"pen": 12, "marker": 12, "pencil": 12, "font": 12, "photo": 12, "inverted": 12, "sklearn": 30}
SKLEARN_SIZES = [8, 12, 16, 24, 32, 48, 64, 100, 128, 200, 256]


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




def stroke_glyph(d: int, rng, rel_w: float) -> Image.Image:
    """High-res (about 256 px tall) mask of a pen-drawn digit (stroke width rel_w of the height), cropped."""
    size, pad = 256, 80
    width = max(2, int(rel_w * size))
    shear = rng.uniform(-0.3, 0.15)
    sx = rng.uniform(0.7, 1.1)
    img = Image.new("L", (size + 2 * pad, size + 2 * pad), 0)
    dr = ImageDraw.Draw(img)
    for s in strokes_for(d, rng):
        p = np.array(s, dtype=np.float64)
        n = len(p)
        knots = rng.normal(0, 0.025, (4, 2))          # smooth random wobble
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
        img = img.rotate(float(rng.uniform(-10, 10)), resample=Image.BICUBIC)
    return img.crop(img.getbbox())


def log_size(rng, lo: int, hi: int) -> int:
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def place(glyph: Image.Image, rng, S: int, frac_lo=0.3, frac_hi=0.9, rotate=0.0) -> np.ndarray:
    """Ink coverage 0..1 of an S x S frame holding the glyph (height frac of the frame, anywhere)."""
    ss = 4 if S <= 128 else 2                        # supersampling
    if rotate:
        glyph = glyph.rotate(rotate, resample=Image.BICUBIC, expand=True)
        glyph = glyph.crop(glyph.getbbox())
    frac = rng.uniform(frac_lo, frac_hi)
    gh = max(4, int(round(frac * S * ss)))
    aspect = glyph.size[0] / glyph.size[1] * rng.uniform(0.85, 1.15)
    gw = max(2, min(int(round(gh * aspect)), int(0.95 * S * ss)))
    g = glyph.resize((gw, gh), Image.LANCZOS)
    canvas = Image.new("L", (S * ss, S * ss), 0)
    x0 = int(rng.integers(0, S * ss - gw + 1))       # uniform: usually off-centre
    y0 = int(rng.integers(0, S * ss - gh + 1))
    canvas.paste(g, (x0, y0))
    return np.asarray(canvas.resize((S, S), Image.BOX), dtype=np.float64) / 255.0


def texture(rng, S: int, lo: float, cell: int) -> np.ndarray:
    """Multiplicative grain lo..1 (pencil on paper, chalk on a board), blotches about `cell` px."""
    n = max(2, S // cell)
    t = Image.fromarray((rng.random((n, n)) * 255).astype(np.uint8)).resize((S, S), Image.BILINEAR)
    return lo + (1 - lo) * np.asarray(t, dtype=np.float64) / 255.0


def compose(m, paper, ink, rng, sigma) -> np.ndarray:
    S = m.shape[0]
    out = paper[None, None, :] * (1 - m[..., None]) + ink[None, None, :] * m[..., None]
    if sigma:
        out = out + rng.normal(0, sigma, (S, S, 1))
    return out


def to_image(a: np.ndarray) -> Image.Image:
    a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return Image.fromarray(a[..., 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")


def pen_colour(rng, rgb: bool) -> np.ndarray:
    ink_l = rng.uniform(0, 100)
    if not rgb:
        return np.array([ink_l])
    if rng.random() < 0.5:                           # blue-ish ballpoint
        return np.array([ink_l * 0.4, ink_l * 0.5, ink_l + rng.uniform(40, 120)])
    return np.array([ink_l] * 3)


def paper_colour(rng, rgb: bool, lo=205.0) -> np.ndarray:
    p = rng.uniform(lo, 255)
    return np.array([p, p - rng.uniform(0, 8), p - rng.uniform(0, 28)]) if rgb else np.array([p])


# ------------------------------------------------------------------------------- groups
def g_pen(d, rng, fonts):
    w = rng.uniform(0.04, 0.13)
    S = log_size(rng, 16, 512)
    rgb = rng.random() < 0.5
    m = place(stroke_glyph(d, rng, w), rng, S) * rng.uniform(0.8, 1.0)
    sigma = rng.uniform(0.4, 2.0) if S <= 128 and rng.random() < 0.4 else 0.0
    return to_image(compose(m, paper_colour(rng, rgb), pen_colour(rng, rgb), rng, sigma)), "png", f"width {w:.2f}"


def g_marker(d, rng, fonts):
    w = rng.uniform(0.15, 0.24)
    S = log_size(rng, 16, 512)
    rgb = rng.random() < 0.6
    ink = (np.array(rng.choice([[20, 20, 20], [10, 30, 140], [150, 20, 20], [20, 90, 40]]), dtype=np.float64)
           if rgb else np.array([rng.uniform(0, 60)]))
    m = place(stroke_glyph(d, rng, w), rng, S, 0.4, 0.95)
    return to_image(compose(m, paper_colour(rng, rgb), ink, rng, 0.0)), "png", f"width {w:.2f}"


def g_pencil(d, rng, fonts):
    w = rng.uniform(0.03, 0.07)
    S = log_size(rng, 24, 256)
    m = place(stroke_glyph(d, rng, w), rng, S) * texture(rng, S, 0.5, 2)
    ink = np.array([rng.uniform(60, 140)])
    sigma = rng.uniform(0.5, 2.0) if S <= 128 else 0.0
    return to_image(compose(m, paper_colour(rng, False, 215), ink, rng, sigma)), "png", f"width {w:.2f}"


def g_font(d, rng, fonts):
    font = fonts[int(rng.integers(0, len(fonts)))]
    S = log_size(rng, 16, 256)
    rgb = rng.random() < 0.4
    m = place(font_glyph(d, font, rng), rng, S)
    return to_image(compose(m, paper_colour(rng, rgb), pen_colour(rng, rgb), rng, 0.0)), "png", os.path.basename(font)


def g_photo(d, rng, fonts):
    """A digit on paper, photographed: uneven light, a soft shadow, a slight rotation, JPEG."""
    S = log_size(rng, 48, 512)
    kind = rng.random()
    if kind < 0.4:
        glyph, what = stroke_glyph(d, rng, rng.uniform(0.05, 0.12)), "pen"
    elif kind < 0.7:
        glyph, what = stroke_glyph(d, rng, rng.uniform(0.14, 0.22)), "marker"
    else:
        glyph, what = font_glyph(d, fonts[int(rng.integers(0, len(fonts)))], rng), "font"
    angle = float(rng.uniform(-10, 10))
    m = place(glyph, rng, S, 0.3, 0.8, rotate=angle)
    img = compose(m, paper_colour(rng, True, 215), pen_colour(rng, True), rng, 0.0)
    yy, xx = np.mgrid[0:S, 0:S] / S
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    light = 1.0 + gx * (xx - 0.5) + gy * (yy - 0.5) - rng.uniform(0, 0.3) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    # a soft-edged shadow over one side of the picture (a hand or a phone)
    theta = rng.uniform(0, 2 * np.pi)
    dist = (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta) - rng.uniform(0.15, 0.45)
    shadow = 1.0 - rng.uniform(0.2, 0.45) / (1.0 + np.exp(-dist / rng.uniform(0.03, 0.1)))
    img = img * (light * shadow)[..., None] * rng.uniform(0.75, 1.0)
    img = img + rng.normal(0, rng.uniform(1.0, 3.0), img.shape)
    q = int(rng.integers(80, 93))
    return to_image(img), ("jpg", q), f"{what}, rotated {angle:.1f}, jpeg q{q}"


def g_inverted(d, rng, fonts):
    """Light chalk or paint on a dark board."""
    S = log_size(rng, 24, 192)
    if rng.random() < 0.7:
        glyph = stroke_glyph(d, rng, rng.uniform(0.06, 0.16))
    else:
        glyph = font_glyph(d, fonts[int(rng.integers(0, len(fonts)))], rng)
    m = place(glyph, rng, S) * texture(rng, S, 0.55, 3)
    board = np.array(rng.choice([[30, 45, 35], [25, 25, 28], [40, 40, 45], [15, 50, 30]]), dtype=np.float64)
    chalk = np.full(3, rng.uniform(190, 250))
    sigma = rng.uniform(0.5, 2.0) if S <= 96 else 0.0
    return to_image(compose(m, board + rng.uniform(-10, 10), chalk, rng, sigma)), "png", "chalk"


def g_sklearn(i, x, rng):
    """load_digits sample i as the challenge ships it: grey = 255 - 255 * x / 16, upscaled, encoded."""
    small = Image.fromarray(np.round(255 - 255 * x.reshape(8, 8) / 16).astype(np.uint8), "L")
    size = SKLEARN_SIZES[int(rng.integers(0, len(SKLEARN_SIZES)))]
    filt = "nearest" if rng.random() < 0.5 else "bilinear"
    im = small if size == 8 else small.resize((size, size), Image.NEAREST if filt == "nearest" else Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.convert("RGB")
    fmt = rng.choice(["png", "jpg75", "jpg85", "jpg95"])
    enc = ("jpg", int(fmt[3:])) if fmt.startswith("jpg") else "png"
    return im, enc, f"load_digits[{i}], {size}px {filt}, {fmt}"


HAND = {"pen": g_pen, "marker": g_marker, "pencil": g_pencil, "font": g_font, "photo": g_photo,
        "inverted": g_inverted}


def save(im: Image.Image, enc, stem: str) -> str:
    if enc == "png":
        name = stem + ".png"
        im.save(os.path.join(EVAL, name), optimize=True)
    else:
        name = stem + ".jpg"
        im.save(os.path.join(EVAL, name), quality=enc[1])
    return name


def main():
    fonts = [os.path.join(FONT_DIR, f) for f in FONTS]
    missing = [f for f in fonts if not os.path.exists(f)]
    if missing:
        ec.die(f"fonts missing: {missing} (apt-get install fonts-dejavu fonts-urw-base35 fonts-noto-mono)")
    os.makedirs(EVAL, exist_ok=True)
    for f in os.listdir(EVAL):
        os.remove(os.path.join(EVAL, f))
    rng = np.random.default_rng(SEED)
    X, y = load_digits(return_X_y=True)
    rows = []
    counter = [0] * 10
    for group, per_digit in GROUPS.items():
        for d in range(10):
            split = np.array(["tune", "heldout"] * (per_digit // 2))
            rng.shuffle(split)
            if group == "sklearn":
                picks = rng.choice(np.flatnonzero(y == d), per_digit, replace=False)
            for n in range(per_digit):
                if group == "sklearn":
                    im, enc, detail = g_sklearn(int(picks[n]), X[picks[n]], rng)
                else:
                    im, enc, detail = HAND[group](d, rng, fonts)
                name = save(im, enc, f"{d}_{counter[d]:03d}")
                counter[d] += 1
                rows.append([name, d, group, str(split[n]), im.size[0], im.size[1], detail])
    rows.sort(key=lambda r: r[0])
    with open(os.path.join(EVAL, "index.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "digit", "group", "split", "width", "height", "detail"])
        w.writerows(rows)
    write_readme(rows)
    feats = {}
    for r in rows:
        with Image.open(os.path.join(EVAL, r[0])) as im:
            feats[r[0]] = [int(v) for v in pp.ink(im)]
    with open(os.path.join(os.path.dirname(EVAL), "python_features.json"), "w") as f:
        f.write("{\n" + ",\n".join(f'"{k}":{json.dumps(v, separators=(",", ":"))}' for k, v in feats.items()) + "\n}\n")
    total = sum(os.path.getsize(os.path.join(EVAL, f)) for f in os.listdir(EVAL))
    print(f"eval: {len(rows)} pictures, {total} bytes")
    for g in GROUPS:
        sel = [r for r in rows if r[2] == g]
        size = sum(os.path.getsize(os.path.join(EVAL, r[0])) for r in sel)
        print(f"  {g}: {len(sel)} pictures, {size} bytes")


def write_readme(rows):
    counts = {g: sum(1 for r in rows if r[2] == g) for g in GROUPS}
    fonts = "\n".join(f"  - {f}" for f in FONTS)
    text = f"""# Digit evaluation pictures

{len(rows)} pictures named `<digit>_<nnn>.<png|jpg>` (the digit is the label), made by
`models/digits/make_fixtures.py` (numpy `default_rng({SEED})`, Pillow; deterministic for fixed
package versions and fonts). `index.csv` gives each picture's group, split, size and details.

**Split**: within each (group, digit), a seeded shuffle sends half the pictures to `tune` and half to
`heldout`, drawn before anything was tuned. Preprocessing is tuned on `tune` only; accuracy is
reported on `heldout` only (`tests/digits.rs`).

| group | pictures | what |
|---|---|---|
| pen | {counts['pen']} | synthetic pen strokes (per-digit polylines/arcs, wobble, slant), width 4-13 % of the digit height, black or blue ink, 16-512 px, digit 30-90 % of the frame anywhere in it, light noise on some |
| marker | {counts['marker']} | the same strokes 15-24 % wide (thick marker), black/blue/red/green, 16-512 px |
| pencil | {counts['pencil']} | thin (3-7 %) light grey strokes with paper grain, 24-256 px, greyscale |
| font | {counts['font']} | printed digits from 15 fonts (70 % rotated up to +-10 degrees), 16-256 px |
| photo | {counts['photo']} | pen, marker or font digits on photographed paper: light gradient and vignette, a soft-edged shadow, rotation up to +-10 degrees, sensor noise, JPEG q80-92, 48-512 px |
| inverted | {counts['inverted']} | chalk (light, grainy) on a dark board, 24-192 px |
| sklearn | {counts['sklearn']} | `load_digits()` samples (grey = 255 - 255 x / 16) at 8-256 px ({', '.join(map(str, SKLEARN_SIZES))}), nearest or bilinear upscale, grey or RGB, PNG or JPEG q75/85/95 |

Fonts (under /usr/share/fonts):
{fonts}

The `sklearn` group's samples are from the SVC's own training data (as the challenge's examples are);
the other groups are not.
"""
    with open(os.path.join(EVAL, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
