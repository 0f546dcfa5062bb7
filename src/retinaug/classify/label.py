"""Label synthetic images with a trained classifier and decide which ones to keep (seed step 3); the labeler's class
probabilities it stores are the soft targets of `soft_labels` scenarios."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RetinaugError
from ..io import write_json_atomic
from ..manifest import load_manifest, manifest_rows, prob_column, save_manifest
from .config import LabelConfig
from .models import load_classifier, predict

log = logging.getLogger("retinaug.classify")


def label(
    labeler: str | Path, synthetic: str | Path | pd.DataFrame, config: LabelConfig, out: str | Path
) -> pd.DataFrame:
    """Write OUT/manifest.parquet: every synthetic row with pred_label, pred_conf, accepted, intended_label (the
    class asked of the generator) and prob_<code> (the labeler's probability of each of its classes), and OUT/summary.json (acceptance per class). The synthetic manifest
    itself is never rewritten, so labelling twice, or with another policy, always starts from the same rows.

    agree:   accepted when the prediction equals the intended label and its confidence >= threshold.
    relabel: the seed's policy: label := prediction, accepted when confidence >= threshold.
    all:     every image accepted (the no-filter control)."""
    policy, threshold = config.policy, config.threshold
    clf = load_classifier(labeler)
    df = manifest_rows(synthetic).copy()  # the labels are added to a copy: the synthetic manifest is never changed
    df["intended_label"] = df["label"].astype("string")
    probs = predict(clf, df)
    pred = np.asarray(clf.classes)[probs.argmax(1)] if len(df) else np.array([], dtype=str)
    conf = probs.max(1) if len(df) else np.array([])
    confident = conf >= threshold
    unknown = ~df["label"].isin(clf.classes)
    if unknown.any():
        log.warning(
            "%d image(s) of class(es) the labeler lacks %s: never 'agree'",
            int(unknown.sum()),
            sorted(set(df.loc[unknown, "label"])),
        )
    df["pred_label"] = pd.array(pred, dtype="string")
    df["pred_conf"] = pd.array(conf, dtype="Float64")
    for j, code in enumerate(clf.classes):
        df[prob_column(code)] = pd.array(probs[:, j], dtype="Float64")
    if policy == "agree":
        accepted = (df["label"].to_numpy() == pred) & confident
    elif policy == "relabel":
        df["label"] = df["pred_label"]
        accepted = confident
    else:
        accepted = np.ones(len(df), dtype=bool)
    df["accepted"] = pd.array(accepted, dtype="boolean")
    out = Path(out)
    save_manifest(df, out)
    summary = {"policy": policy, "threshold": threshold, "model": str(labeler), "per_class": {}}
    for c, rows in df.groupby("intended_label", sort=False):
        n, k = len(rows), int(rows["accepted"].sum())
        summary["per_class"][str(c)] = {
            "generated": n,
            "accepted": k,
            "rate": k / n,
            "mean_conf": float(rows["pred_conf"].mean()),
        }
        log.info("%s: accepted %d/%d (%.0f%%)", c, k, n, 100 * k / n)
    total = int(df["accepted"].sum())
    summary.update(generated=len(df), accepted=total, rate=total / len(df) if len(df) else 0.0)
    log.info("all: accepted %d/%d under policy %r, threshold %s", total, len(df), policy, threshold)
    write_json_atomic(out / "summary.json", summary)
    return load_manifest(out)


def soft_targets(df: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(rows, classes) float32: the labeler's probabilities of `df`'s rows (the label stage's prob_<code> columns)
    over `classes`, renormalised to sum to 1 (a task of fewer classes than the labeler's). Refuses rows the labeler
    gave no probability of a task class, and rows with none of them above 0."""
    if df.empty:
        return np.zeros((0, len(classes)), dtype=np.float32)
    columns = [prob_column(c) for c in classes]
    if not any(col in df.columns for col in columns):
        raise RetinaugError(
            "soft_labels needs the labeler's class probabilities (prob_<code> columns of the label stage's "
            "manifest), which this label manifest predates: re-run the label stage (retinaug run ... "
            "--force label) or drop soft_labels"
        )
    unscored = {c: int(df[col].isna().sum()) if col in df.columns else len(df) for c, col in zip(classes, columns)}
    lacking = [c for c, n in unscored.items() if n]
    if lacking:
        raise RetinaugError(
            f"soft_labels: the labeler gave no probability of class(es) {', '.join(lacking)} (task "
            f"{','.join(classes)}) for {max(unscored.values())} synthetic row(s): label them with a labeler "
            "trained on every class of the task, or drop soft_labels"
        )
    probs = df[columns].to_numpy(dtype=np.float64)
    total = probs.sum(1, keepdims=True)
    if (total <= 0).any():
        raise RetinaugError(
            f"soft_labels: the labeler gives {int((total <= 0).sum())} synthetic row(s) probability 0 for "
            f"every class of task {','.join(classes)} (e.g. {df['path'].iloc[int(np.argmax(total <= 0))]}); "
            "drop soft_labels, or accept only images the labeler agrees with (label.policy: agree)"
        )
    return (probs / total).astype(np.float32)
