"""Regenerate the README's phantom contact sheet (a row per class) and time the renderer.

    python benchmarks/phantom_sheet.py                       # docs/img/phantom_contact_sheet.png
    python benchmarks/phantom_sheet.py --learnability 600    # + a pixel logistic-regression sanity check

Writes the PNG and `benchmarks/results/phantom.json` (render speed, sheet size, optional accuracy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retinaug.classes import CLASSES
from retinaug.phantom import phantom_counts, render_fundus

ROOT = Path(__file__).resolve().parents[1]


def contact_sheet(per_class: int, size: int, seed: int, label_w: int = 150) -> Image.Image:
    """A row per class: eyes of successive patients (alternating left/right), severity rising along the row."""
    codes = list(CLASSES)
    sheet = Image.new("RGB", (label_w + per_class * size, len(codes) * size), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, code in enumerate(codes):
        tiles = []
        for k in range(per_class):
            patient = 100_000 + 1000 * r + k  # ids outside a dataset's range: a stable, class-specific set
            img, info = render_fundus(code, patient, ("left", "right")[k % 2], size=size, seed=seed)
            tiles.append((info["severity"], img))
        tiles.sort(key=lambda t: t[0])
        for k, (_, img) in enumerate(tiles):
            sheet.paste(Image.fromarray(img), (label_w + k * size, r * size))
        draw.text((8, r * size + size // 2 - 14), code, fill=(0, 0, 0), font_size=22)
        draw.text(
            (36, r * size + size // 2 - 8),
            CLASSES[code].replace("age-related ", "age-rel. ")[:20],
            fill=(60, 60, 60),
            font_size=11,
        )
    return sheet


def learnability(n: int, px: int, seed: int) -> dict:
    """Logistic regression on `px`-pixel images of `n` phantom images, patient-level 2/3 : 1/3 split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    counts = phantom_counts(n, "uniform")
    labels = np.random.default_rng(seed).permutation(np.repeat(list(counts), list(counts.values())))
    x, y, train = [], [], []
    for i, label in enumerate(labels):
        for eye in ("left", "right"):
            img, _ = render_fundus(str(label), i, eye, size=128, seed=seed)
            x.append(np.asarray(Image.fromarray(img).resize((px, px), Image.Resampling.BOX), np.float32).ravel() / 255)
            y.append(label)
            train.append(i % 3 != 0)
    x, y, train = np.stack(x), np.array(y), np.array(train)
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(max_iter=2000, C=0.01).fit(scaler.transform(x[train]), y[train])
    pred = clf.predict(scaler.transform(x[~train]))
    return {
        "images": int(len(y)),
        "px": px,
        "classes": len(counts),
        "chance": 1 / len(counts),
        "test_images": int((~train).sum()),
        "accuracy": round(float(accuracy_score(y[~train], pred)), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(y[~train], pred)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "phantom_contact_sheet.png")
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--colors", type=int, default=256, help="palette size of the saved PNG (keeps it small); 0 = RGB")
    ap.add_argument(
        "--learnability", type=int, default=0, metavar="N", help="also fit a pixel LogisticRegression on N images"
    )
    ap.add_argument("--learn-px", type=int, default=32)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "phantom.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    sheet = contact_sheet(args.per_class, args.size, args.seed)
    seconds = time.perf_counter() - t0
    if args.colors:
        sheet = sheet.quantize(colors=args.colors, method=Image.Quantize.FASTOCTREE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    result = {
        "sheet": str(args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out),
        "sheet_bytes": args.out.stat().st_size,
        "images": args.per_class * len(CLASSES),
        "size": args.size,
        "render_images_per_s": round(args.per_class * len(CLASSES) / seconds, 1),
    }
    if args.learnability:
        result["learnability"] = learnability(args.learnability, args.learn_px, args.seed)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
