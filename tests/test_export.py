"""`retinaug export`: a run's images as a Hugging Face imagefolder (loaded back with `datasets`) and its dataset card."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import quality_row, small_copy, tiny_run
from typer.testing import CliRunner

from retinaug.cards import stage_current
from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.export import ExportConfig, export_run
from retinaug.io import sha256_file
from retinaug.manifest import load_manifest, save_manifest

datasets = pytest.importorskip("datasets")


def _header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _loaded(folder: Path) -> dict[str, pd.DataFrame]:
    """Every split as loaded by datasets, with the image's file path instead of the decoded image."""
    ds = datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(folder.parent / "hf-cache"))
    out = {}
    for split in ds:
        part = ds[split].cast_column("image", datasets.Image(decode=False)).to_pandas()
        part["file"] = [os.path.relpath(img["path"], folder) for img in part.pop("image")]
        out[split] = part
    return out


def test_synthetic_export_round_trips_through_datasets(tmp_path):
    run = tiny_run()
    syn = load_manifest(run / "label")  # the synthetic images with the labeler's verdicts
    assert sorted(syn["path"]) == sorted(load_manifest(run / "synthetic")["path"])
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    loaded = _loaded(tmp_path / "ds")
    assert list(loaded) == ["train"]  # synthetic images are TRAIN images
    train = loaded["train"]
    assert len(train) == len(syn)
    columns = set(syn.columns) - {"path", "generator_dir"} | {"source_file", "parent"}
    assert set(train.columns) - {"file"} == columns  # every provenance column, no local path
    by_seed = syn.set_index("seed")
    for row in train.itertuples():
        source = by_seed.loc[row.seed]  # seeds survive exactly (63-bit integers)
        assert row.label == source["label"] and row.file == f"train/{row.label}/{Path(source['path']).name}"
        assert (
            row.steps == source["steps"]
            and row.guidance == pytest.approx(source["guidance"])
            and row.origin == "synthetic"
        )
        assert bool(row.accepted) == bool(source["accepted"]) and row.pred_label == source["pred_label"]
        assert row.intended_label == source["intended_label"] and row.pred_conf == pytest.approx(source["pred_conf"])
        assert sha256_file(tmp_path / "ds" / row.file) == sha256_file(source["path"])
        assert os.stat(tmp_path / "ds" / row.file).st_ino == os.stat(source["path"]).st_ino  # hard-linked
    umask = os.umask(0o022)
    os.umask(umask)
    # shareable as the umask says
    for made in (tmp_path / "ds", tmp_path / "ds" / "train", tmp_path / "ds" / "README.md"):
        assert stat.S_IMODE(made.stat().st_mode) == (0o777 if made.is_dir() else 0o666) & ~umask, made
    csv = pd.read_csv(tmp_path / "ds" / "metadata.csv")
    assert (
        sorted(csv["file_name"]) == sorted(train["file"])
        and str(run) not in (tmp_path / "ds" / "metadata.csv").read_text()
    )

    card = (tmp_path / "ds" / "README.md").read_text()
    header = _header(card)
    assert header["task_categories"] == ["image-classification"] and header["size_categories"] == ["n<1K"]
    assert header["license"] == "unknown" and "synthetic" in header["tags"]
    assert "Not for clinical use" in card and "License: not set" in card
    for code, n in syn["label"].value_counts().items():
        assert f"| {code} | " in card and f"| {n} | {n} |" in card  # train synthetic = total per class
    audit = json.loads((run / "quality" / "audit.json").read_text())
    g, everything = quality_row(card, "G"), quality_row(card, "all")
    assert (
        g[1] == "4"
        and f"{audit['per_class']['G']['fid']:.3g}" in g
        and f"{audit['per_class']['G']['fid_test_vs_train']:.3g}" in g
    )
    assert everything[1] == str(audit["n_synthetic"]) and f"{audit['overall']['fid']:.3g}" in everything
    assert "policy `all`" in card and "ddpm" in card and "steps 2" in card  # labeler filter, generator, sampling


