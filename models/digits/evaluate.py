"""Prototype measurements of the digits preprocessing on the evaluation pictures (per group, per split).

  python models/digits/evaluate.py [--split tune|heldout] [key=value ...]   (override preprocess.PARAMS)

Reads tests/fixtures/digits/eval/index.csv and runs the shipped models/digits/model.onnx
(onnxruntime) on the features of preprocess.py. Tune on `tune`; the figures that count are
`heldout`, measured on the Rust side by tests/digits.rs.
"""
from __future__ import annotations

import csv
import os
import sys
import warnings

warnings.simplefilter("ignore", FutureWarning)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import export_common as ec  # noqa: E402
import preprocess as pp  # noqa: E402
import train  # noqa: E402

EVAL = os.path.join(ec.REPO_DIR, "tests", "fixtures", "digits", "eval")


def rows(split: str | None):
    with open(os.path.join(EVAL, "index.csv")) as f:
        return [r for r in csv.DictReader(f) if split in (None, r["split"])]


def main():
    split = "tune"
    params = dict(pp.PARAMS)
    for a in sys.argv[1:]:
        if a.startswith("--split="):
            split = a.split("=", 1)[1]
        else:
            k, v = a.split("=", 1)
            params[k] = type(params[k])(v == "True" if isinstance(params[k], bool) else float(v)) \
                if not isinstance(params[k], int) or isinstance(params[k], bool) else int(v)
    sess = ec.ort_session(os.path.join(HERE, "model.onnx"))
    sel = rows(split)
    groups = list(dict.fromkeys(r["group"] for r in sel))
    methods = {"plain": lambda im: (pp.plain(im), "plain"), "ink": lambda im: (pp.ink(im, params), "ink"),
               "auto": lambda im: pp.auto(im, params)}
    feats = {m: [] for m in methods}
    paths = []
    truth = np.array([int(r["digit"]) for r in sel])
    for r in sel:
        im = Image.open(os.path.join(EVAL, r["name"]))
        im.load()
        for m, f in methods.items():
            x, path = f(im)
            feats[m].append(x)
            if m == "auto":
                paths.append(path)
    print(f"split={split} params={params}")
    print("| group | n | " + " | ".join(methods) + " | auto:grid |")
    print("|---|---|" + "---|" * (len(methods) + 1))
    for g in groups + ["hand-drawn (all but sklearn)"]:
        idx = np.array([(r["group"] == g) if not g.startswith("hand") else (r["group"] != "sklearn") for r in sel])
        cells = []
        for m in methods:
            X = np.array(feats[m])[idx].astype(np.float32)
            dec = sess.run(["decision"], {"input": X})[0]
            pred = train.votes_predict(dec)
            cells.append(f"{(pred == truth[idx]).mean() * 100:.1f}")
        ngrid = sum(1 for i in np.flatnonzero(idx) if paths[i] == "grid")
        print(f"| {g} | {idx.sum()} | " + " | ".join(cells) + f" | {ngrid} |")


if __name__ == "__main__":
    main()
