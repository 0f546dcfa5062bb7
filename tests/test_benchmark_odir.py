"""benchmarks/odir.py reads a run folder into the BENCHMARKS.md tables (real code on the tiny pipeline run)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from pipeline_helpers import tiny_run

from retinaug.manifest import load_manifest


def _odir_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "odir.py"
    spec = importlib.util.spec_from_file_location("bench_odir", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tables_from_a_finished_run():
    odir = _odir_module()
    run = tiny_run()
    result, md = odir.collect(run)
    test = load_manifest(run / "data").query("split == 'test'")
    assert result["test_set"]["patients"] == test["patient_id"].nunique()
    assert result["test_set"]["patient_ids"] == sorted(test["patient_id"].astype(str).unique())
    assert result["missing_seed_runs"] == []
    assert [r["scenario"] for r in result["composition"]] == ["real", "syn", "trad", "sel"]
    syn = next(r for r in result["composition"] if r["scenario"] == "syn")
    assert syn["synthetic"] > 0 and syn["total"] == syn["real"] + syn["synthetic"] + syn["traditional"]
    f1 = {(r["scenario"], r["cls"]): r["mean"] for r in result["summary"] if r["metric"] == "f1"}
    assert set(f1) >= {("real", "macro"), ("syn", "macro"), ("sel", "macro")}
    assert "| syn | real |" in md  # paired-difference row against its baseline
    assert "Per-class recall, 7-class" in md and "Stage wall times" in md
    assert set(result["stages"]) >= {"data", "generator", "experiments"}


def test_partial_run_lists_missing_seed_runs(tmp_path):
    odir = _odir_module()
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    (run / "experiments" / "syn" / "seed0" / "metrics.json").unlink()
    result, md = odir.collect(run)
    assert result["missing_seed_runs"] == ["syn/seed0"]
    assert "1 seed runs missing" in md
    assert "syn" not in {r["scenario"] for r in result["summary"]}


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not a retinaug run folder"):
        _odir_module().collect(tmp_path)