def test_both_export_has_every_split_with_relative_provenance(tmp_path):
    run = tiny_run()
    data = load_manifest(run / "data")
    export_run(run, ExportConfig(what="both", copy_images=True), tmp_path / "both")
    loaded = _loaded(tmp_path / "both")
    assert list(loaded) == ["train", "validation", "test"]
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        real = loaded[name][loaded[name]["origin"] == "real"]
        expected = data[data["split"] == split]
        assert sorted(real["source_file"]) == sorted(
            os.path.relpath(p, run / "data" / "images") for p in expected["path"]
        )
        assert real.set_index("source_file")["label"].to_dict() == {
            os.path.relpath(p, run / "data" / "images"): lab for p, lab in zip(expected["path"], expected["label"])
        }
    assert (loaded["train"]["origin"] == "synthetic").sum() == len(load_manifest(run / "synthetic"))
    assert loaded["test"]["prompt"].isna().all() and loaded["test"]["seed"].isna().all()  # same columns in every split
    one = loaded["train"].iloc[0]
    assert (
        os.stat(tmp_path / "both" / one["file"]).st_ino != os.stat(run / "data" / "images" / one["source_file"]).st_ino
    )  # --copy
    card = (tmp_path / "both" / "README.md").read_text()
    assert "| class | name | train real | train synthetic | validation real | test real | total |" in card
    assert f"| all |  | {(data['split'] == 'train').sum()} | " in card

    export_run(run, ExportConfig(what="real"), tmp_path / "both")  # an earlier export is replaced whole
    assert (
        not any((tmp_path / "both").rglob("G_*.png"))
        and "synthetic" not in _header((tmp_path / "both" / "README.md").read_text())["tags"]
    )


def test_accepted_only_and_refusals(tmp_path):
    run = small_copy(tmp_path)
    verdicts = load_manifest(run / "label")
    verdicts["accepted"] = pd.array([i % 2 == 0 for i in range(len(verdicts))], dtype="boolean")
    save_manifest(verdicts, run / "label")
    export_run(run, ExportConfig(accepted_only=True), tmp_path / "acc")
    train = _loaded(tmp_path / "acc")["train"]
    assert len(train) == int(verdicts["accepted"].sum()) == 10 and train["accepted"].all()
    assert "only those the labeler accepted" in (tmp_path / "acc" / "README.md").read_text()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RetinaugError, match="not empty and holds no earlier export"):
        export_run(run, ExportConfig(), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(RetinaugError, match="would contain the run folder"):
        export_run(run, ExportConfig(), tmp_path)
    with pytest.raises(RetinaugError, match="--accepted-only filters synthetic images"):
        export_run(run, ExportConfig(what="real", accepted_only=True), tmp_path / "x")
    save_manifest(verdicts.iloc[1:], run / "label")  # labels other images than synthetic/ holds
    with pytest.raises(RetinaugError, match="label stage is out of date"):
        export_run(run, ExportConfig(), tmp_path / "x")
    shutil.rmtree(run / "label")
    with pytest.raises(RetinaugError, match="needs the labeler's verdicts"):
        export_run(run, ExportConfig(accepted_only=True), tmp_path / "x")
    shutil.rmtree(run / "synthetic")
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "x")])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 1 and "no synthetic images in this run" in said and "Traceback" not in result.output
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))  # nothing half-written


def test_card_leaves_out_an_audit_that_no_longer_describes_the_images(tmp_path):
    run = small_copy(tmp_path)
    assert stage_current(run, "quality")
    record = json.loads((run / "synthetic" / "stage.json").read_text())
    (run / "synthetic" / "stage.json").write_text(
        json.dumps({**record, "output_hash": "0" * 16})
    )  # synthetic redone since
    assert not stage_current(run, "quality") and stage_current(run, "data")
    export_run(run, ExportConfig(), tmp_path / "stale")
    card = (tmp_path / "stale" / "README.md").read_text()
    assert "quality audit is out of date" in card and "| FID |" not in card
    (run / "quality" / "audit.json").unlink()
    export_run(run, ExportConfig(), tmp_path / "stale")
    assert "has no quality audit" in (tmp_path / "stale" / "README.md").read_text()
