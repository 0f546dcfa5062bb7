"""Links and leaks: a symlink planted in a run never sends `export` or any manifest reader to a file outside the run
and the trusted image folders, and what a run shares (report, generator config) names no path of this machine."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import make_dataset
from PIL import Image
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import ManifestError, RetinaugError
from retinaug.export import ExportConfig, export_run
from retinaug.generate import DDPMConfig, finetune
from retinaug.manifest import load_manifest, new_manifest, save_manifest, trusted_roots
from retinaug.report import build_report

SECRET = b"root:$6$not-an-image$SECRET-SHADOW-LINE:19000:0:99999:7:::\n"


def small_run(tmp_path: Path) -> Path:
    """A run folder as export and the report read it: real images in data/ (2 classes, 4 patients each) and 3
    synthetic PNGs per class in synthetic/<CLASS>/, with config.yaml; no model is trained."""
    run = tmp_path / "run"
    make_dataset(run / "data", classes=("G", "C"), patients_per_class=4, size=16)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "links", "data": {"source": "folder", "seed": 0}}))
    rng = np.random.default_rng(0)
    rows = []
    for code in ("G", "C"):
        for i in range(3):
            path = run / "synthetic" / code / f"{code}_{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
            rows.append(
                dict(
                    path=str(path),
                    label=code,
                    patient_id=f"syn-{code}-{i}",
                    eye="unknown",
                    split="train",
                    origin="synthetic",
                    source="ddpm",
                    seed=i,
                )
            )
    save_manifest(new_manifest(rows), run / "synthetic")
    return run


def secret_file(tmp_path: Path) -> Path:
    """A file outside the run standing in for /etc/shadow."""
    secret = tmp_path / "elsewhere" / "shadow"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    return secret


def plant(link: Path, target: Path | str) -> None:
    """Replace a file of the run by a symlink to `target`, as someone with write access to the run could."""
    link.unlink()
    link.symlink_to(target)


def flat(text: str) -> str:
    """Text without whitespace and box lines: rich wraps long console lines anywhere (even inside a path), and the
    CLI's error panel frames each line."""
    return re.sub(r"[\s│╭╮╰╯─]", "", text)


def walk(folder: Path) -> list[Path]:
    """Every file and folder under `folder`, links not followed."""
    return [Path(parent) / name for parent, dirs, names in os.walk(folder) for name in dirs + names]


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "hard-link"])
def test_export_skips_and_counts_links_out_and_holds_no_symlink(tmp_path, copy):
    run = small_run(tmp_path)
    secret = secret_file(tmp_path)
    syn_out, real_out = run / "synthetic" / "G" / "G_00001.png", run / "data" / "images" / "G" / "G000_left.png"
    plant(syn_out, secret)
    plant(real_out, secret)
    inside = run / "synthetic" / "C" / "C_00002.png"  # a link that stays in the run: exported as the file it leads to
    plant(inside, os.path.relpath(run / "data" / "images" / "C" / "C000_right.png", inside.parent))
    out = tmp_path / "e"

    result = CliRunner().invoke(
        app, ["export", str(run), "--out", str(out), "--what", "both"] + (["--copy"] if copy else [])
    )

    assert result.exit_code == 0, result.output
    assert [p for p in walk(out) if p.is_symlink()] == []
    assert [p for p in walk(out) if p.is_file() and SECRET in p.read_bytes()] == []
    said = flat(result.output)
    assert (
        flat("skipped 2 image(s) of the run: a symlink to a file outside the run and the trusted image folders") in said
    )
    assert flat(f"{syn_out} -> {secret}") in said and flat(f"{real_out} -> {secret}") in said
    meta = pd.read_csv(out / "metadata.csv")
    assert len(meta) == 4 * 2 * 2 + 6 - 2  # every real and synthetic image but the two links out
    assert not meta["file_name"].isin(["train/G/G_00001.png", "train/G/G000_left.png"]).any()
    exported = out / "train" / "C" / "C_00002.png"
    assert exported.read_bytes() == (run / "data" / "images" / "C" / "C000_right.png").read_bytes()
    card = (out / "README.md").read_text()
    assert (
        "**Skipped: 2 image(s)** of the run, each a symlink to a file outside the run and the trusted image folders"
        in card
    )
    for table in [out / "metadata.csv", out / "README.md", *out.glob("*/metadata.parquet")]:
        assert str(tmp_path) not in table.read_bytes().decode("utf-8", "replace"), table  # no path of this machine


@pytest.mark.parametrize("what", ["real", "synthetic"])
def test_export_tables_hold_no_path_of_this_machine(tmp_path, what):
    """pandas keeps where a manifest was read (`attrs`) and pyarrow writes that into every Parquet file it makes."""
    run = small_run(tmp_path)
    export_run(run, ExportConfig(what=what, copy_images=True), tmp_path / "e")
    tables = [p for p in walk(tmp_path / "e") if p.suffix in (".parquet", ".csv", ".md")]
    assert len(tables) == {"real": 5, "synthetic": 3}[what]
    assert [t for t in tables if str(tmp_path).encode() in t.read_bytes()] == []


