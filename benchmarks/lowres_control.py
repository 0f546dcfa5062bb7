"""Is a labeler's verdict on small synthetic images about their class or about their size? (issue 27)

The odir-cpu generator draws 64 px images; a labeler trained at a larger size sees them upscaled, i.e. blurred. This
scores the labeler on the run's real test images twice: as they are, and after a round trip through SIZE px (the
synthetic images' size). Whatever the second confusion matrix adds over the first (e.g. G and A read as C, cataract's
blur) is what the size alone does to a verdict, and so to class fidelity and to the `relabel` policy.

  python benchmarks/lowres_control.py runs/grid27 --size 64
  -> RUN/lowres-control/{control.json,images/}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from retinaug.classify import load_classifier, predict
from retinaug.io import write_json_atomic
from retinaug.manifest import load_manifest


def verdicts(clf, df: pd.DataFrame) -> dict:
    """Per-class recall and the confusion matrix (rows: true class, columns: the labeler's class)."""
    classes = list(clf.classes)
    pred = np.array(classes)[predict(clf, df).argmax(1)]
    confusion = pd.crosstab(df["label"].to_numpy(), pred).reindex(index=classes, columns=classes, fill_value=0)
    recall = {
        c: round(float((pred[df["label"].to_numpy() == c] == c).mean()), 3) for c in classes if (df["label"] == c).any()
    }
    return {"n": int(len(df)), "recall": recall, "confusion": confusion.to_dict(orient="index")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--size", type=int, default=64, help="the synthetic images' size (px)")
    args = p.parse_args()
    clf = load_classifier(args.run / "labeler")
    data = load_manifest(args.run / "data")
    test = data[(data["split"] == "test") & data["label"].isin(clf.classes)].reset_index(drop=True)
    out = args.run / "lowres-control"
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    small = []
    for i, path in enumerate(test["path"]):
        target = images / f"{i}.png"
        Image.open(path).convert("RGB").resize((args.size, args.size), Image.BICUBIC).save(target)
        small.append(str(target.resolve()))
    result = {
        "labeler_size": clf.size,
        "round_trip_size": args.size,
        "as_is": verdicts(clf, test),
        "round_trip": verdicts(clf, test.assign(path=small)),
    }
    write_json_atomic(out / "control.json", result)
    print(json.dumps({k: v["recall"] for k, v in result.items() if isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
