"""`retinaug report RUN`: one self-contained HTML page (figures embedded as base64) from a run folder.

Every section reads only the run-folder files of the stage it shows; a section whose files are missing says
"not run", and a section that cannot be drawn says why, so a partial run still gets a report.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from ..classes import CLASSES
from ..errors import RetinaugError
from ..io import write_text_atomic
from ..manifest import class_counts, load_manifest, manifest_file
from . import figures

log = logging.getLogger("retinaug.report")

STAGES = ("data", "generator", "synthetic", "labeler", "label", "selection", "augment", "experiments", "quality", "report")
PACKAGES = ("retinaug", "torch", "torchvision", "timm", "diffusers", "peft", "transformers", "accelerate",
            "scikit-learn", "torchmetrics", "numpy", "pandas", "scipy", "matplotlib", "pydantic")


def _json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _table(df: pd.DataFrame, index: bool = False, floatfmt: str = "{:.3f}") -> Markup:
    df = df.copy()
    df.columns.name = None
    for col in df.columns:  # whole-number floats (counts) print without decimals
        v = pd.to_numeric(df[col], errors="coerce")
        if df[col].dtype.kind == "f" and v.notna().all() and (v == v.round()).all():
            df[col] = v.astype("Int64")
    return Markup(df.to_html(index=index, border=0, classes="tbl", na_rep="", float_format=floatfmt.format))


def _img(uri: str, alt: str, width: str = "") -> Markup:
    style = f' style="max-width:{width}"' if width else ""
    return Markup(f'<img src="{uri}" alt="{escape(alt)}"{style}>')


def _p(text: str) -> Markup:
    return Markup(f"<p>{escape(text)}</p>")


def _flat_numbers(obj: dict, prefix: str = "") -> dict[str, float]:
    """Nested dict of numbers -> {'a.b': value} (lists and strings skipped)."""
    out: dict[str, float] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_numbers(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def _per_class_table(obj: dict) -> pd.DataFrame | None:
    """A {class: {metric: value}} block anywhere in `obj` (top level or under 'per_class') as a table."""
    for block in (obj.get("per_class"), obj):
        if isinstance(block, dict):
            rows = {k: v for k, v in block.items() if k in CLASSES and isinstance(v, dict)}
            if rows:
                return pd.DataFrame(rows).T.rename_axis("class")
    return None


# ---------------------------------------------------------------- sections (each returns Markup or None)


def section_data(run: Path) -> Markup | None:
    if not manifest_file(run / "data").is_file():
        return None
    df = load_manifest(run / "data")
    parts = [_p(f"{len(df)} images, {df['patient_id'].nunique()} patients; splits are by patient."),
             Markup("<h3>Class counts per split</h3>"), _table(class_counts(df).reset_index())]
    summary = _json(run / "data" / "summary.json") or {}
    skips = summary.get("skipped") or summary.get("rejected") or summary.get("skips")
    if isinstance(skips, dict) and skips:
        parts += [Markup("<h3>Skipped images by reason</h3>"), _table(pd.Series(skips, name="images").rename_axis("reason").reset_index())]
    comp_path = run / "experiments" / "composition.csv"
    if comp_path.is_file():
        comp = pd.read_csv(comp_path)
        parts.append(Markup("<h3>Training set per scenario (before/after augmentation)</h3>"))
        stack = comp.groupby("scenario", sort=False)[["selected", "synthetic", "traditional"]].sum()
        stack.columns = ["real (after selection)", "synthetic", "traditional"]
        parts.append(_img(figures.stacked_bars(stack, "training images", "training images per scenario"), "composition"))
        wide = comp.pivot_table(index="scenario", columns="class", values="train_total", aggfunc="sum", sort=False)
        real = comp.pivot_table(index="scenario", columns="class", values="real", aggfunc="sum", sort=False)
        cells = real.fillna(0).astype(int).astype(str) + " → " + wide.fillna(0).astype(int).astype(str)
        parts += [_p("Per class: real training images → training images in the scenario."), _table(cells.reset_index())]
        short = comp[(comp.get("synthetic_shortfall", 0) > 0) | (comp.get("traditional_shortfall", 0) > 0)]
        if len(short):
            parts += [Markup('<p class="warn">Not enough accepted synthetic / traditional images for some classes; the shortfall was used as-is:</p>'),
                      _table(short[["scenario", "class", "synthetic_requested", "synthetic", "traditional_requested", "traditional"]])]
    return Markup("").join(parts)


def section_samples(run: Path) -> Markup | None:
    if not manifest_file(run / "data").is_file() or not manifest_file(run / "synthetic").is_file():
        return None
    real = load_manifest(run / "data")
    syn = load_manifest(run / "synthetic")
    if "accepted" in syn:
        syn = syn.sort_values("accepted", ascending=False, na_position="last", kind="stable")
    groups = {}
    for code in [c for c in CLASSES if c in set(syn["label"])]:
        groups[code] = [real[(real["label"] == code) & (real["split"] == "train")].head(4), syn[syn["label"] == code].head(4)]
    parts = [_p("Left: real training images; right: synthetic images (accepted ones first)."),
             _img(figures.sample_grid(groups, ["real", "synthetic"]), "real vs synthetic")]
    if (run / "generator" / "samples.png").is_file():
        parts += [Markup("<h3>Generator samples after training (a row per class)</h3>"), _img(figures.file_uri(run / "generator" / "samples.png"), "samples", "60%")]
    return Markup("").join(parts)


def section_generator(run: Path) -> Markup | None:
    hist = _json(run / "generator" / "history.json")
    if not isinstance(hist, dict) or not hist.get("loss"):
        return None
    loss = np.asarray(hist["loss"], dtype=float)
    steps = hist.get("step") or list(range(1, len(loss) + 1))
    window = max(1, len(loss) // 50)
    smooth = pd.Series(loss).rolling(window, min_periods=1).mean()
    uri = figures.line_plot({"loss": (steps, loss), f"moving mean ({window})": (steps, smooth)}, "step", "training loss", "generator loss")
    cfg = _json(run / "generator" / "config.json") or {}
    facts = {k: hist.get(k) for k in ("seconds", "images_per_s") if hist.get(k) is not None}
    method = cfg.get("method") or cfg.get("name") or ""
    text = f"method {method}; " if method else ""
    text += ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in facts.items())
    return Markup("").join([_p(text), _img(uri, "generator loss")])


def section_labeling(run: Path) -> Markup | None:
    summary = _json(run / "synthetic" / "label_summary.json")
    if not isinstance(summary, dict):
        return None
    table = _per_class_table(summary)
    parts = [_p(f"policy {summary.get('policy', '?')}, threshold {summary.get('threshold', '?')}: only accepted images enter training sets.")]
    if table is not None:
        parts.append(_table(table.reset_index()))
        if "rate" in table:
            fig = figures.grouped_bars(table[["rate"]].astype(float), None, None, "acceptance rate", "labeler acceptance per class")
            parts.append(_img(fig, "acceptance"))
    if manifest_file(run / "synthetic").is_file():
        from ..experiment import accepted_synthetic, asked_vs_labelled

        syn = load_manifest(run / "synthetic")
        if "accepted" in syn.columns and syn["accepted"].any():
            parts += [_p("Accepted images by the class asked of the generator (rows) and the class they train as (columns):"),
                      _table(asked_vs_labelled(accepted_synthetic(syn)).rename_axis(columns=None).reset_index()
                             .rename(columns={"asked": "asked ↓ / labelled →"}))]
    metrics = _json(run / "labeler" / "eval" / "metrics.json")
    if isinstance(metrics, dict):
        keys = [k for k in ("accuracy", "macro_f1", "macro_auc", "kappa") if isinstance(metrics.get(k), (int, float))]
        parts.append(_p("Labeler on the real test patients: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys)))
    return Markup("").join(parts)


def section_selection(run: Path) -> Markup | None:
    csv = run / "selection" / "tsne.csv"
    png = run / "selection" / "tsne.png"
    if not csv.is_file() and not png.is_file():
        return None
    parts = []
    if csv.is_file():
        parts.append(_img(figures.tsne_plot(pd.read_csv(csv)), "t-SNE"))
    else:
        parts.append(_img(figures.file_uri(png), "t-SNE"))
    summary = _json(run / "selection" / "summary.json")
    if isinstance(summary, dict):
        table = _per_class_table(summary)
        if table is not None:
            parts.append(_table(table.reset_index()))
        flat = {k: v for k, v in summary.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
        if flat:
            parts.append(_p(", ".join(f"{k}: {v}" for k, v in flat.items())))
    return Markup("").join(parts)


def section_similarity(run: Path) -> Markup | None:
    q = run / "quality"
    audit = _json(q / "audit.json")
    match_csv = q / "match.csv"
    if not isinstance(audit, dict) and not match_csv.is_file():
        return None
    parts = []
    if (q / "similarity_hist.png").is_file():
        parts.append(_img(figures.file_uri(q / "similarity_hist.png"), "similarity histogram"))
    mem_csv = q / "memorization.csv"
    if isinstance(audit, dict):
        mem = audit.get("memorization")
        if isinstance(mem, dict):
            table = _per_class_table(mem)
            if table is not None:
                parts += [Markup("<h3>Memorization per class</h3>"), _table(table.reset_index())]
            flat = {k: v for k, v in _flat_numbers({k: v for k, v in mem.items() if k not in CLASSES}).items()}
            if flat:
                parts.append(_p(", ".join(f"{k} {v:.4g}" for k, v in flat.items())))
    if mem_csv.is_file():
        mem_df = pd.read_csv(mem_csv)
        parts += [Markup(f"<h3>Nearest-neighbour similarity of synthetic images ({len(mem_df)} rows, most similar first)</h3>")]
        sort_col = next((c for c in ("cosine", "similarity", "nn_cosine") if c in mem_df), None)
        shown = mem_df.sort_values(sort_col, ascending=False) if sort_col else mem_df
        parts.append(_table(shown.head(10).map(lambda v: os.path.basename(v) if isinstance(v, str) and os.sep in v else v)))
    if match_csv.is_file():
        pairs = pd.read_csv(match_csv)
        if "rank" in pairs:
            pairs = pairs[pairs["rank"] == pairs["rank"].min()]
        pairs = pairs.sort_values("cosine", ascending=False).head(6)
        parts.append(Markup("<h3>Closest synthetic–real pairs (query | nearest training image)</h3>"))
        if (q / "match.png").is_file():
            parts.append(_img(figures.file_uri(q / "match.png"), "match grid", "70%"))
        elif len(pairs) and all(os.path.isfile(p) for p in pairs["query"]) and all(os.path.isfile(p) for p in pairs["match"]):
            parts.append(_img(figures.pair_grid(pairs), "closest pairs", "360px"))
        parts.append(_table(pairs.map(lambda v: os.path.basename(v) if isinstance(v, str) and os.sep in v else v)))
    return Markup("").join(parts) if parts else None


def section_fid(run: Path) -> Markup | None:
    audit = _json(run / "quality" / "audit.json")
    if not isinstance(audit, dict):
        return None
    rows = {}
    for key in ("fid", "kid", "kid_std", "knn_precision", "knn_recall", "precision", "recall"):
        value = audit.get(key)
        if isinstance(value, dict):
            for name, v in value.items():
                if isinstance(v, (int, float)):
                    rows.setdefault(name, {})[key] = v
                elif isinstance(v, dict):
                    for sub, x in v.items():
                        if isinstance(x, (int, float)):
                            rows.setdefault(name, {})[f"{key} {sub}"] = x
        elif isinstance(value, (int, float)):
            rows.setdefault("overall", {})[key] = value
    per = audit.get("per_class")
    if isinstance(per, dict):
        for name, block in per.items():
            if isinstance(block, dict):
                for k, v in _flat_numbers(block).items():
                    if any(t in k for t in ("fid", "kid", "precision", "recall")):
                        rows.setdefault(name, {})[k] = v
    if not rows:
        return _p("audit.json holds no FID/KID values.")
    table = pd.DataFrame(rows).T.rename_axis("set").reset_index()
    note = _p(f"Features: {audit.get('extractor', 'see config')}. Lower FID/KID = synthetic closer to real training images "
              "(with few images FID is biased upwards; compare like with like).")
    return Markup("").join([note, _table(table, floatfmt="{:.4g}")])


def _summary(run: Path) -> pd.DataFrame | None:
    path = run / "experiments" / "summary.csv"
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None


def section_scenarios(run: Path) -> Markup | None:
    table = run / "experiments" / "table.csv"
    summary = _summary(run)
    if not table.is_file() or summary is None:
        return None
    parts = [_p("Macro precision, recall and F1 and accuracy on the same real test patients: mean over seeds with the "
                "95% t-interval over seeds (clipped to [0, 1]; few seeds give wide intervals); ΔF1 is the paired difference to the task's real-only scenario (paired t-test over seeds)."),
             _table(pd.read_csv(table, keep_default_na=False))]
    per_class = summary[(summary["cls"] != "macro") & (summary["metric"] == "f1")]
    if len(per_class):
        wide = per_class.pivot_table(index="scenario", columns="cls", values="mean", sort=False)
        parts += [Markup("<h3>Per-class F1 (mean over seeds)</h3>"), _table(wide.reset_index())]
    return Markup("").join(parts)


def section_recall(run: Path) -> Markup | None:
    summary = _summary(run)
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
        parts.append(_img(figures.grouped_bars(piv["mean"], piv["ci_low"], piv["ci_high"], "recall", f"per-class recall by scenario ({task}, 95% CI)"), "recall"))
    return Markup("").join(parts)


def _seed_dirs(run: Path) -> dict[str, list[Path]]:
    root = run / "experiments"
    out: dict[str, list[Path]] = {}
    if root.is_dir():
        for sc in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
            seeds = sorted(d for d in sc.glob("seed*") if (d / "metrics.json").is_file())
            if seeds:
                out[sc.name] = seeds
    return out


def _scenario_order(run: Path, names: list[str]) -> list[str]:
    table = run / "experiments" / "table.csv"
    order = list(pd.read_csv(table)["scenario"]) if table.is_file() else []
    return [n for n in order if n in names] + [n for n in names if n not in order]


def section_confusion(run: Path) -> Markup | None:
    mats: dict[str, np.ndarray] = {}
    classes: dict[str, list[str]] = {}
    dirs = _seed_dirs(run)
    for name in _scenario_order(run, list(dirs)):
        for d in dirs[name]:
            m = _json(d / "metrics.json") or {}
            cm = m.get("confusion")
            if cm is None:
                continue
            mats[name] = mats.get(name, 0) + np.asarray(cm)
            classes[name] = list((m.get("per_class") or {}).keys()) or [str(i) for i in range(len(cm))]
    if not mats:
        return None
    return Markup("").join([_p("Test-set confusion matrices summed over seeds (colour: row-normalised recall)."),
                            _img(figures.confusion_plot(mats, classes), "confusion matrices")])


def section_training(run: Path) -> Markup | None:
    series = {}
    dirs = _seed_dirs(run)
    for name in _scenario_order(run, list(dirs)):
        curves = []
        for d in dirs[name]:
            hist = (_json(d / "model.json") or {}).get("history") or []
            curves.append([h.get("val_macro_f1") for h in hist if h.get("val_macro_f1") is not None])
        curves = [c for c in curves if c]
        if curves:
            n = min(len(c) for c in curves)
            series[name] = (list(range(1, n + 1)), np.mean([c[:n] for c in curves], axis=0))
    labeler = (_json(run / "labeler" / "model.json") or {}).get("history") or []
    if labeler:
        series["labeler"] = ([h.get("epoch", i + 1) for i, h in enumerate(labeler)], [h.get("val_macro_f1") for h in labeler])
    if not series:
        return None
    return _img(figures.line_plot(series, "epoch", "validation macro-F1 (mean over seeds)", "classifier training curves"), "training curves")


def _versions() -> pd.DataFrame:
    rows = []
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def section_provenance(run: Path) -> Markup | None:
    timings = []
    for stage in STAGES:
        rec = _json(run / stage / "stage.json")
        if isinstance(rec, dict):
            timings.append({"stage": stage, "status": rec.get("status"), "seconds": rec.get("seconds"), "started": rec.get("started"), "why": rec.get("why")})
    parts = []
    if timings:
        t = pd.DataFrame(timings)
        parts += [Markup("<h3>Stages</h3>"), _table(t, floatfmt="{:.1f}"), _p(f"total {pd.to_numeric(t['seconds'], errors='coerce').sum():.1f} s")]
    try:
        import torch

        device = f"torch {torch.__version__}, CUDA {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}, {torch.get_num_threads()} threads"
    except ImportError:
        device = "torch not installed"
    machine = f"{platform.node()} — {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; {device}"
    parts += [Markup("<h3>Machine</h3>"), _p(machine), Markup("<h3>Package versions</h3>"), _table(_versions())]
    cfg = run / "config.yaml"
    if cfg.is_file():
        parts += [Markup("<h3>Resolved config</h3>"), Markup(f"<details><summary>config.yaml</summary><pre>{escape(cfg.read_text())}</pre></details>")]
    return Markup("").join(parts)


SECTIONS: list[tuple[str, str, Callable[[Path], Markup | None]]] = [
    ("scenarios", "Scenario results", section_scenarios),
    ("recall", "Per-class recall by scenario", section_recall),
    ("data", "Data overview", section_data),
    ("samples", "Real vs synthetic samples", section_samples),
    ("generator", "Generator training", section_generator),
    ("labeling", "Labeling acceptance", section_labeling),
    ("selection", "t-SNE selection", section_selection),
    ("similarity", "Similarity and memorization", section_similarity),
    ("fid", "FID / KID", section_fid),
    ("confusion", "Confusion matrices", section_confusion),
    ("training", "Training curves", section_training),
    ("provenance", "Provenance", section_provenance),
]


def build_report(run: str | Path) -> Path:
    """Render RUN/report/index.html from whatever the run folder holds; returns its path."""
    run = Path(run)
    if not run.is_dir():
        raise RetinaugError(f"run folder {run} not found (make one with `retinaug run CONFIG --out {run}`)")
    rendered = []
    for key, title, fn in SECTIONS:
        try:
            body, state = fn(run), "ok"
        except Exception as exc:  # a malformed stage output must not cost the rest of the report
            log.warning("report section %s failed: %s", key, exc)
            body, state = _p(f"could not be drawn: {type(exc).__name__}: {exc}"), "error"
        if body is None:
            body, state = _p("not run (its stage outputs are missing in this run folder)"), "missing"
        rendered.append({"id": key, "title": title, "body": body, "state": state})
    env = Environment(loader=PackageLoader("retinaug", "report/templates"), autoescape=select_autoescape(["html"]))
    cfg = run / "config.yaml"
    name = run.name
    if cfg.is_file():
        import yaml

        name = (yaml.safe_load(cfg.read_text()) or {}).get("name", name)
    html = env.get_template("index.html").render(
        name=name, run=str(run.resolve()), sections=rendered, created=time.strftime("%Y-%m-%d %H:%M:%S %Z")
    )
    path = write_text_atomic(run / "report" / "index.html", html)
    path.chmod(0o644)  # temp files are created private; a report is meant to be shared
    return path
