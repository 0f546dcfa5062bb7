"""Report sections on the scenario experiments: the headline table (with macro-F1 against the real fraction when
scenarios trained on part of the real patients), per-class recall, confusion matrices and the classifiers' training
curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from ..classes import CLASSES
from ..classify.config import describe
from ..experiments.external import EXTERNAL
from ..folds import POOLED, fold_count, fold_name, is_pooled, results_dir
from ..io import read_json
from ..stages import result_settings
from . import figures
from .html import h3, img, join, p, summary_csv, table


def section_scenarios(run: Path) -> Markup | None:
    headline_csv = results_dir(run) / "table.csv"
    summary = summary_csv(run)
    if not headline_csv.is_file() or summary is None:
        return None
    if is_pooled(run):
        about = (
            "Macro precision, recall and F1 and accuracy pooled over the folds: every patient is tested once, by the models "
            "of the fold that held it out; mean over (fold, seed) runs with the 95% interval of the corrected resampled t-test "
            "(Nadeau & Bengio: the folds share training patients, so the variance counts 1/runs + test/train; clipped to [0, 1]); "
            "ΔF1 is the paired difference to the named baseline (the task's real-only scenario unless the scenario names "
            "another; the same corrected test over equal (fold, seed) runs; q: Benjamini-Hochberg over the table's comparisons)."
        )
        unit = "(fold, seed) runs"
    else:
        about = (
            "Macro precision, recall and F1 and accuracy on the same real test patients: mean over seeds with the "
            "95% t-interval over seeds (clipped to [0, 1]; few seeds give wide intervals); ΔF1 is the paired difference "
            "to the named baseline (the task's real-only scenario unless the scenario names another; paired t-test over "
            "seeds; q: Benjamini-Hochberg over the table's comparisons)."
        )
        unit = "seeds"
    headline = pd.read_csv(headline_csv, keep_default_na=False)
    parts = [p(about + comparisons(headline)), *judge(run), table(headline), *external_results(run)]
    per_class = summary[(summary["cls"] != "macro") & (summary["metric"] == "f1")]
    if len(per_class):
        wide = per_class.pivot_table(index="scenario", columns="cls", values="mean", sort=False)
        parts += [h3(f"Per-class F1 (mean over {unit})"), table(wide.reset_index())]
    return join(parts + scarcity_figure(run, summary, unit))


def comparisons(headline: pd.DataFrame) -> str:
    """What the headline's extra ΔF1 columns pair against, for the columns it has."""
    said = {
        "ΔF1 vs traditional": " ΔF1 vs traditional: a synthetic scenario against the traditional-only one with as many "
        "added rows (do synthetic images beat flips and rotations?).",
        "ΔF1 vs schedule control": " ΔF1 vs schedule control: a pretrain scenario against the same two training phases on "
        'the real images alone ("real, twice"): what is left once the second phase\'s own gain '
        "is taken out is the synthetic images'.",
    }
    return "".join(text for column, text in said.items() if column in headline.columns)


def external_results(run: Path) -> list[Markup]:
    """The headline table of the fits scored on the external test set (`data.external`), under a heading saying what
    is left of it once the patients with a near-copy of the train/val images are dropped; nothing without one."""
    folder = results_dir(run) / EXTERNAL
    counts = read_json(folder / "overlap.json")
    if not (folder / "table.csv").is_file() or not isinstance(counts, dict):
        return []
    return [
        h3(
            f"External test set: {counts['kept_images']} images of {counts['kept_patients']} patients "
            f"(classes {', '.join(counts['classes'])})"
        ),
        p(
            f"The same fits scored on the external test set (data.external: images from another source, every one a test "
            f"image), less the {counts['dropped_patients']} patients ({counts['dropped_images']} images) with a near-copy of "
            f"the run's train/val images (grey SSIM ≥ {counts['threshold']}; experiments/external/overlap.csv lists each "
            "image's closest one). Each fit is scored on the classes of its task the external set has (macro scores "
            "average those; images of other classes are left out); intervals and ΔF1 as above, paired against the same "
            "baselines."
        ),
        table(pd.read_csv(folder / "table.csv", keep_default_na=False)),
    ]


def scarcity_figure(run: Path, summary: pd.DataFrame, unit: str) -> list[Markup]:
    """Macro-F1 against real_fraction, a line through each set of scenarios equal but for their real fraction (and
    name and baseline: real, + synthetic, + traditional), named after its largest fraction's scenario; nothing when
    no finished scenario trained on part of the real patients. Recipes come from the fits' recipe.json (a fit kept
    from an earlier retinaug lacks the settings added since, hence result_settings)."""
    f1 = summary[(summary["metric"] == "f1") & (summary["cls"] == "macro")].set_index("scenario")
    rows = []
    for name, dirs in _seed_dirs(run).items():
        recipe = (read_json(dirs[0] / "recipe.json") or {}).get("scenario")
        if isinstance(recipe, dict) and name in f1.index:
            line = {k: v for k, v in recipe.items() if k not in ("name", "baseline", "real_fraction")}
            rows.append(
                {
                    "scenario": name,
                    "fraction": float(recipe.get("real_fraction", 1.0)),
                    "line": json.dumps(result_settings(line), sort_keys=True),
                }
            )
    points = pd.DataFrame(rows, columns=["scenario", "fraction", "line"]).join(
        f1[["mean", "ci_low", "ci_high"]], on="scenario"
    )
    groups = points.sort_values("fraction", kind="stable").groupby("line", sort=False)
    lines = {g["scenario"].iloc[-1]: g for _, g in groups if (g["fraction"] < 1).any()}
    if not lines:
        return []
    return [
        h3("Macro F1 against the fraction of real training patients"),
        p(
            f"Scenarios equal but for real_fraction (a nested patient-level subsample of the real train patients; val and test "
            f"untouched) joined by a line named after the one with the most patients; mean over {unit} with the 95% interval."
        ),
        img(
            figures.ci_lines(lines, "fraction of the real train patients", "macro F1", "macro F1 by real fraction"),
            "scarcity",
        ),
    ]


