"""Label synthetic images with a trained classifier and decide which ones to keep (seed step 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RetinaugError
from ..io import write_json_atomic
from ..manifest import load_manifest, save_manifest
from .models import load_classifier, predict

POLICIES = ("agree", "relabel", "all")


def label(model_dir: Path, synthetic: Path, policy: str = "agree", threshold: float = 0.5) -> pd.DataFrame:
    """Add pred_label, pred_conf, accepted to SYNTHETIC/manifest.parquet (rewritten atomically in place).

    agree:   accepted when the prediction equals the intended label and its confidence >= threshold.
    relabel: the seed's policy: label := prediction (intended label kept in `intended_label`),
             accepted when confidence >= threshold.
    all:     every image accepted (the no-filter control).
    Re-running is safe: the intended label is read back from `intended_label` when present."""
    if policy not in POLICIES:
        raise RetinaugError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    if not 0 <= threshold <= 1:
        raise RetinaugError(f"threshold must be between 0 and 1, got {threshold}")
    clf = load_classifier(model_dir)
    df = load_manifest(synthetic)
    root = df.attrs["manifest_dir"]
    if "intended_label" in df.columns:
        df["label"] = df["intended_label"]
    probs = predict(clf, df)
    pred = np.asarray(clf.classes)[probs.argmax(1)] if len(df) else np.array([], dtype=str)
    conf = probs.max(1) if len(df) else np.array([])
    confident = conf >= threshold
    unknown = ~df["label"].isin(clf.classes)
    if unknown.any():
        print(f"{int(unknown.sum())} image(s) of class(es) the labeler lacks {sorted(set(df.loc[unknown, 'label']))}: never 'agree'")
    df["pred_label"] = pd.array(pred, dtype="string")
    df["pred_conf"] = pd.array(conf, dtype="Float64")
    if policy == "agree":
        accepted = (df["label"].to_numpy() == pred) & confident
    elif policy == "relabel":
        df["intended_label"] = df["label"].astype("string")
        df["label"] = df["pred_label"]
        accepted = confident
    else:
        accepted = np.ones(len(df), dtype=bool)
    df["accepted"] = pd.array(accepted, dtype="boolean")
    save_manifest(df, synthetic)
    group = "intended_label" if "intended_label" in df.columns else "label"
    summary = {"policy": policy, "threshold": threshold, "model": str(model_dir), "per_class": {}}
    for c, rows in df.groupby(group, sort=False):
        n, k = len(rows), int(rows["accepted"].sum())
        summary["per_class"][str(c)] = {"generated": n, "accepted": k, "rate": k / n, "mean_conf": float(rows["pred_conf"].mean())}
        print(f"{c}: accepted {k}/{n} ({k / n:.0%})")
    total = int(df["accepted"].sum())
    summary.update(generated=len(df), accepted=total, rate=total / len(df) if len(df) else 0.0)
    print(f"all: accepted {total}/{len(df)} under policy {policy!r}, threshold {threshold}")
    write_json_atomic(Path(root) / "label_summary.json", summary)
    return df

