"""Report sections on making and filtering synthetic images: the generator's loss curve, the labeler's verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..classify.config import describe
from ..experiments.results import valid_metrics
from ..io import read_json
from ..manifest import load_manifest, manifest_file
from . import figures
from .html import img, join, p, per_class_table, table


def section_generator(run: Path) -> Markup | None:
    hist = read_json(run / "generator" / "history.json")
    if not isinstance(hist, dict) or not hist.get("loss"):
        return None
    loss = np.asarray(hist["loss"], dtype=float)
    steps = hist.get("step") or list(range(1, len(loss) + 1))
    window = max(1, len(loss) // 50)
    smooth = pd.Series(loss).rolling(window, min_periods=1).mean()
    uri = figures.line_plot(
        {"loss": (steps, loss), f"moving mean ({window})": (steps, smooth)}, "step", "training loss", "generator loss"
    )
    cfg = read_json(run / "generator" / "config.json") or {}
    facts = {k: hist.get(k) for k in ("seconds", "images_per_s") if hist.get(k) is not None}
    method = cfg.get("method") or ""
    text = f"method {method}; " if method else ""
    text += ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in facts.items())
    card = Markup(
        '<p>Model card (training data, config, audit figures): <a href="../generator/README.md">generator/README.md</a></p>'
    )
    return join([p(text), img(uri, "generator loss"), *([card] if (run / "generator" / "README.md").is_file() else [])])


def section_labeling(run: Path) -> Markup | None:
    summary = read_json(run / "label" / "summary.json")
    if not isinstance(summary, dict):
        return None
    per_class = per_class_table(summary)
    parts = [
        p(
            f"policy {summary.get('policy', '?')}, threshold {summary.get('threshold', '?')}: only accepted images enter training sets."
        )
    ]
    if per_class is not None:
        parts.append(table(per_class.reset_index()))
        if "rate" in per_class:
            fig = figures.grouped_bars(
                per_class[["rate"]].astype(float), None, None, "acceptance rate", "labeler acceptance per class"
            )
            parts.append(img(fig, "acceptance"))
    if manifest_file(run / "label").is_file():
        from ..experiments import accepted_synthetic, asked_vs_labelled

        accepted = accepted_synthetic(load_manifest(run / "label"))
        if len(accepted):
            parts += [
                p("Accepted images by the class asked of the generator (rows) and the class they train as (columns):"),
                table(
                    asked_vs_labelled(accepted)
                    .rename_axis(columns=None)
                    .reset_index()
                    .rename(columns={"asked": "asked ↓ / labelled →"})
                ),
            ]
    labeler = read_json(run / "labeler" / "model.json")
    if isinstance(labeler, dict) and isinstance(labeler.get("config"), dict):
        parts.append(p(f"Labeler: {describe(labeler['config'])}."))
    path = run / "labeler" / "eval" / "metrics.json"
    metrics = read_json(path)
    if path.is_file() and not valid_metrics(metrics):
        parts.append(
            p(
                "Labeler on the real test patients: labeler/eval/metrics.json is damaged; `retinaug run` redoes the labeler."
            )
        )
    elif isinstance(metrics, dict):
        keys = [k for k in ("accuracy", "macro_f1", "macro_auc", "kappa") if isinstance(metrics.get(k), (int, float))]
        parts.append(p("Labeler on the real test patients: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys)))
    return join(parts)
