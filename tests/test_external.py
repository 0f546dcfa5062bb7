"""An external test set (`data.external`): near-copies of the run's train images are dropped with their patients,
every fit is also scored on it (on its task's classes the set has), aggregated and reported beside the internal
results, and a changed external set re-scores the fits without retraining them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_dataset
from PIL import Image
from pipeline_helpers import TINY, tiny_config
from typer.testing import CliRunner

from retinaug.errors import RetinaugError

SCENARIOS = "[{name: real, task: 5-class}, {name: cw, task: 5-class, imbalance: class-weights}]"
FITS = [f"{sc}/seed{k}" for sc in ("real", "cw") for k in (0, 1)]
OFF = [f"{s}.enabled=false" for s in ("generator", "synthetic", "labeler", "selection", "augment", "quality")]


def _config(external: Path | None):
    """The tiny phantom run, its experiments alone: two 5-class scenarios (cw paired against real), two seeds."""
    return tiny_config(
        *OFF,
        "experiments.seeds=2",
        f"experiments.scenarios={SCENARIOS}",
        *([f"data.external={external}"] if external else []),
    )


def _external(root: Path) -> tuple[Path, list[str]]:
    """A phantom of another seed with classes N, G, C, A (6 patients each, 16 px) in which the left eye of one G and
    one C patient is replaced by a resized copy (24 px) of a train image of the run's phantom (same plan as TINY's
    data stage). Returns the folder and the planted images' paths."""
    from retinaug.manifest import load_manifest, save_manifest
    from retinaug.phantom import PhantomConfig, make_phantom

    d = TINY["data"]
    run_data = make_phantom(
        PhantomConfig(n=d["n"], size=d["size"], seed=0, val=d["val"], test=d["test"]), root / "run-phantom"
    )
    ext = root / "external"
    df = make_phantom(PhantomConfig(n=48, size=16, seed=5, proportions={"N": 1, "G": 1, "C": 1, "A": 1}), ext)
    planted = []
    for code in ("G", "C"):
        source = run_data[(run_data["split"] == "train") & (run_data["label"] == code)]["path"].iloc[0]
        row = df.index[(df["label"] == code) & (df["eye"] == "left")][0]
        copy = ext / "planted" / f"{df.at[row, 'patient_id']}_left.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).resize((24, 24), Image.BILINEAR).save(copy)
        df.loc[row, "path"] = str(copy)
        planted.append(str(copy))
    save_manifest(df, ext)
    shutil.rmtree(root / "run-phantom")
    loaded = load_manifest(ext)
    return ext, sorted(loaded.loc[loaded["path"].str.contains("/planted/"), "path"])


def _files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _mtimes(run: Path, name: str) -> dict[str, int]:
    return {fit: (run / "experiments" / fit / name).stat().st_mtime_ns for fit in FITS}


@pytest.fixture(scope="module")
def external_run(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    from retinaug.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("external")
    ext, planted = _external(root)
    before = _files(ext)
    run = root / "run"
    run_pipeline(_config(ext), run)
    assert _files(ext) == before  # read-only for retinaug
    return run, ext, planted


def test_planted_copies_dropped_with_their_patients(external_run):
    run, _, planted = external_run
    folder = run / "experiments" / "external"
    table = pd.read_csv(folder / "overlap.csv")
    assert (
        sorted(table.loc[table["duplicate"], "a_path"]) == planted
    )  # the copies, and nothing else of the other phantom
    counts = json.loads((folder / "overlap.json").read_text())
    assert (counts["n_a"], counts["duplicates"], counts["dropped_patients"], counts["dropped_images"]) == (48, 2, 2, 4)
    assert (counts["kept_images"], counts["kept_patients"], counts["classes"]) == (44, 22, ["N", "G", "C", "A"])
    assert counts["per_class"]["G"] == counts["per_class"]["C"] == {"images": 12, "dropped": 2, "kept": 10}
    assert counts["per_class"]["N"] == {"images": 12, "dropped": 0, "kept": 12}


def test_every_fit_scored_on_the_shared_classes(external_run):
    run, _, planted = external_run
    dropped = {Path(p).name.split("_")[0] for p in planted}
    for fit in FITS:
        m = json.loads((run / "experiments" / fit / "external" / "metrics.json").read_text())
        assert m["excluded"] == {
            "count": 12,
            "by_class": {"N": 12},
        }  # not a class of the 5-class task: left out, counted
        assert m["classes_missing_from_data"] == ["H", "M"] and m["per_class"]["H"]["f1"] is None
        assert (m["n_images"], m["n_patients"], m["n_boot"]) == (32, 16, TINY["experiments"]["n_boot"])
        scored = set(pd.read_parquet(run / "experiments" / fit / "external" / "predictions.parquet")["patient_id"])
        assert not scored & dropped


def test_external_table_paired_and_reported(external_run):
    run, _, _ = external_run
    folder = run / "experiments" / "external"
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["cls"]) == {"macro", "G", "C", "A"}  # per-class rows for the classes the external set has
    f1 = summary[(summary["metric"] == "f1") & (summary["cls"] == "macro")].set_index("scenario")
    assert f1.loc["cw", "baseline"] == "real" and f1.loc["cw", "n_seeds"] == 2
    assert pd.notna(f1.loc["cw", ["diff_mean", "p_value", "q_value"]]).all()
    assert (
        "ΔF1 vs baseline" in (folder / "table.md").read_text() and " vs real (p=" in (folder / "table.md").read_text()
    )
    html = (run / "report" / "index.html").read_text()
    assert "External test set: 44 images of 22 patients (classes N, G, C, A)" in html
    assert html.index("External test set") > html.index("Judge")  # below the internal table


