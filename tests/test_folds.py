"""Patient-level k-fold cross-validation (`data.folds`): the fold split, the per-fold pipeline in RUN/fold-<i>/
and the pooled report (split.py, folds.py, pipeline.steps)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import cli, cli_env, tiny_config
from scipy import stats

from retinaug.config import PipelineConfig
from retinaug.errors import RetinaugError
from retinaug.experiments.results import flatten_metrics
from retinaug.manifest import load_manifest
from retinaug.pipeline import plan_pipeline, run_pipeline
from retinaug.split import assign_folds, fold_split

PATIENTS = {"N": 90, "D": 60, "G": 20, "C": 11, "H": 4}


def table() -> pd.DataFrame:
    """Two eyes per patient; two patients share one image file (same sha256), so they must share a fold."""
    rows = [
        dict(path=f"/x/{c}{k}_{eye}.jpg", label=c, patient_id=f"{c}{k}", eye=eye, sha256=f"{c}{k}{eye}")
        for c, n in PATIENTS.items()
        for k in range(n)
        for eye in ("left", "right")
    ]
    df = pd.DataFrame(rows)
    df.loc[(df["patient_id"] == "N1") & (df["eye"] == "left"), "sha256"] = "D3left"
    return df


def test_folds_put_each_patient_group_in_one_fold_stratified_and_balanced():
    df = table()
    folds = assign_folds(df, 5, seed=3)
    per_patient = pd.Series(folds).groupby(df["patient_id"]).nunique()
    assert per_patient.max() == 1 and len(per_patient) == sum(PATIENTS.values())
    assert folds[df.index[df["patient_id"] == "N1"][0]] == folds[df.index[df["patient_id"] == "D3"][0]]  # shared image
    patients = df.assign(fold=folds).drop_duplicates("patient_id")
    per_class = patients.groupby(["label", "fold"]).size().unstack(fill_value=0)
    assert (per_class.max(axis=1) - per_class.min(axis=1)).max() <= 2  # the merged N1+D3 group counts once
    assert per_class.loc["H"].sum() == 4 and (per_class.loc["H"] <= 1).all()  # a rare class spread, not stacked
    sizes = patients.groupby("fold").size()
    assert sizes.max() - sizes.min() <= 2
    assert np.array_equal(
        folds, assign_folds(df.sample(frac=1, random_state=1).sort_index(), 5, seed=3)
    )  # row order free
    assert not np.array_equal(folds, assign_folds(df, 5, seed=4))


def test_fold_split_tests_the_fold_and_validates_on_a_share_of_all_patients():
    df = table()
    n = sum(PATIENTS.values())
    tested = []
    for i in range(4):
        out = fold_split(df, i, 4, val=0.15, seed=0)
        assert (out.groupby("patient_id")["split"].nunique() == 1).all()  # no patient in two splits of a fold
        assert set(out.loc[out["split"] == "test", "fold"]) == {i}
        assert set(out.loc[out["fold"] == i, "split"]) == {"test"}
        val_patients = out.loc[out["split"] == "val", "patient_id"].nunique()
        assert abs(val_patients - 0.15 * n) <= len(PATIENTS)  # data.val stays a fraction of all patients
        tested += list(out.loc[out["split"] == "test", "patient_id"].unique())
    assert sorted(tested) == sorted(df["patient_id"].unique())  # each patient tested exactly once


def test_fold_errors_say_what_to_change():
    with pytest.raises(RetinaugError, match="cannot make 6 folds from 5 patient"):
        assign_folds(table().head(10), 6)
    with pytest.raises(RetinaugError, match="fold 4 does not exist: folds are 0..3"):
        fold_split(table(), 4, 4, val=0.15)
    with pytest.raises(ValueError, match="leaves no training patients with 2 folds"):
        PipelineConfig.model_validate({"data": {"folds": 2, "val": 0.5}})
    with pytest.raises(
        RetinaugError, match=r"fold 16: scenario real needs test images of G, C, A, H, M.*fewer folds \(data.folds\)"
    ):
        plan_pipeline(tiny_config("data.folds=20"), "unused-run-folder")  # 48 patients: 2-3 per fold


FOLDS = (
    "data.folds=2",
    "quality.enabled=false",
    "selection.enabled=false",
    "experiments.seeds=2",
    "experiments.scenarios=[{name: real, task: 5-class}, {name: syn, task: 5-class, synthetic: 0.5}]",
)


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("folds") / "run"
    run_pipeline(tiny_config(*FOLDS), run)
    return run


def test_a_test_fraction_beside_folds_is_said_not_read(caplog):
    from retinaug.pipeline import resolve

    with caplog.at_level("WARNING", logger="retinaug"):
        resolve(tiny_config(*FOLDS))  # the tiny config sets data.test 0.25
    assert "data.test 0.25 is not read with data.folds 2: each fold tests 1/2 of the patients" in caplog.text


def test_every_fitted_stage_runs_per_fold_on_that_folds_train_patients(fold_run):
    data = load_manifest(fold_run / "data")
    tested = []
    for i in range(2):
        fold = load_manifest(fold_run / f"fold-{i}" / "data")
        assert len(fold) == len(data) and (fold.groupby("patient_id")["split"].nunique() == 1).all()
        train = set(fold.loc[fold["split"] == "train", "patient_id"])
        test = set(fold.loc[fold["split"] == "test", "patient_id"])
        tested += sorted(test)
        summary = json.loads((fold_run / f"fold-{i}" / "data" / "summary.json").read_text())
        assert (summary["fold"], summary["leakage"], summary["patients_per_split"]["test"]) == (i, [], len(test))
        assert summary["splits"]["train"] == int((fold["split"] == "train").sum())
        assert (
            json.loads((fold_run / f"fold-{i}" / "generator" / "stage.json").read_text())["stage"]
            == f"fold-{i}/generator"
        )
        assert f"[fold-{i}/generator] done in" in (fold_run / "logs" / f"fold-{i}" / "generator.log").read_text()
        gen = json.loads((fold_run / f"fold-{i}" / "generator" / "config.json").read_text())
        assert gen["data"] == "../data"  # the fold's own data, named relative to the generator folder (no local path)
        learnt = fold[(fold["split"] == "train") & fold["label"].isin(gen["classes"])]
        assert (gen["n_train_images"], gen["train_patients"]) == (len(learnt), learnt["patient_id"].nunique())
        labeler_rows = set(load_manifest(fold_run / f"fold-{i}" / "labeler" / "train_rows.parquet")["patient_id"])
        assert labeler_rows == train and not labeler_rows & test
        for seed in (0, 1):
            assert (fold_run / f"fold-{i}" / "experiments" / "real" / f"seed{seed}" / "metrics.json").is_file()
    assert sorted(tested) == sorted(data["patient_id"].unique())  # each patient tested exactly once
    assert not (fold_run / "generator").exists() and not (fold_run / "experiments").exists()


def test_pooled_table_is_over_fold_seed_runs_and_pairs_them(fold_run):
    summary = pd.read_csv(fold_run / "pooled" / "summary.csv")
    units = {
        (i, s): {
            sc: flatten_metrics(
                json.loads((fold_run / f"fold-{i}" / "experiments" / sc / f"seed{s}" / "metrics.json").read_text()), []
            )
            for sc in ("real", "syn")
        }
        for i in range(2)
        for s in (0, 1)
    }
    for sc in ("real", "syn"):
        row = summary[(summary["scenario"] == sc) & (summary["metric"] == "f1") & (summary["cls"] == "macro")].iloc[0]
        values = [u[sc][("f1", "macro")] for u in units.values()]
        assert row["n_seeds"] == 4 and row["mean"] == pytest.approx(np.mean(values))
    syn = summary[(summary["scenario"] == "syn") & (summary["metric"] == "f1") & (summary["cls"] == "macro")].iloc[0]
    diffs = [u["syn"][("f1", "macro")] - u["real"][("f1", "macro")] for u in units.values()]
    assert syn["baseline"] == "real" and syn["diff_mean"] == pytest.approx(np.mean(diffs))
    folds = pd.read_csv(fold_run / "pooled" / "folds.csv")
    overlap = (
        folds["test images"].sum() / folds["train images"].sum()
    )  # the corrected resampled t-test's n_test/n_train
    se = np.std(diffs, ddof=1) * np.sqrt(1 / 4 + overlap)
    assert (syn["diff_ci_low"], syn["diff_ci_high"]) == pytest.approx(
        stats.t.interval(0.95, 3, loc=np.mean(diffs), scale=se)
    )
    headline = pd.read_csv(fold_run / "pooled" / "table.csv")
    assert list(headline["fold × seed runs"]) == [4, 4]
    assert folds["test patients"].sum() == load_manifest(fold_run / "data")["patient_id"].nunique()
    coverage = json.loads((fold_run / "pooled" / "coverage.json").read_text())
    assert (
        coverage["tested_once"] == coverage["patients"]
        and not coverage["never_tested"]
        and not coverage["in_two_splits_of_a_fold"]
    )
    html = (fold_run / "report" / "index.html").read_text()
    assert 'id="folds"' in html and "in the test split of exactly one of the 2 folds" in html
    assert 'href="../fold-1/report/index.html"' in html and 'id="generator"' not in html
    assert 'id="generator"' in (fold_run / "fold-0" / "report" / "index.html").read_text()


def test_folds_resume_one_at_a_time(fold_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fold_run, run)
    record = run / "fold-1" / "experiments" / "stage.json"
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({**rec, "status": "running"}))  # as if killed during fold 1's experiments
    (run / "fold-1" / "experiments" / "real" / "seed1" / "metrics.json").unlink()
    plan = {label: action for label, action, _ in plan_pipeline(tiny_config(*FOLDS), run)}
    assert plan["fold-1/experiments"] == "resume"
    assert {a for label, a in plan.items() if label != "fold-1/experiments" and not label.endswith("report")} == {
        "skip",
        "disabled",
    }
    kept = (run / "fold-1" / "experiments" / "real" / "seed0" / "metrics.json").read_text()
    run_pipeline(tiny_config(*FOLDS), run)
    assert (run / "fold-1" / "experiments" / "real" / "seed0" / "metrics.json").read_text() == kept
    assert (run / "pooled" / "table.csv").read_text() == (fold_run / "pooled" / "table.csv").read_text()


def test_experiment_verb_refuses_the_top_of_a_fold_run(fold_run):
    done = subprocess.run(
        cli("experiment", "--run", str(fold_run), "--preset", "demo"), capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode != 0 and "is a 2-fold run" in done.stderr and "fold-0" in done.stderr


def test_export_of_a_fold_run_names_a_fold(fold_run, tmp_path):
    from retinaug.export import ExportConfig, export_run

    with pytest.raises(RetinaugError, match=r"is a 2-fold run: each fold has its own generator.*fold-0"):
        export_run(fold_run, ExportConfig(), tmp_path / "out")