def test_export_of_only_linked_out_images_is_refused_not_empty(tmp_path):
    run = small_run(tmp_path)
    secret = secret_file(tmp_path)
    for png in (run / "synthetic").glob("*/*.png"):
        plant(png, secret)
    with pytest.raises(RetinaugError, match="nothing to export: .* has no synthetic images"):
        export_run(run, ExportConfig(copy_images=True), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_manifest_readers_refuse_a_file_linked_out_of_the_run(tmp_path, monkeypatch):
    run = small_run(tmp_path)
    secret = secret_file(tmp_path)
    plant(run / "synthetic" / "G" / "G_00001.png", secret)
    with pytest.raises(ManifestError, match=r"G_00001\.png -> a file in .*elsewhere.*add it to \$RETINAUG_IMAGE_ROOTS"):
        load_manifest(run / "synthetic")
    result = CliRunner().invoke(app, ["manifest", "info", str(run / "synthetic")])  # a reader through the CLI
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert flat(f"G_00001.png -> a file in {secret.parent}") in flat(result.output)
    assert flat("symlinks to files outside the run and the trusted image folders, refused unread") in flat(
        result.output
    )

    plant(run / "data" / "images" / "C" / "C001_left.png", secret)  # the real images: what every classifier trains on
    with pytest.raises(ManifestError, match=r"C001_left\.png -> a file in "):
        load_manifest(run / "data")
    monkeypatch.setenv("RETINAUG_IMAGE_ROOTS", str(secret.parent))  # a folder the user trusts may be linked to
    assert len(load_manifest(run / "data")) == 16


def test_report_names_the_run_folder_not_its_path_or_host(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "node", lambda: "host-name-7f3e91")
    run = small_run(tmp_path)
    html = build_report(run).read_text()
    assert str(tmp_path) not in html and "host-name-7f3e91" not in html
    assert "run folder run · generated" in html


def test_generator_config_names_its_data_relative_not_absolute(tmp_path):
    run = small_run(tmp_path)
    tiny = {
        "size": 16,
        "steps": 2,
        "batch_size": 8,
        "block_out_channels": [8, 16],
        "norm_num_groups": 4,
        "warmup_steps": 1,
        "samples_per_class": 1,
    }
    meta = finetune(run / "data", DDPMConfig(**tiny), run / "generator")
    stored = (run / "generator" / "config.json").read_text()
    assert meta["data"] == json.loads(stored)["data"] == "../data"
    assert str(tmp_path) not in stored
    assert (run / "generator" / meta["data"]).resolve() == (run / "data").resolve()  # still finds its data


def test_saving_a_dataset_and_run_mix_trusts_no_common_folder(tmp_path, monkeypatch):
    """A selection of a trusted dataset's images plus a run's own (what select, augment and the experiments save)
    loads again without recording their common folder (for ODIR in /data and runs in /home: "/") as trusted, which
    would let any manifest or link read anywhere below it."""
    monkeypatch.setenv("RETINAUG_CONFIG_DIR", str(tmp_path / "config"))
    odir = make_dataset(
        tmp_path / "odir", classes=("G", "C"), patients_per_class=4, size=16
    )  # the dataset as downloaded
    run = tmp_path / "runs" / "x"
    save_manifest(odir, run / "data", root=tmp_path / "odir" / "images")  # as `prepare` records it: a named root
    syn = small_run(tmp_path / "runs" / "y")  # any run's synthetic images, copied into this run
    shutil.copytree(syn / "synthetic", run / "synthetic")
    mixed = pd.concat([load_manifest(run / "data"), load_manifest(run / "synthetic")], ignore_index=True)
    save_manifest(mixed, run / "selection")

    assert trusted_roots() == [str((tmp_path / "odir" / "images").resolve())]
    assert sorted(load_manifest(run / "selection")["path"]) == sorted(mixed["path"])
    secret = secret_file(tmp_path)
    plant(run / "synthetic" / "G" / "G_00001.png", secret)  # below the common folder, outside the run and the dataset
    with pytest.raises(ManifestError, match=r"G_00001\.png -> a file in "):
        load_manifest(run / "selection")


def test_a_run_reached_through_a_linked_folder_saves_and_loads(tmp_path):
    """The manifest's folder and its images compared in one form (links of folders resolved): a run under a linked
    folder (macOS /tmp, a linked home) holds its own images."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "disk")
    df = make_dataset(tmp_path / "home" / "data", classes=("G",), patients_per_class=2, size=8)
    assert len(df) == 4 and all(os.path.isfile(p) for p in df["path"])
    assert (
        json.loads(pq.read_schema(tmp_path / "disk" / "data" / "manifest.parquet").metadata[b"retinaug"])["root"] == "."
    )
