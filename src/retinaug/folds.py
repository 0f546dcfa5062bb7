"""Patient-level k-fold cross-validation of the whole pipeline (`data.folds: k`).

Why: one test split of a few hundred patients cannot resolve a few points of F1, and a second split seed moves the
numbers by more than most effects (on ODIR one split proved optimistic by ~0.15 F1). With k folds every patient is
tested exactly once, by models that never saw them.

Layout: the data stage ingests once into RUN/data. Fold i gets its own run folder RUN/fold-<i>/ with every fitted
stage (its data split, generator, synthetic, labeler, label, selection, augment, experiments, quality, and its own
report), each trained on that fold's training patients only, so a generator or labeler never saw the fold's test
patients. RUN/pooled/ pools the folds' experiments: metrics over (fold, seed) runs with 95% intervals of the
corrected resampled t-test (`training_overlap`), differences to the baseline paired on equal (fold, seed), the fold
sizes and the check that each patient is tested once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .io import read_json, write_json_atomic, write_text_atomic
from .stages import read_record

log = logging.getLogger("retinaug.folds")

POOLED = "pooled"


def fold_name(i: int) -> str:
    return f"fold-{i}"


def fold_count(run: Path) -> int:
    """k of the run in `run` (its config.yaml), 1 for a single-split run or a folder without a config."""
    import yaml

    cfg = Path(run) / "config.yaml"
    try:
        return int(((yaml.safe_load(cfg.read_text()) or {}).get("data") or {}).get("folds", 1))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return 1


def is_pooled(run: Path) -> bool:
    """A k-fold run's top folder (its results are pooled from RUN/fold-<i>/), not a fold's or a single run's."""
    return fold_count(run) > 1 and (Path(run) / fold_name(0)).is_dir()


def results_dir(run: Path) -> Path:
    """Where the run's scenario tables lie: RUN/pooled for a k-fold run, RUN/experiments otherwise."""
    return Path(run) / (POOLED if is_pooled(run) else "experiments")


def fold_data_stage(data: Path, cfg, out: Path, fold: int) -> None:
    """Fold `fold`'s data stage: the ingested manifest of RUN/data, split for this fold (see `split.fold_split`), with
    a summary.json like the ingest's (sizes per split, class counts, the leakage audit of this fold's split)."""
    from .ingest.finish import split_summary
    from .manifest import load_manifest, save_manifest
    from .split import fold_split

    df = fold_split(load_manifest(data), fold, cfg.folds, cfg.val, cfg.seed)
    for warning in df.attrs["split_warnings"]:
        log.warning("fold %d: %s", fold, warning)
    save_manifest(df, out)
    summary = {
        **split_summary(df),
        "split_warnings": df.attrs["split_warnings"],
        "fold": fold,
        "folds": cfg.folds,
        "val": cfg.val,
        "seed": cfg.seed,
    }
    write_json_atomic(out / "summary.json", summary)
    log.info(
        "fold %d of %d: %s; leakage audit: %s",
        fold,
        cfg.folds,
        ", ".join(
            f"{s} {summary['patients_per_split'][s]} patients / {summary['splits'][s]} images"
            for s in ("train", "val", "test")
        ),
        "OK" if not summary["leakage"] else f"{len(summary['leakage'])} problem(s): {summary['leakage'][:3]}",
    )


def pool_folds(run: Path) -> pd.DataFrame | None:
    """Write RUN/pooled/ from the finished seed runs of every fold (a partly finished run gives a partial table):
    summary.csv, table.csv/.md (the scenarios' headline over (fold, seed) runs), per_fold.csv (macro F1 per scenario
    and fold), folds.csv (patients and images per split and fold) and coverage.json (each patient tested once?).
    Returns the summary, None when no fold has a data split yet."""
    from .config import load_config
    from .experiments.results import seed_metrics, summarize_runs, write_tables
    from .manifest import load_manifest

    run = Path(run)
    cfg = load_config(run / "config.yaml")
    k = cfg.data.folds
    done = [i for i in range(k) if read_record(run / fold_name(i) / "data").get("status") == "done"]
    if not done:
        return None
    splits = {i: load_manifest(run / fold_name(i) / "data") for i in done}
    summaries = {i: read_json(run / fold_name(i) / "data" / "summary.json") or {} for i in done}
    out = run / POOLED
    rows = [
        {
            "fold": i,
            **{
                f"{s} {what}": summ.get(key, {}).get(s)
                for s in ("train", "val", "test")
                for what, key in (("patients", "patients_per_split"), ("images", "splits"))
            },
        }
        for i, summ in summaries.items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "folds.csv", pd.DataFrame(rows).to_csv(index=False))
    write_json_atomic(out / "coverage.json", coverage(load_manifest(run / "data"), splits, summaries, k))

    scenarios, seeds = (cfg.experiments.resolve(), cfg.experiments.seed_list) if cfg.experiments.enabled else ([], [])
    per_run: dict[str, dict] = {}
    per_fold = []
    for i in splits:
        for name, runs in seed_metrics(run / fold_name(i) / "experiments", scenarios, seeds).items():
            per_run.setdefault(name, {}).update({(i, seed): m for seed, m in runs.items()})
            f1 = [m[("f1", "macro")] for m in runs.values() if ("f1", "macro") in m]
            per_fold.append(
                {"scenario": name, "fold": i, "seeds": len(runs), "macro f1": sum(f1) / len(f1) if f1 else float("nan")}
            )
    summary = summarize_runs(per_run, scenarios, overlap=training_overlap(splits))
    write_tables(out, summary, scenarios, runs="fold × seed runs")
    write_text_atomic(
        out / "per_fold.csv",
        pd.DataFrame(per_fold, columns=["scenario", "fold", "seeds", "macro f1"]).to_csv(index=False),
    )
    return summary


def training_overlap(splits: dict[int, pd.DataFrame]) -> float:
    """Test images / train images over the folds: the n_test / n_train of the corrected resampled t-test."""
    test = sum(int((df["split"] == "test").sum()) for df in splits.values())
    train = sum(int((df["split"] == "train").sum()) for df in splits.values())
    return test / train if train else 0.0


def coverage(data: pd.DataFrame, splits: dict[int, pd.DataFrame], summaries: dict[int, dict], k: int) -> dict:
    """How often each ingested patient is in a test split of the folds written so far: the k-fold promise is
    exactly once; beside it, each fold's own leakage audit (a patient or identical image bytes in two of its splits,
    from its summary.json)."""
    tested = pd.concat([df.loc[df["split"] == "test", ["patient_id"]].assign(fold=i) for i, df in splits.items()])
    times = tested.drop_duplicates().groupby("patient_id")["fold"].nunique()
    patients = set(data["patient_id"].astype(str))
    leaks = {i: summ.get("leakage", []) for i, summ in summaries.items()}
    return {
        "folds": k,
        "folds_split": sorted(splits),
        "patients": len(patients),
        "tested_once": int((times == 1).sum()),
        "tested_more_than_once": sorted(times.index[times > 1].astype(str)),
        "never_tested": sorted(patients - set(times.index.astype(str))) if len(splits) == k else [],
        "in_two_splits_of_a_fold": {str(i): ps for i, ps in leaks.items() if ps},
    }
