"""Classification metrics from true labels and predicted probabilities (sklearn does the arithmetic).

ODIR-2019 challenge score, exactly as the official evaluation script computes it: the one-hot truth and the
probability matrix are flattened to one long binary vector each, then
  kappa = cohen_kappa_score(truth, probs > 0.5)
  F1    = f1_score(truth, probs > 0.5, average="micro")   (for 0/1 vectors: element-wise accuracy)
  AUC   = roc_auc_score(truth, probs)                       (one ROC over all image x class cells)
  score = (kappa + F1 + AUC) / 3
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

ODIR_THRESHOLD = 0.5
# Scalar metrics that get bootstrap confidence intervals.
SCALARS = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "kappa",
    "macro_auc",
    "odir_score",
)
PER_CLASS = ("precision", "recall", "f1", "auc")


def _safe(fn, *args, **kwargs) -> float | None:
    """A metric that is undefined on this sample (e.g. AUC with one class present) is None, not a crash."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (UndefinedMetricWarning, RuntimeWarning))
            value = float(fn(*args, **kwargs))
    except ValueError:
        return None
    return None if np.isnan(value) else value


def odir_score(onehot: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    """The ODIR-2019 challenge's kappa, F1, AUC and their mean (see the module docstring)."""
    truth, scores = onehot.ravel(), probs.ravel()
    hard = scores > ODIR_THRESHOLD
    kappa = _safe(cohen_kappa_score, truth, hard)
    f1 = _safe(f1_score, truth, hard, average="micro")
    auc = _safe(roc_auc_score, truth, scores)
    parts = (kappa, f1, auc)
    return {"odir_kappa": kappa, "odir_f1": f1, "odir_auc": auc, "odir_score": None if None in parts else sum(parts) / 3}


def _one_vs_rest_auc(onehot: np.ndarray, probs: np.ndarray, support: np.ndarray) -> list[float | None]:
    """Per-class one-vs-rest ROC AUC in one sklearn call (the bootstrap calls this thousands of times);
    None where a class is absent from (or is all of) the data."""
    cols = np.flatnonzero((support > 0) & (support < len(onehot)))
    auc: list[float | None] = [None] * onehot.shape[1]
    if len(cols) == 1:
        auc[cols[0]] = _safe(roc_auc_score, onehot[:, cols[0]], probs[:, cols[0]])
    elif len(cols) > 1:
        for c, value in zip(cols, roc_auc_score(onehot[:, cols], probs[:, cols], average=None)):
            auc[c] = float(value)
    return auc


def compute_metrics(y_true, probs, classes) -> dict:
    """All metrics for integer labels `y_true` (indices into `classes`) and probabilities `probs` (N, K).

    Predictions are the arg-max class. Per-class AUC is one-vs-rest and None for a class absent from
    `y_true` (or present in every row); macro_auc averages the defined ones. Precision of a never-predicted
    class is 0 (sklearn zero_division=0)."""
    y = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    k = len(classes)
    labels = np.arange(k)
    pred = probs.argmax(axis=1)
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = support > 0
    onehot = np.eye(k, dtype=int)[y]
    cm = confusion_matrix(y, pred, labels=labels)
    auc = _one_vs_rest_auc(onehot, probs, support)
    defined = [a for a in auc if a is not None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    # macro over the classes present in y_true: a class the data lacks has no recall to average
    weights = support[present]
    out = {
        "n": int(len(y)),
        "accuracy": float(np.trace(cm) / len(y)) if len(y) else None,
        "macro_precision": float(p[present].mean()) if present.any() else None,
        "macro_recall": float(r[present].mean()) if present.any() else None,
        "macro_f1": float(f[present].mean()) if present.any() else None,
        "weighted_precision": float(np.average(p[present], weights=weights)) if present.any() else None,
        "weighted_recall": float(np.average(r[present], weights=weights)) if present.any() else None,
        "weighted_f1": float(np.average(f[present], weights=weights)) if present.any() else None,
        "kappa": _safe(cohen_kappa_score, y, pred, labels=labels),
        "macro_auc": float(np.mean(defined)) if defined else None,
        **odir_score(onehot, probs),
        "per_class": {
            c: {
                "precision": float(p[i]),
                "recall": float(r[i]) if present[i] else None,
                "f1": float(f[i]) if present[i] else None,
                "auc": auc[i],
                "support": int(support[i]),
                "predicted": int((pred == i).sum()),
            }
            for i, c in enumerate(classes)
        },
        "confusion": cm.tolist(),
        "confusion_normalized": cm_norm.round(6).tolist(),
    }
    return out
