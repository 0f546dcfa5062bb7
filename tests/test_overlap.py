"""check-overlap (near-copies between two datasets) and the overlap check of `evaluate`, on planted copies:
resized, re-encoded and renamed images of one dataset hidden among other patients' images in another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_ODIR
from PIL import Image
from typer.testing import CliRunner

from retinaug.classify import EvaluateConfig, TrainConfig, evaluate, train
from retinaug.cli import app
from retinaug.ingest import FolderConfig, prepare_folder
from retinaug.manifest import load_manifest
from retinaug.phantom import PhantomConfig, make_phantom
from retinaug.quality.config import OverlapConfig
from retinaug.quality.overlap import check_overlap, find_overlap

runner = CliRunner()
SIZES = (112, 160, 224)  # copies of 128 px images are resized down and up, and saved as JPEG under new names


def plant_copies(originals: pd.DataFrame, folder: Path, start: int = 0) -> dict[str, str]:
    """Resized, re-encoded, renamed copies of `originals` in class folders; returns copy path -> original path."""
    truth = {}
    for k, row in enumerate(originals.itertuples(index=False)):
        target = folder / row.label / f"ext{start + k:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(row.path) as im:
            side = SIZES[k % len(SIZES)]
            im.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(target, quality=88)
        truth[str(target)] = row.path
    return truth


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """B: a phantom dataset (128 px). A: copies of 24 of B's images + 24 images of other phantom patients (other seed).
    Phantom patients look much alike (different ones reach grey-level SSIM 0.96, in real ODIR 0.92): a hard case."""
    root = tmp_path_factory.mktemp("overlap")
    b = make_phantom(PhantomConfig(n=96, size=128, seed=0, val=0.2, test=0.2), root / "b")
    others = make_phantom(PhantomConfig(n=96, size=128, seed=1, val=0.2, test=0.2), root / "others")
    picked = b.sample(24, random_state=0)
    truth = plant_copies(picked, root / "ext")
    for row in others.sample(24, random_state=1).itertuples(index=False):  # distinct patients: no copy of B
        target = root / "ext" / row.label / f"other_{Path(row.path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.path, target)
    a = prepare_folder(root / "ext", FolderConfig(min_size=32, val=0.2, test=0.2), root / "a")
    return root, a, b, truth


def test_planted_copies_are_found_with_no_false_pair(planted):
    root, a, b, truth = planted
    table, summary = check_overlap(a, b, OverlapConfig(), root / "out")
    found = table[table["duplicate"]]
    hits = sum(truth.get(p) == q for p, q in zip(found["a_path"], found["b_path"]))
    assert hits / len(truth) >= 0.95
    assert set(found["a_path"]) <= set(truth) and all(truth[p] == q for p, q in zip(found["a_path"], found["b_path"]))
    others = table[~table["a_path"].isin(list(truth))]
    assert len(others) == 24 and not others["duplicate"].any()  # the other patients' images: no false pair
    assert summary["duplicates"] == len(found) and summary["n_a"] == 48 and summary["n_b"] == 96
    csv = pd.read_csv(root / "out" / "overlap.csv")
    assert len(csv) == 48 and csv["duplicate"].sum() == len(found) and csv["ssim"].is_monotonic_decreasing
    assert (root / "out" / "overlap.png").stat().st_size > 0
    assert json.loads((root / "out" / "overlap.json").read_text())["duplicates"] == len(found)


def test_cli_exit_code_and_run_folder_as_reference(planted, tmp_path):
    root, a, b, truth = planted
    res = runner.invoke(app, ["check-overlap", str(root / "a"), str(root / "b"), "--out", str(tmp_path / "hit")])
    assert res.exit_code == 1, res.output
    assert f"of the 48 images of {root / 'a'}" in " ".join(res.output.split())
    res = runner.invoke(app, ["check-overlap", str(root / "others"), str(root / "b"), "--out", str(tmp_path / "none")])
    assert res.exit_code == 0 and "no near-copies" in res.output, res.output
    run = tmp_path / "run"  # a run folder stands for its real TRAIN images
    shutil.copytree(root / "b", run / "data")
    res = runner.invoke(app, ["check-overlap", str(root / "a"), str(run), "--out", str(tmp_path / "run-out")])
    assert res.exit_code == 1
    table = pd.read_csv(tmp_path / "run-out" / "overlap.csv")
    assert set(table["b_split"]) == {"train"}
    train_originals = {p for p, q in truth.items() if b.set_index("path").loc[q, "split"] == "train"}
    assert set(table.loc[table["duplicate"], "a_path"]) == train_originals
    res = runner.invoke(app, ["check-overlap", str(root / "a"), str(root / "b"), "--threshold", "1.5"])
    assert res.exit_code == 1 and "threshold: Input should be less than or equal to 1 (got 1.5)" in res.output


def test_evaluate_warns_about_and_drops_training_copies(tmp_path):
    """A model evaluated on an external set holding copies of its training images is told so, and can leave them out."""
    import torch

    torch.set_num_threads(1)
    data = make_phantom(
        PhantomConfig(n=96, size=128, seed=0, proportions="G=1,C=1,A=1", val=0.2, test=0.2), tmp_path / "data"
    )
    clf = tmp_path / "clf"
    train(
        tmp_path / "data",
        TrainConfig(backbone="resnet10t", size=32, epochs=1, batch_size=16, task="G,C,A", augment=False),
        clf,
    )
    assert len(load_manifest(clf / "train_rows.parquet")) == int((data["split"] == "train").sum())
    copies = plant_copies(data[data["split"] == "train"].head(6), tmp_path / "ext")
    others = make_phantom(
        PhantomConfig(n=48, size=128, seed=5, proportions="G=1,C=1,A=1", val=0.2, test=0.2), tmp_path / "o"
    )
    for row in others.head(12).itertuples(index=False):
        target = tmp_path / "ext" / row.label / f"o_{Path(row.path).name}"
        shutil.copyfile(row.path, target)
    ext = prepare_folder(tmp_path / "ext", FolderConfig(min_size=16, val=0.0, test=0.99), tmp_path / "ext-data")
    res = runner.invoke(
        app, ["evaluate", "--model", str(clf), "--data", str(tmp_path / "ext-data"), "--split", "all", "--n-boot", "0"]
    )
    assert res.exit_code == 0, res.output
    assert "6 of the 18 evaluated images" in " ".join(res.output.split()) and "--overlap drop" in res.output
    metrics = json.loads((clf / "eval" / "metrics.json").read_text())
    assert metrics["overlap"]["duplicates"] == 6 and metrics["n_images"] == 18
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(clf),
            "--data",
            str(tmp_path / "ext-data"),
            "--split",
            "all",
            "--n-boot",
            "0",
            "--overlap",
            "drop",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((clf / "eval" / "metrics.json").read_text())
    copy_patients = ext.loc[ext["path"].isin(list(copies)), "patient_id"].nunique()
    assert (
        metrics["overlap"]["dropped_patients"] == copy_patients
        and metrics["n_images"] == 18 - metrics["overlap"]["dropped_images"]
    )
    assert metrics["overlap"]["dropped_images"] >= 6
    own = evaluate(clf, data, EvaluateConfig(n_boot=0, overlap="warn"))  # its own test patients: no copies
    assert own["overlap"]["duplicates"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_ODIR / "full_df.csv").is_file(), reason="shared ODIR copy not available")
def test_resized_copies_of_real_odir_are_found(tmp_path):
    from retinaug.ingest import OdirConfig, prepare_odir

    odir = prepare_odir(SHARED_ODIR, OdirConfig(), tmp_path / "odir")
    truth = plant_copies(odir.sample(200, random_state=0), tmp_path / "ext")
    a = prepare_folder(tmp_path / "ext", FolderConfig(val=0.2, test=0.2), tmp_path / "a")
    table = find_overlap(a, odir)
    best = dict(zip(table["a_path"], table["b_path"]))
    found = table[table["duplicate"]]
    assert np.mean([best[p] == q for p, q in truth.items()]) >= 0.95
    assert len(found) >= 0.95 * len(truth) and all(truth[p] == q for p, q in zip(found["a_path"], found["b_path"]))