def test_changed_external_set_rescored_without_retraining(external_run, tmp_path):
    from retinaug.cli.app import app
    from retinaug.manifest import load_manifest, save_manifest
    from retinaug.pipeline import run_pipeline

    run0, ext0, _ = external_run
    run, ext = tmp_path / "run", tmp_path / "external"
    shutil.copytree(run0, run)
    shutil.copytree(ext0, ext)
    cfg = _config(ext)
    run_pipeline(cfg, run)  # another folder, same content: the moved run keeps its fits
    weights, scores = _mtimes(run, "model.safetensors"), _mtimes(run, "external/metrics.json")
    overlap = (run / "experiments" / "external" / "overlap.csv").stat().st_mtime_ns
    run_pipeline(cfg, run, force=["experiments"])  # the overlap and the external scores are reused
    assert (run / "experiments" / "external" / "overlap.csv").stat().st_mtime_ns == overlap
    assert _mtimes(run, "external/metrics.json") == scores and _mtimes(run, "model.safetensors") == weights

    df = load_manifest(ext)
    save_manifest(
        df[df["patient_id"] != df.loc[df["label"] == "A", "patient_id"].iloc[0]], ext
    )  # prepared again in place
    internal = _mtimes(run, "metrics.json")
    run_pipeline(cfg, run)
    assert _mtimes(run, "model.safetensors") == weights and _mtimes(run, "metrics.json") == internal  # not retrained
    for fit in FITS:
        assert json.loads((run / "experiments" / fit / "external" / "metrics.json").read_text())["n_images"] == 30
    assert json.loads((run / "experiments" / "external" / "overlap.json").read_text())["kept_images"] == 42

    # `retinaug experiment` takes the external set from --set data.external, and scores the finished fits on it
    res = CliRunner().invoke(
        app, ["experiment", "--run", str(run), "--config", str(run / "config.yaml"), "--set", f"data.external={ext0}"]
    )
    assert res.exit_code == 0, res.output
    assert _mtimes(run, "model.safetensors") == weights
    for fit in FITS:
        assert json.loads((run / "experiments" / fit / "external" / "metrics.json").read_text())["n_images"] == 32

    run_pipeline(_config(None), run)  # no external set any more: its tables go, the fits stay
    assert not (run / "experiments" / "external").exists() and _mtimes(run, "model.safetensors") == weights
    assert "External test set" not in (run / "report" / "index.html").read_text()


def test_up_front_checks_refuse_bad_external_sets(tmp_path):
    from retinaug.pipeline import plan_pipeline

    def refused(external: Path, match: str) -> None:
        with pytest.raises(RetinaugError, match=match):
            plan_pipeline(_config(external), tmp_path / "run")
        assert not (tmp_path / "run").exists()

    refused(tmp_path / "nowhere", r"data.external .*nowhere not found")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"")
    refused(tmp_path / "photos", r"data.external .*photos: no manifest at")
    make_dataset(tmp_path / "two", classes=("G", "D"), patients_per_class=2, size=16)
    refused(
        tmp_path / "two", r"scenario real \(task G,C,A,H,M\) shares G with data.external \(classes D,G\): .*at least 2"
    )
