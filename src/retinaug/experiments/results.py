"""Results: per-seed metrics flattened, mean and 95% t-interval over seeds, the paired difference to each
scenario's baseline and, for synthetic scenarios, to the matching traditional-only scenario and (pretrain) to the
schedule control (paired t-tests), and the tables written beside them (summary.csv, table.md/.csv)."""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RetinaugError
from ..io import read_json, write_text_atomic
from .external import EXTERNAL
from .scenarios import Scenario, baseline_of, schedule_control, traditional_reference

HEADLINE = ("precision", "recall", "f1", "accuracy")
# the comparisons each scenario may have: summary.csv column prefix -> the column naming the other scenario
COMPARISONS = {"": "baseline", "ref_": "reference", "ctl_": "control"}


def flatten_metrics(metrics: dict, classes: Sequence[str]) -> dict[tuple[str, str], float]:
    """(metric, class or 'macro') -> value from one seed's metrics.json."""
    out: dict[tuple[str, str], float] = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = key.removeprefix("macro_")
            out[(name, "macro")] = float(value)
    per_class = metrics.get("per_class") or {}
    for code in classes:
        for name, value in (per_class.get(code) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(name, code)] = float(value)
    return out


def _sem(values: np.ndarray, overlap: float) -> float:
    """Standard error of the mean; `overlap` > 0 widens the variance of the mean from var/J to (1/J + overlap) x var
    (Nadeau & Bengio's correction for runs whose training sets overlap; see `summarize_runs`)."""
    return float(np.std(values, ddof=1) * np.sqrt(1 / len(values) + overlap))


