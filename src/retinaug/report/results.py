"""Report sections on the scenario experiments: the headline table, per-class recall, confusion matrices and the
classifiers' training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..classes import CLASSES
from ..io import read_json
from . import figures
from .html import h3, img, join, p, summary_csv, table


def section_scenarios(run: Path) -> Markup | None:
    headline = run / "experiments" / "table.csv"
    summary = summary_csv(run)
    if not headline.is_file() or summary is None:
        return None
    parts = [p("Macro precision, recall and F1 and accuracy on the same real test patients: mean over seeds with the "
               "95% t-interval over seeds (clipped to [0, 1]; few seeds give wide intervals); ΔF1 is the paired difference to the task's real-only scenario (paired t-test over seeds)."),
             table(pd.read_csv(headline, keep_default_na=False))]
    per_class = summary[(summary["cls"] != "macro") & (summary["metric"] == "f1")]
    if len(per_class):
        wide = per_class.pivot_table(index="scenario", columns="cls", values="mean", sort=False)
        parts += [h3("Per-class F1 (mean over seeds)"), table(wide.reset_index())]
    return join(parts)


def section_recall(run: Path) -> Markup | None:
    summary = summary_csv(run)
    if summary is None:
        return None
    rec = summary[(summary["metric"] == "recall") & (summary["cls"] != "macro")]
    if rec.empty:
        return None
    parts = []
    for task, g in rec.groupby("task", sort=False):
        order = [c for c in CLASSES if c in set(g["cls"])]
        piv = {v: g.pivot(index="cls", columns="scenario", values=v).reindex(index=order, columns=list(dict.fromkeys(g["scenario"])))
               for v in ("mean", "ci_low", "ci_high")}
        parts.append(img(figures.grouped_bars(piv["mean"], piv["ci_low"], piv["ci_high"], "recall", f"per-class recall by scenario ({task}, 95% CI)"), "recall"))
    return join(parts)


def _seed_dirs(run: Path) -> dict[str, list[Path]]:
    """Finished seed folders per scenario, in the headline table's order (then by name)."""
    root = run / "experiments"
    out: dict[str, list[Path]] = {}
    if root.is_dir():
        for sc in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))):
            seeds = sorted(d for d in sc.glob("seed*") if (d / "metrics.json").is_file())
            if seeds:
                out[sc.name] = seeds
    headline = root / "table.csv"
    order = list(pd.read_csv(headline)["scenario"]) if headline.is_file() else []
    return {n: out[n] for n in [n for n in order if n in out] + [n for n in out if n not in order]}


def section_confusion(run: Path) -> Markup | None:
    mats: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    for name, dirs in _seed_dirs(run).items():
        for d in dirs:
            m = read_json(d / "metrics.json") or {}
            cm = m.get("confusion")
            if cm is None:
                continue
            mats[name] = mats.get(name, 0) + np.asarray(cm)
            classes[name] = list((m.get("per_class") or {}).keys()) or [str(i) for i in range(len(cm))]
    if not mats:
        return None
    return join([p("Test-set confusion matrices summed over seeds (colour: row-normalised recall)."),
                 img(figures.confusion_plot(mats, classes), "confusion matrices")])


def section_training(run: Path) -> Markup | None:
    series = {}
    for name, dirs in _seed_dirs(run).items():
        curves = []
        for d in dirs:
            hist = (read_json(d / "model.json") or {}).get("history") or []
            curves.append([h.get("val_macro_f1") for h in hist if h.get("val_macro_f1") is not None])
        curves = [c for c in curves if c]
        if curves:
            n = min(len(c) for c in curves)
            series[name] = (list(range(1, n + 1)), np.mean([c[:n] for c in curves], axis=0))
    labeler = (read_json(run / "labeler" / "model.json") or {}).get("history") or []
    if labeler:
        series["labeler"] = ([h.get("epoch", i + 1) for i, h in enumerate(labeler)], [h.get("val_macro_f1") for h in labeler])
    if not series:
        return None
    return img(figures.line_plot(series, "epoch", "validation macro-F1 (mean over seeds)", "classifier training curves"), "training curves")