def judge(run: Path) -> list[Markup]:
    """Which classifier the scenarios were scored with (from a fit's recipe.json): a table read without it says little."""
    found = next(
        iter(
            sorted(Path(run).glob("experiments/*/seed*/recipe.json"))
            or sorted(Path(run).glob(f"{fold_name(0)}/experiments/*/seed*/recipe.json"))
        ),
        None,
    )
    train = (read_json(found) or {}).get("train") if found else None
    return [p(f"Judge (every scenario's classifier): {describe(train)}.")] if isinstance(train, dict) else []


def section_folds(run: Path) -> Markup | None:
    """A k-fold run: fold sizes, the each-patient-tested-once check, macro F1 per fold and links to the fold reports."""
    folds = run / POOLED / "folds.csv"
    if not folds.is_file():
        return None
    cov = read_json(run / POOLED / "coverage.json") or {}
    k = cov.get("folds", 0)
    leaks = (
        cov.get("tested_more_than_once", [])
        + cov.get("never_tested", [])
        + sum(cov.get("in_two_splits_of_a_fold", {}).values(), [])
    )
    if leaks:
        check = Markup(
            f'<p class="warn">Patient-level folds broken: {len(cov.get("tested_more_than_once", []))} patient(s) tested '
            f"more than once, {len(cov.get('never_tested', []))} never, {len(cov.get('in_two_splits_of_a_fold', {}))} fold(s) "
            f"whose leakage audit found a patient or identical image in two splits (RUN/{POOLED}/coverage.json lists them).</p>"
        )
    else:
        check = p(
            f"Each of the {cov.get('patients', '?')} patients is in the test split of exactly one of the {k} folds "
            f"({cov.get('tested_once', 0)} tested once so far), and no fold has a patient or identical image in two splits."
        )
    parts = [check, table(pd.read_csv(folds))]
    per_fold = run / POOLED / "per_fold.csv"
    if per_fold.is_file() and len(pf := pd.read_csv(per_fold)):
        parts += [
            h3("Macro F1 per fold (mean over seeds)"),
            table(pf.pivot_table(index="scenario", columns="fold", values="macro f1", sort=False).reset_index()),
        ]
    links = [
        f'<a href="../{fold_name(i)}/report/index.html">{fold_name(i)}</a>'
        for i in range(k)
        if (run / fold_name(i) / "report" / "index.html").is_file()
    ]
    if links:
        parts += [
            h3("Fold reports (generator, labeling, selection, audit of each fold)"),
            Markup("<p>" + " · ".join(links) + "</p>"),
        ]
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
        piv = {
            v: g.pivot(index="cls", columns="scenario", values=v).reindex(
                index=order, columns=list(dict.fromkeys(g["scenario"]))
            )
            for v in ("mean", "ci_low", "ci_high")
        }
        parts.append(
            img(
                figures.grouped_bars(
                    piv["mean"],
                    piv["ci_low"],
                    piv["ci_high"],
                    "recall",
                    f"per-class recall by scenario ({task}, 95% CI)",
                ),
                "recall",
            )
        )
    return join(parts)


def _seed_dirs(run: Path) -> dict[str, list[Path]]:
    """Finished seed folders per scenario (of every fold in a k-fold run), in the headline table's order (then by name)."""
    roots = (
        [run / fold_name(i) / "experiments" for i in range(fold_count(run))]
        if is_pooled(run)
        else [run / "experiments"]
    )
    out: dict[str, list[Path]] = {}
    for root in filter(Path.is_dir, roots):
        for sc in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))):
            seeds = sorted(d for d in sc.glob("seed*") if (d / "metrics.json").is_file())
            if seeds:
                out.setdefault(sc.name, []).extend(seeds)
    headline = results_dir(run) / "table.csv"
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
    over = "folds and seeds (each patient counted once per seed)" if is_pooled(run) else "seeds"
    return join(
        [
            p(f"Test-set confusion matrices summed over {over} (colour: row-normalised recall)."),
            img(figures.confusion_plot(mats, classes), "confusion matrices"),
        ]
    )


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
        series["labeler"] = (
            [h.get("epoch", i + 1) for i, h in enumerate(labeler)],
            [h.get("val_macro_f1") for h in labeler],
        )
    if not series:
        return None
    return img(
        figures.line_plot(series, "epoch", "validation macro-F1 (mean over seeds)", "classifier training curves"),
        "training curves",
    )
