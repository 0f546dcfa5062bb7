"""Score a classifier on any prepared manifest, with 95% confidence intervals from a bootstrap over patients.

Two eyes (or several visits) of one patient are not independent samples: resampling images would give
too-narrow intervals, so each bootstrap replicate draws patient ids with replacement and takes all their images."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RetinaugError
from ..io import atomic_path, write_json_atomic
from ..manifest import load_manifest, manifest_rows, split_rows
from ..progress import progress_bar
from .config import EvaluateConfig
from .metrics import PER_CLASS, SCALARS, compute_metrics, replicate_metrics
from .models import TRAIN_ROWS, Classifier, load_classifier, predict

log = logging.getLogger("retinaug.classify")
BOOT_BLOCK = 100  # replicates scored at once: (block x images) weights, a few MB even for thousands of test images


def patient_bootstrap(y: np.ndarray, probs: np.ndarray, patients, classes, n_boot: int = 1000, seed: int = 0) -> dict:
    """Percentile 95% CIs of every scalar and per-class metric, resampling patients (all their images).

    A replicate draws patient ids with replacement; an image then counts as often as its patient was drawn, so
    each replicate is a weighting of the images and blocks of replicates are scored at once (`replicate_metrics`)."""
    codes, inverse = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    scalars: dict[str, list] = {m: [] for m in SCALARS}
    per_class: dict[str, list] = {m: [] for m in PER_CLASS}
    with progress_bar("bootstrap over patients", n_boot, "rep") as advance:
        for start in range(0, n_boot, BOOT_BLOCK):
            block = min(BOOT_BLOCK, n_boot - start)
            draws = [np.bincount(rng.integers(0, len(codes), len(codes)), minlength=len(codes)) for _ in range(block)]
            block_scalars, block_per_class = replicate_metrics(y, probs, np.stack(draws)[:, inverse])
            for name, values in block_scalars.items():
                scalars[name].append(values)
            for name, values in block_per_class.items():
                per_class[name].append(values)
            advance(block)

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[~np.isnan(values)]
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else None

    per_class_all = {name: np.concatenate(v) for name, v in per_class.items()}
    return {
        "ci": {name: interval(np.concatenate(v)) for name, v in scalars.items()},
        "per_class_ci": {
            c: {name: interval(per_class_all[name][:, i]) for name in PER_CLASS} for i, c in enumerate(classes)
        },
    }


def training_overlap(
    clf: Classifier, df: pd.DataFrame, drop: bool, threshold: float, out: Path | None
) -> tuple[pd.DataFrame, dict]:
    """Compare the evaluated images with the model's real training images by content (`find_overlap`): near-copies
    inflate the scores, so they are reported, and with `drop` their patients are left out. Returns (rows, record)."""
    from ..quality.overlap import find_overlap, overlap_summary

    rows_file = clf.folder / TRAIN_ROWS if clf.folder is not None else None
    if rows_file is None or not rows_file.is_file():
        log.warning(
            "cannot check overlap with the training images: the model has no %s (trained before it was written)",
            TRAIN_ROWS,
        )
        return df, {"checked": False, "reason": f"no {TRAIN_ROWS}"}
    train = load_manifest(rows_file)
    present = train["path"].map(os.path.isfile)
    if not present.all():
        log.warning(
            "%d of the model's %d training images are gone; checked against the rest", int((~present).sum()), len(train)
        )
        train = train[present]
    if not len(train):
        return df, {"checked": False, "reason": "training images not found"}
    table = find_overlap(df, train, threshold)
    record = {
        "checked": True,
        **overlap_summary(table, len(train), threshold),
        "dropped_images": 0,
        "dropped_patients": 0,
    }
    if out is not None:
        with atomic_path(Path(out) / "overlap.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
    dup = table[table["duplicate"]]
    if len(dup):
        first = dup.iloc[0]
        log.warning(
            "%d of the %d evaluated images (%d patients) are near-copies of the model's training images (SSIM >= %s; "
            "e.g. %s ~ %s): %s",
            len(dup),
            len(df),
            dup["a_patient"].nunique(),
            threshold,
            first["a_path"],
            first["b_path"],
            "their patients are left out (overlap: drop)"
            if drop
            else "their scores are inflated; --overlap drop leaves these patients out",
        )
    if drop and len(dup):
        patients = set(dup["a_patient"])
        keep = ~df["patient_id"].astype(str).isin(patients)
        record.update(dropped_images=int((~keep).sum()), dropped_patients=len(patients))
        df = df[keep]
        if not len(df):
            raise RetinaugError(
                "every evaluated patient overlaps the model's training images: nothing is left to score"
            )
    return df, record


def evaluate(
    model: Classifier | str | Path, data: str | Path | pd.DataFrame, config: EvaluateConfig, out: Path | None = None
) -> dict:
    """Predict the `config.split` rows of `data` (a manifest folder or its rows), compute metrics +
    patient-bootstrap CIs, write out/metrics.json and out/predictions.parquet.

    Rows whose class the model does not know are excluded (counted in `excluded`); model classes absent from
    the data are listed in `classes_missing_from_data` (their recall/F1/AUC are null). `tta`: average each image
    with its mirror (default: the model's training config's `tta`). `overlap="warn"` checks the rows against the
    model's training images by content and warns about near-copies; "drop" also leaves their patients out
    (`training_overlap`; recorded under `overlap`)."""
    n_boot, seed, overlap = config.n_boot, config.seed, config.overlap
    clf = model if isinstance(model, Classifier) else load_classifier(model)
    tta = clf.tta if config.tta is None else config.tta
    df = split_rows(manifest_rows(data), config.split)
    found = None
    if overlap != "off":
        df, found = training_overlap(clf, df, overlap == "drop", config.overlap_threshold, out)
    known = df["label"].isin(clf.classes)
    excluded = df.loc[~known, "label"].value_counts().to_dict()
    if excluded:
        log.info("excluded %d image(s) of class(es) the model lacks: %s", int((~known).sum()), excluded)
    df = df[known]
    if not len(df):
        raise RetinaugError(f"no image of the model's classes ({','.join(clf.classes)}) in this data")
    missing = [c for c in clf.classes if c not in set(df["label"])]
    if missing:
        log.info("model class(es) absent from the data: %s (their recall, F1 and AUC are null)", ", ".join(missing))
    probs = predict(clf, df, tta=tta)
    y = df["label"].map({c: i for i, c in enumerate(clf.classes)}).to_numpy(dtype=int)
    metrics = {
        "classes": list(clf.classes),
        "n_images": int(len(df)),
        "n_patients": int(df["patient_id"].nunique()),
        "excluded": {"count": int(sum(excluded.values())), "by_class": {str(k): int(v) for k, v in excluded.items()}},
        "classes_missing_from_data": missing,
        **compute_metrics(y, probs, clf.classes),
        "n_boot": n_boot,
        "seed": seed,
        "tta": tta,
        **({"overlap": found} if found is not None else {}),
    }
    if n_boot > 0:
        metrics.update(patient_bootstrap(y, probs, df["patient_id"].to_numpy(), clf.classes, n_boot, seed))
    log.info(metrics_text(metrics))
    if out is not None:
        out = Path(out)
        write_json_atomic(out / "metrics.json", metrics)
        preds = pd.DataFrame(
            {
                "path": df["path"].astype(str).to_numpy(),
                "label": df["label"].astype(str).to_numpy(),
                "patient_id": df["patient_id"].astype(str).to_numpy(),
                "pred": np.asarray(clf.classes)[probs.argmax(1)],
                **{f"prob_{c}": probs[:, i] for i, c in enumerate(clf.classes)},
            }
        )
        if "transform" in df.columns:
            preds.insert(1, "transform", df["transform"].astype("string").to_numpy())
        with atomic_path(out / "predictions.parquet") as tmp:
            preds.to_parquet(tmp, index=False)
    return metrics


def _fmt(value, ci=None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def metrics_text(m: dict) -> str:
    """Per-class rows, then macro/weighted and the summary scores (95% CI in brackets), as a plain-text table."""
    ci, pci = m.get("ci", {}), m.get("per_class_ci", {})
    rows = {}
    for c, v in m["per_class"].items():
        cc = pci.get(c, {})
        rows[c] = [*(_fmt(v[k], cc.get(k)) for k in ("precision", "recall", "f1", "auc")), str(v["support"])]
    for kind in ("macro", "weighted"):
        auc = _fmt(m["macro_auc"], ci.get("macro_auc")) if kind == "macro" else ""
        rows[kind] = [
            *(_fmt(m[f"{kind}_{k}"], ci.get(f"{kind}_{k}")) for k in ("precision", "recall", "f1")),
            auc,
            str(m["n_images"]),
        ]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["precision", "recall", "F1", "AUC", "support"])
    return (
        f"{m['n_images']} images, {m['n_patients']} patients (95% CI: patient bootstrap, n={m['n_boot']})\n"
        + table.to_string()
        + f"\naccuracy {_fmt(m['accuracy'], ci.get('accuracy'))}   kappa {_fmt(m['kappa'], ci.get('kappa'))}"
        + f"   ODIR score {_fmt(m['odir_score'], ci.get('odir_score'))}"
    )
