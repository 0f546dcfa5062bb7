"""Does a synthetic image carry its class? Two measures of the generator, both before the labeler's filter.

- Class fidelity: per class, the share of synthetic images the labeler assigns to the class they were asked
  to show, divided by the labeler's recall of that class on real TEST images. The labeler is imperfect, so the
  raw share is read against how often it recognises real images of the class: 1.0 = as recognisable as real
  images, 0 = never recognised as the class.
- CAS, the Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained on synthetic images
  only (as many per class as the class has real train images), scored on the real test patients, beside the
  same recipe trained on the real train images (same seed). It asks whether the synthetic images teach the
  class boundary, not only whether one classifier recognises them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import CODES, resolve_task
from ..classify import Classifier, EvaluateConfig, TrainConfig, evaluate, fit, load_classifier, predict
from ..manifest import real_rows

CAS_SCORES = ("macro_precision", "macro_recall", "macro_f1", "accuracy")


def asked_class(synthetic_df: pd.DataFrame) -> pd.Series:
    """The class each synthetic image was generated as: `intended_label` (kept by the relabel policy), else `label`."""
    col = synthetic_df["intended_label"] if "intended_label" in synthetic_df.columns else synthetic_df["label"]
    return col.fillna(synthetic_df["label"]).astype(str)


def _predicted(synthetic_df: pd.DataFrame, clf: Classifier | None) -> tuple[np.ndarray | None, str]:
    """The labeler's class per synthetic image: the label stage's `pred_label` when every row has one, else predicted."""
    if "pred_label" in synthetic_df.columns and synthetic_df["pred_label"].notna().all():
        return synthetic_df["pred_label"].astype(str).to_numpy(), "pred_label column (the label stage's predictions)"
    if clf is None:
        return None, "no labeler and no pred_label column"
    return np.asarray(clf.classes)[predict(clf, synthetic_df).argmax(1)], "predicted with the labeler"


def class_fidelity(
    synthetic_df: pd.DataFrame, data_df: pd.DataFrame, labeler: Classifier | str | Path | None
) -> tuple[dict, pd.DataFrame]:
    """Per asked class: share of its synthetic images the labeler assigns to it / the labeler's recall of it on the
    real test images. Returns (summary dict, one row per synthetic image: path, asked, pred_label, agrees).

    Every synthetic row counts (no filtering). A class gets `fidelity` None, with a `reason`, when the labeler
    does not know it, has no real test image of it, or never recognises it there (recall 0)."""
    clf = labeler if isinstance(labeler, Classifier) or labeler is None else load_classifier(labeler)
    asked = asked_class(synthetic_df).to_numpy()
    pred, source = _predicted(synthetic_df, clf)
    per_image = pd.DataFrame(
        {"path": synthetic_df["path"].to_numpy(), "asked": asked, "pred_label": pred if pred is not None else pd.NA}
    )
    per_image["agrees"] = per_image["asked"] == per_image["pred_label"] if pred is not None else pd.NA
    classes = [c for c in CODES if c in set(asked)]
    recall: dict[str, tuple[int, float | None]] = {}
    if clf is not None:
        test = real_rows(data_df, "test", classes)
        test_pred = np.asarray(clf.classes)[predict(clf, test).argmax(1)] if len(test) else np.array([], dtype=str)
        truth = test["label"].astype(str).to_numpy()
        recall = {
            c: (int((truth == c).sum()), float((test_pred[truth == c] == c).mean()) if (truth == c).any() else None)
            for c in classes
        }
    per_class = {}
    for c in classes:
        mine = pred[asked == c] if pred is not None else None
        n_test, rec = recall.get(c, (0, None))
        row: dict = {
            "n_synthetic": int((asked == c).sum()),
            "n_assigned": None,
            "share": None,
            "assigned_to": {},
            "n_test": n_test,
            "test_recall": rec,
            "fidelity": None,
            "reason": None,
        }
        if mine is not None:
            row["n_assigned"] = int((mine == c).sum())
            row["share"] = row["n_assigned"] / len(mine)
            row["assigned_to"] = {k: int(v) for k, v in pd.Series(mine).value_counts().items()}
        if pred is None:
            row["reason"] = "no labeler predictions (pass the labeler, or label the synthetic images first)"
        elif clf is None:
            row["reason"] = "no labeler to measure its recall on the real test images"
        elif c not in clf.classes:
            row["reason"] = f"the labeler was not trained on class {c}"
        elif n_test == 0:
            row["reason"] = f"no real test image of class {c}"
        elif not rec:
            row["reason"] = f"the labeler recognises no real test image of class {c} (recall 0)"
        else:
            row["fidelity"] = row["share"] / rec
        per_class[c] = row
    scored = [r["fidelity"] for r in per_class.values() if r["fidelity"] is not None]
    summary = {
        "definition": "share of synthetic images (all, before filtering) the labeler assigns to the asked class, "
        "divided by the labeler's recall of that class on the real test images (1.0 = as recognisable as real images)",
        "predictions": source,
        "labeler": None if clf is None else {"classes": list(clf.classes), "backbone": clf.meta.get("backbone")},
        "per_class": per_class,
        "macro_fidelity": float(np.mean(scored)) if scored else None,
        "n_classes_scored": len(scored),
    }
    return summary, per_image


def _scores(metrics: dict) -> dict:
    ci = metrics.get("ci") or {}
    return {**{k: metrics.get(k) for k in CAS_SCORES}, **{f"{k}_ci": ci.get(k) for k in CAS_SCORES if ci.get(k)}}


def cas(
    synthetic_df: pd.DataFrame, data_df: pd.DataFrame, config: TrainConfig, out: str | Path, n_boot: int = 0
) -> dict:
    """Classification Accuracy Score: `config` trained on synthetic images only vs on the real train images.

    The synthetic training set has, per class of the task that has synthetic images, as many images (asked as
    that class, before filtering; a seeded sample) as the class's real train count, or all of them when there
    are fewer (`shortfall`). Both classifiers select their epoch on the real val images and are scored on the
    real test patients with the same seed. Writes `out/synthetic/` and `out/real/` (model + metrics.json);
    returns macro scores, per-class recall and `f1_ratio` = CAS macro-F1 / real macro-F1."""
    out = Path(out)
    asked = asked_class(synthetic_df)
    task = resolve_task(config.task)
    classes = [c for c in task if (asked == c).any()]
    result: dict = {
        "recipe": config.model_dump(mode="json"),
        "task": config.task,
        "classes": classes,
        "skipped_classes": {c: "no synthetic image of this class" for c in task if c not in classes},
    }
    if len(classes) < 2:
        return {
            **result,
            "reason": f"needs synthetic images of at least 2 classes of task {config.task} (has {classes or 'none'})",
        }
    train, val, test = (real_rows(data_df, split, classes) for split in ("train", "val", "test"))
    syn = synthetic_df.assign(label=asked.to_numpy())
    parts, per_class = [], {}
    for c in classes:
        pool = syn[syn["label"] == c].sort_values("path")
        want = int((train["label"] == c).sum())
        take = pool.sample(
            n=min(want, len(pool)), random_state=np.random.default_rng([config.seed % 2**32, CODES.index(c)])
        )
        parts.append(take)
        per_class[c] = {
            "real_train": want,
            "synthetic_available": len(pool),
            "synthetic_used": len(take),
            "shortfall": max(want - len(take), 0),
        }
    recipe = config.model_copy(update={"task": ",".join(classes)})
    runs = {}
    for name, rows in (("synthetic", pd.concat(parts, ignore_index=True)), ("real", train)):
        fit(rows, val, recipe, out / name)
        runs[name] = evaluate(
            out / name, test, EvaluateConfig(split="all", n_boot=n_boot, seed=config.seed), out / name
        )
    for c in classes:
        per_class[c].update(
            cas_recall=runs["synthetic"]["per_class"][c]["recall"], real_recall=runs["real"]["per_class"][c]["recall"]
        )
    cas_f1, real_f1 = runs["synthetic"]["macro_f1"], runs["real"]["macro_f1"]
    return {
        **result,
        "n_test": int(len(test)),
        "n_test_patients": int(test["patient_id"].nunique()),
        "synthetic": _scores(runs["synthetic"]),
        "real": _scores(runs["real"]),
        "f1_ratio": cas_f1 / real_f1 if cas_f1 is not None and real_f1 else None,
        "per_class": per_class,
    }