def _mean_ci(values: np.ndarray, overlap: float = 0.0) -> tuple[float, float, float]:
    """Mean and 95% t-interval (standard error from `_sem`)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    sem = _sem(values, overlap)
    if sem == 0:
        return mean, mean, mean
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def _paired(a: np.ndarray, b: np.ndarray, overlap: float = 0.0) -> tuple[float, float, float, float]:
    """Mean difference a - b, its 95% t-interval, and the paired t-test p-value (corrected by `overlap` as in `_mean_ci`)."""
    from scipy import stats

    diff = a - b
    mean, lo, hi = _mean_ci(diff, overlap)
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return mean, lo, hi, float("nan") if len(diff) < 2 else (1.0 if diff[0] == 0 else 0.0)
    t = mean / _sem(diff, overlap)
    return mean, lo, hi, float(2 * stats.t.sf(abs(t), len(diff) - 1))


def valid_metrics(metrics: object) -> bool:
    """Is this what `evaluate` writes (a dict whose macro F1 is a number, or null when no class was present)?"""
    return (
        isinstance(metrics, dict)
        and "macro_f1" in metrics
        and (metrics["macro_f1"] is None or isinstance(metrics["macro_f1"], (int, float)))
    )


def seed_metrics(
    root: Path,
    scenarios: list[Scenario],
    seeds: list[int],
    metrics: str = "metrics.json",
    classes: Collection[str] | None = None,
) -> dict[str, dict[int, dict[tuple[str, str], float]]]:
    """scenario -> seed -> flattened metrics, for the seed runs that have finished (`metrics`, relative to the seed's
    folder, written); a metrics file that is not what evaluate writes is an error naming it, never a silently
    missing seed. `classes`: the per-class rows kept (default: the scenario's task; an external set lacks some)."""
    per_seed: dict[str, dict[int, dict[tuple[str, str], float]]] = {}
    for sc in scenarios:
        for seed in seeds:
            path = root / sc.name / f"seed{seed}" / metrics
            if not path.is_file():
                continue
            m = read_json(path)
            if not valid_metrics(m):
                raise RetinaugError(
                    f"{path} is damaged (not the metrics evaluate writes): delete its folder and run the "
                    "experiments again to redo that fit"
                )
            per_seed.setdefault(sc.name, {})[seed] = flatten_metrics(
                m, [c for c in sc.classes if classes is None or c in classes]
            )
    return per_seed


def summarize(root: Path, scenarios: list[Scenario], seeds: list[int]) -> pd.DataFrame:
    """Mean, 95% t-interval over seeds and paired difference vs the baseline, per scenario, metric and class,
    from the finished seed runs under `root` (a partly finished grid gives a partial table)."""
    return summarize_runs(seed_metrics(root, scenarios, seeds), scenarios)


def summarize_runs(
    per_run: dict[str, dict[Hashable, dict[tuple[str, str], float]]], scenarios: list[Scenario], overlap: float = 0.0
) -> pd.DataFrame:
    """The summary of `summarize` from scenario -> run key -> flattened metrics; a run key is a seed, or a
    (fold, seed) pair when folds are pooled: a scenario and its baseline are paired on equal keys.

    `overlap`: for pooled folds, test / train size of a fold. Folds share most of their training patients, so their
    scores are correlated and the plain t-interval is too narrow; Nadeau & Bengio's corrected resampled t-test
    (Machine Learning 52, 2003; Bouckaert & Frank 2004 for repeated k-fold) scales the variance of the mean by
    (1/J + test/train) instead of 1/J over the J runs. 0 for seeds on one split (the same test set each time)."""
    rows = []
    for sc in scenarios:
        runs = per_run.get(sc.name, {})
        others = {
            "baseline": baseline_of(sc, scenarios),
            "reference": traditional_reference(sc, scenarios),
            "control": schedule_control(sc, scenarios),
        }
        keys = sorted({k for r in runs.values() for k in r})
        for metric, cls in keys:
            vals = np.array([runs[s][(metric, cls)] for s in sorted(runs) if (metric, cls) in runs[s]])
            mean, lo, hi = _mean_ci(vals, overlap)
            row = dict(
                scenario=sc.name,
                label=sc.label,
                task=sc.task,
                metric=metric,
                cls=cls,
                n_seeds=len(vals),
                mean=mean,
                ci_low=lo,
                ci_high=hi,
                **{col: name or "" for col, name in others.items()},
            )
            for prefix, col in COMPARISONS.items():
                if others[col] and (diff := _paired_runs(runs, per_run.get(others[col], {}), (metric, cls), overlap)):
                    row.update(
                        zip(
                            (f"{prefix}diff_mean", f"{prefix}diff_ci_low", f"{prefix}diff_ci_high", f"{prefix}p_value"),
                            diff,
                        )
                    )
            rows.append(row)
    columns = ["scenario", "label", "task", "metric", "cls", "n_seeds", "mean", "ci_low", "ci_high"]
    for prefix, col in COMPARISONS.items():
        columns += [col] + [f"{prefix}{c}" for c in ("diff_mean", "diff_ci_low", "diff_ci_high", "p_value")]
    summary = pd.DataFrame(rows, columns=columns)
    for prefix, q in zip(COMPARISONS, q_values(summary)):
        summary[f"{prefix}q_value"] = q
    return summary


def _paired_runs(
    runs: dict, other: dict, key: tuple[str, str], overlap: float
) -> tuple[float, float, float, float] | None:
    """`_paired` over the run keys (seeds, or (fold, seed)) both scenarios finished with `key`; None when there are none."""
    paired = [s for s in sorted(runs) if s in other and key in runs[s] and key in other[s]]
    if not paired:
        return None
    return _paired(np.array([runs[s][key] for s in paired]), np.array([other[s][key] for s in paired]), overlap)


def q_values(summary: pd.DataFrame) -> list[pd.Series]:
    """Benjamini-Hochberg q-values of the paired tests of every comparison (`COMPARISONS`: against the baselines,
    the traditional references and the schedule controls; scipy's `false_discovery_control`), in that order. A grid
    compares many scenarios, so some p < 0.05 come by chance; each (metric, class) is one family of tests, all
    comparisons included."""
    from scipy import stats

    q = {f"{prefix}p_value": pd.Series(np.nan, index=summary.index, dtype=float) for prefix in COMPARISONS}
    for _, family in summary.groupby(["metric", "cls"]):
        p = pd.concat([family[col].dropna().rename(lambda i, col=col: (col, i)) for col in q])
        if len(p):
            for (col, i), value in zip(p.index, stats.false_discovery_control(p.to_numpy(dtype=float))):
                q[col][i] = value
    return list(q.values())


def aggregate(
    root: Path, scenarios: list[Scenario], seeds: list[int], composition: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Write summary.csv (see `summarize`), table.md/.csv (the paper's shape) and composition.csv. Returns the summary."""
    summary = summarize(root, scenarios, seeds)
    write_tables(root, summary, scenarios, composition)
    return summary


def aggregate_external(
    root: Path, scenarios: list[Scenario], seeds: list[int], classes: Collection[str]
) -> pd.DataFrame:
    """`aggregate` of the fits' scores on the external set (FIT/external/metrics.json) into root/external/: the
    same intervals over seeds and differences paired against the same baselines; per-class rows only for the
    external set's `classes`. Returns the summary."""
    summary = summarize_runs(seed_metrics(root, scenarios, seeds, f"{EXTERNAL}/metrics.json", classes), scenarios)
    write_tables(root / EXTERNAL, summary, scenarios)
    return summary


def write_tables(
    root: Path,
    summary: pd.DataFrame,
    scenarios: list[Scenario],
    composition: pd.DataFrame | None = None,
    runs: str = "seeds",
) -> None:
    """summary.csv, table.csv/.md (`runs`: the headline's column counting what the intervals are over) and
    composition.csv into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / "summary.csv", summary.to_csv(index=False))
    table = headline_table(summary, scenarios, composition, runs)
    write_text_atomic(root / "table.csv", table.to_csv(index=False))
    write_text_atomic(root / "table.md", _markdown(table))
    if composition is not None:
        write_text_atomic(root / "composition.csv", composition.to_csv(index=False))


def headline_table(
    summary: pd.DataFrame, scenarios: list[Scenario], composition: pd.DataFrame | None, runs: str = "seeds"
) -> pd.DataFrame:
    """One row per scenario: macro precision, recall, F1 and accuracy as 'mean [lo, hi]', F1 change vs its baseline
    (named, since not every baseline is real-only: syn + trad is paired against trad) and, when the run has a
    traditional-only scenario to match, a synthetic scenario's F1 change vs that one; likewise a pretrain scenario's
    vs its schedule control."""
    rows = []
    for sc in scenarios:
        s = summary[(summary["scenario"] == sc.name) & (summary["cls"] == "macro")].set_index("metric")
        if s.empty:
            continue
        row = {"scenario": sc.name, "label": sc.label, "task": sc.task, runs: int(s["n_seeds"].max())}
        if composition is not None:
            c = composition[composition["scenario"] == sc.name]
            row["train images"] = int(c["train_total"].sum())
        for metric in HEADLINE:
            row[metric] = _fmt(s, metric)
        row["ΔF1 vs baseline"] = _delta(s, "", "baseline")
        if (summary["reference"] != "").any():
            row["ΔF1 vs traditional"] = _delta(s, "ref_", "reference")
        if (summary["control"] != "").any():
            row["ΔF1 vs schedule control"] = _delta(s, "ctl_", "control")
        rows.append(row)
    return pd.DataFrame(rows)


def _delta(s: pd.DataFrame, prefix: str, against: str) -> str:
    """'+0.012 vs NAME (p=…, q=…)': the macro-F1 difference of one comparison; empty when there is none."""
    if "f1" not in s.index or pd.isna(s.loc["f1", f"{prefix}diff_mean"]):
        return ""
    d = s.loc["f1"]
    return (
        f"{d[f'{prefix}diff_mean']:+.3f} vs {d[against]} (p={d[f'{prefix}p_value']:.2g}, q={d[f'{prefix}q_value']:.2g})"
    )


def _fmt(s: pd.DataFrame, metric: str) -> str:
    if metric not in s.index:
        return ""
    r = s.loc[metric]
    if math.isnan(r["ci_low"]):
        return f"{r['mean']:.3f}"
    # the metrics live in [0, 1]; the t-interval of few seeds can overshoot (summary.csv keeps it unclipped)
    return f"{r['mean']:.3f} [{max(r['ci_low'], 0):.3f}, {min(r['ci_high'], 1):.3f}]"


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no finished scenarios)\n"
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
