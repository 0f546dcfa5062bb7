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
    return {
        "odir_kappa": kappa,
        "odir_f1": f1,
        "odir_auc": auc,
        "odir_score": None if None in parts else sum(parts) / 3,
    }


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


def _weighted_auc(weights: np.ndarray, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of every row of `weights` (B, N) at once: the weighted Mann-Whitney statistic, ties counted half,
    which is the area sklearn's trapezoidal ROC gives on the data with each row repeated weight times.
    NaN where a row weights no positive or no negative."""
    order = np.argsort(scores, kind="stable")
    s, t, w = scores[order], truth[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # one group per distinct score
    pos = np.add.reduceat(w * t, starts, axis=1)
    neg = np.add.reduceat(w * ~t, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _kappa(cm: np.ndarray) -> np.ndarray:
    """Cohen's kappa of confusion matrices (B, K, K) of integer counts as sklearn computes it; NaN where it is
    undefined (truth and prediction are one and the same class). Undefined is decided on the counts, exactly as
    sklearn's zero test: total^2 == sum of (predicted x true) marginal products, whatever the split's size."""
    total = cm.sum((1, 2))
    agree = np.trace(cm, axis1=1, axis2=2)
    marginals = (cm.sum(1) * cm.sum(2)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total * total > marginals, 1 - (total - agree) / (total - marginals / total), np.nan)


def replicate_metrics(y_true, probs, weights: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The SCALARS (each (B,)) and PER_CLASS metrics (each (B, K)) of `compute_metrics` for B weightings of one
    prediction set at once: row b equals compute_metrics on the data with image i repeated weights[b, i] times,
    NaN where that gives None. The patient bootstrap needs ~1,000 of these per fit; sklearn's input checks made
    that ~30 ms a replicate, while every metric here is a function of weighted counts (tests pin it to sklearn)."""
    y = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    w = np.asarray(weights, dtype=float)
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    cm = (w @ np.eye(k * k)[y * k + pred]).reshape(-1, k, k)  # (B, true, predicted)
    support, predicted, tp = cm.sum(2), cm.sum(1), np.diagonal(cm, axis1=1, axis2=2)
    total = support.sum(1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(present, tp / support, np.nan)
        f1 = np.where(present, 2 * tp / (support + predicted), np.nan)
    onehot = np.eye(k)[y]
    auc = np.full(support.shape, np.nan)
    for c in range(k):
        defined = present[:, c] & (support[:, c] < total)
        if defined.any():
            auc[defined, c] = _weighted_auc(w[defined], onehot[:, c], probs[:, c])

    def weighted(values: np.ndarray) -> np.ndarray:
        return np.nansum(values * support, 1) / total

    # the ODIR score's cells: every image x class, each carrying its image's weight
    cells = np.repeat(w, k, axis=1)
    truth, hard = onehot.ravel(), probs.ravel() > ODIR_THRESHOLD
    binary = (cells @ np.eye(4)[2 * truth.astype(int) + hard]).reshape(-1, 2, 2)
    odir_kappa, odir_f1 = _kappa(binary), np.trace(binary, axis1=1, axis2=2) / (k * total)
    odir_auc = _weighted_auc(cells, truth, probs.ravel())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with every AUC undefined: NaN is the answer
        scalars = {
            "accuracy": tp.sum(1) / total,
            "macro_precision": np.nanmean(np.where(present, precision, np.nan), 1),
            "macro_recall": np.nanmean(recall, 1),
            "macro_f1": np.nanmean(f1, 1),
            "weighted_precision": weighted(np.where(present, precision, 0.0)),
            "weighted_recall": weighted(recall),
            "weighted_f1": weighted(f1),
            "kappa": _kappa(cm),
            "macro_auc": np.nanmean(auc, 1),
            "odir_score": (odir_kappa + odir_f1 + odir_auc) / 3,
        }
    return scalars, {"precision": precision, "recall": recall, "f1": f1, "auc": auc}
