"""Bad input and faults (issue 16): each probe of the issue's table gets a clear message (exit 1, no traceback) or a
skip counted in rejected.csv and the summary; Ctrl-C during each long pipeline stage says what stopped and resumes.

The table is counted in docs/reliability.md: keep the two in step."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import make_dataset
from PIL import Image
from typer.testing import CliRunner

from retinaug.cache import image_cache, load_image
from retinaug.classify import TrainConfig, train
from retinaug.cli import app
from retinaug.errors import ManifestError, RetinaugError
from retinaug.generate import DDPMConfig, finetune, load_generator
from retinaug.ingest import FolderConfig, OdirConfig, prepare_folder, prepare_odir
from retinaug.io import write_json_atomic
from retinaug.manifest import load_manifest, new_manifest, save_manifest
from retinaug.stages import read_record

runner = CliRunner()
ENV = {**os.environ, "RETINAUG_QUIET": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`retinaug ARGS` as a user runs it (the console script's main(), its own process)."""
    cmd = [sys.executable, "-c", "from retinaug.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def says(output: str, *texts: str) -> bool:
    """Does the CLI output (rich folds long paths inside its error panel) contain each text?"""

    def squash(t: str) -> str:
        return re.sub(r"[\s│╭╮╰╯─]", "", t)

    return all(squash(t) in squash(output) for t in texts)


def write_image(path: Path, seed: int = 0, size: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def class_folders(root: Path, n: int = 4, classes: tuple[str, ...] = ("glaucoma", "normal")) -> Path:
    """ROOT/<class>/<patient>_<left|right>.png: n patients per class, both eyes."""
    for ci, name in enumerate(classes):
        for k in range(n):
            for e, eye in enumerate(("left", "right")):
                write_image(root / name / f"{name[0]}{k}_{eye}.png", seed=100 * ci + 2 * k + e)
    return root


def rejected(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "rejected.csv")


# --- 16-bit and float images: scaled, not clipped -------------------------------------------------------------------

GRADIENT = np.linspace(0, 1, 96 * 96).reshape(96, 96)


@pytest.mark.parametrize(
    "name, pixels",
    [
        ("i16.png", (GRADIENT * 65535).astype(np.uint16)),  # PIL mode I;16
        ("i16.tif", (GRADIENT * 65535).astype(np.uint16)),
        ("i32.tif", (GRADIENT * 65535).astype(np.int32)),  # mode I holding 16-bit values
        ("f32.tif", GRADIENT.astype(np.float32)),  # mode F in [0, 1]
    ],
)
def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path, name, pixels):
    root = class_folders(tmp_path / "ds")
    Image.fromarray(pixels).save(root / "glaucoma" / f"deep_{name}")
    df = prepare_folder(root, FolderConfig(val=0.25, test=0.25), tmp_path / "out")
    row = df[df["path"].str.endswith(name)]
    assert len(row) == 1
    img = image_cache(row, 96).rows(row)[0].astype(float)
    expected = np.round(GRADIENT * 255)
    assert np.abs(img[..., 0] - expected).max() <= 1  # (was: 84-99% of the pixels at 255)
    assert (img == 255).mean() < 0.01 and abs(img.mean() - 127.5) < 1
    assert json.loads((tmp_path / "out/summary.json").read_text())["high_bit_depth"] == 1
    np.testing.assert_array_equal(load_image(row["path"].iloc[0], 96), img.astype(np.uint8))


# --- symlinks leaving the dataset folder --------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["file", "class folder", "sub-folder", "broken"])
def test_symlinks_out_of_the_dataset_are_refused_and_counted(tmp_path, what):
    root = class_folders(tmp_path / "ds")
    outside = tmp_path / "private"
    write_image(outside / "secret_left.png", seed=7)
    write_image(outside / "secret_right.png", seed=8)
    link = {
        "file": root / "glaucoma" / "secret_left.png",
        "class folder": root / "cataract",
        "sub-folder": root / "normal" / "more",
        "broken": root / "normal" / "gone_left.png",
    }[what]
    link.symlink_to(
        outside / "secret_left.png" if what == "file" else outside / "nothing" if what == "broken" else outside
    )
    (root / "glaucoma" / "alias_left.png").symlink_to(root / "glaucoma" / "g0_left.png")  # stays inside: kept
    (root / "normal" / "again").symlink_to(root / "normal", target_is_directory=True)  # a loop inside: read once
    df = prepare_folder(root, FolderConfig(val=0.25, test=0.25), tmp_path / "out")
    assert len(df) == 17 and df["path"].str.endswith("alias_left.png").sum() == 1
    assert not df["path"].str.contains("secret").any()
    rej = rejected(tmp_path / "out")
    reason = "missing file" if what == "broken" else "outside dataset folder"
    assert rej[["path", "reason"]].values.tolist() == [[str(link), reason]]  # (was: followed and labelled)
    assert str(outside) in rej["detail"].item()
    assert json.loads((tmp_path / "out/summary.json").read_text())["rejected"] == {reason: 1}


def test_odir_image_symlinked_out_of_the_dataset_is_refused(tmp_path):
    from test_ingest import kaggle_dataset

    root = tmp_path / "odir"
    kaggle_dataset(root, n_patients=8)
    target = write_image(tmp_path / "elsewhere.jpg", seed=3)
    (root / "preprocessed_images" / "2_left.jpg").unlink()
    (root / "preprocessed_images" / "2_left.jpg").symlink_to(target)
    prepare_odir(root, OdirConfig(val=0.25, test=0.25), tmp_path / "out")
    rej = rejected(tmp_path / "out")
    assert rej[["row", "reason"]].values.tolist() == [[4, "outside dataset folder"]]


# --- weights and metadata: checksums and damaged JSON -------------------------------------------------------------

TINY_DDPM = {
    "size": 16,
    "steps": 2,
    "batch_size": 8,
    "block_out_channels": [16, 32],
    "attention_levels": [],
    "norm_num_groups": 8,
    "warmup_steps": 1,
    "samples_per_class": 1,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny trained generator and classifier on one small dataset."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    make_dataset(root / "data", size=16)
    finetune(root / "data", DDPMConfig(**TINY_DDPM), root / "gen")
    train(
        root / "data",
        TrainConfig(backbone="resnet10t", size=16, epochs=1, batch_size=8, task="G,C,A", augment=False),
        root / "clf",
    )
    torch.set_num_threads(threads)
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_generator_weights_with_a_flipped_byte_are_refused(models, tmp_path):
    meta = json.loads((models / "gen/config.json").read_text())
    assert set(meta["weights_sha256"]) >= {
        "unet/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "scheduler/scheduler_config.json",
    }
    load_generator(models / "gen")  # intact: loads
    gen = _copy(models / "gen", tmp_path / "gen")
    weights = gen / "unet/diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(
        RetinaugError, match="does not match the checksum recorded in .*config.json.*modified or corrupted"
    ):
        load_generator(gen)
    res = runner.invoke(
        app,
        [
            "generate",
            "--generator",
            str(gen),
            "--data",
            str(models / "data"),
            "--out",
            str(tmp_path / "syn"),
            "--per-class",
            "1",
        ],
    )
    assert res.exit_code == 1 and "does not match the checksum" in res.output and not (tmp_path / "syn").exists()


@pytest.mark.parametrize("which, file", [("generator", "gen/config.json"), ("classifier", "clf/model.json")])
@pytest.mark.parametrize("damage", ["truncated", "not json", "empty object"])
def test_damaged_model_metadata_is_a_clear_error(models, tmp_path, which, file, damage):
    folder = _copy(models / Path(file).parent, tmp_path / Path(file).parent)
    meta = folder / Path(file).name
    text = meta.read_text()
    meta.write_text({"truncated": text[: len(text) // 2], "not json": "\x00\x01garbage", "empty object": "{}"}[damage])
    if which == "generator":
        args = [
            "generate",
            "--generator",
            str(folder),
            "--data",
            str(models / "data"),
            "--out",
            str(tmp_path / "syn"),
            "--per-class",
            "1",
        ]
    else:
        args = ["evaluate", "--model", str(folder), "--data", str(models / "data"), "--n-boot", "0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception  # a RetinaugError, no traceback
    assert says(res.output, f"{meta} is damaged", "retrain"), res.output


# --- a manifest's stored image root ---------------------------------------------------------------------------------


def _manifest_with_root(folder: Path, root: str, names: list[str]) -> Path:
    df = new_manifest(
        [
            dict(path=n, label="N", patient_id=f"p{i}", eye="left", split="train", origin="real", source="x")
            for i, n in enumerate(names)
        ]
    )
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({b"retinaug": json.dumps({"root": root, "version": 1}).encode()})
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "manifest.parquet")
    return folder


def test_manifest_root_outside_its_folder_is_refused_unless_named(tmp_path, monkeypatch):
    evil = _manifest_with_root(tmp_path / "downloaded", "/etc", ["passwd", "hostname"])
    with pytest.raises(ManifestError, match="stores its images under /etc, outside its own folder .* refused"):
        load_manifest(evil)
    res = runner.invoke(app, ["manifest", "info", str(evil)])
    assert res.exit_code == 1 and says(res.output, "export RETINAUG_IMAGE_ROOTS=/etc")
    assert load_manifest(evil, image_root="/etc")["path"].tolist() == ["/etc/passwd", "/etc/hostname"]  # named: used
    monkeypatch.setenv("RETINAUG_IMAGE_ROOTS", "/etc")
    assert load_manifest(evil)["path"].iloc[0] == "/etc/passwd"


def test_manifest_roots_that_stay_trusted(tmp_path):
    """Inside its folder, a sibling in its run folder (RUN/augment -> RUN/data/images), or a folder the user saved a
    manifest for; not the folder above a manifest that is not a run's stage, nor a symlink out of its folder."""
    data = make_dataset(tmp_path / "run" / "data")
    save_manifest(data, tmp_path / "run" / "augment")  # root: ../data/images
    assert load_manifest(tmp_path / "run" / "augment")["path"].tolist() == data["path"].tolist()
    save_manifest(data, tmp_path / "far" / "away" / "m")  # root outside, named by this save: recorded as trusted
    assert len(load_manifest(tmp_path / "far" / "away" / "m")) == len(data)
    loose = _manifest_with_root(tmp_path / "downloads" / "m", "..", ["a.png"])  # the folder above is not a run
    with pytest.raises(ManifestError, match="refused"):
        load_manifest(loose)
    linked = _manifest_with_root(tmp_path / "run" / "linked", "images", ["a.png"])
    (linked / "images").symlink_to("/etc", target_is_directory=True)  # inside by name, /etc in truth
    with pytest.raises(ManifestError, match="refused"):
        load_manifest(linked)


# --- CSV files: ragged, not UTF-8, empty --------------------------------------------------------------------------

CSV_FAULTS = {  # (was: ParserError, UnicodeDecodeError, EmptyDataError tracebacks)
    "ragged": (
        lambda text: text.replace("\n", "\n1,2,3,4,5,6,7,8,9,10,11\n", 1).encode(),
        "line 2: 11 fields where the header has",
    ),
    "not utf-8": (
        lambda text: text.replace("cataract", "cataract caf\xe9", 1).encode("latin-1"),
        "line 2: byte 0xe9 is not UTF-8",
    ),
    "empty": (lambda text: b"", "is empty (0 bytes"),
}


@pytest.mark.parametrize("fault", CSV_FAULTS)
def test_bad_odir_csv_names_file_and_line(tmp_path, fault):
    from test_ingest import kaggle_dataset

    root = tmp_path / "odir"
    kaggle_dataset(root, n_patients=4)
    make, message = CSV_FAULTS[fault]
    csv = root / "full_df.csv"
    csv.write_bytes(make(csv.read_text()))
    res = runner.invoke(app, ["prepare", "odir", str(root), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert says(res.output, f"{csv} {message}" if fault != "empty" else f"CSV file {csv} {message}"), res.output


@pytest.mark.parametrize("fault", CSV_FAULTS)
def test_bad_manifest_csv_names_file_and_line(tmp_path, fault):
    from retinaug.manifest_tools import export_csv

    data = make_dataset(tmp_path / "data")
    (csv,) = export_csv(data, tmp_path / "csv")
    make, message = CSV_FAULTS[fault]
    text = csv.read_text()
    csv.write_bytes(make(text) if fault != "not utf-8" else text.replace("test", "caf\xe9", 1).encode("latin-1"))
    res = runner.invoke(app, ["manifest", "concat", str(csv), "--out", str(tmp_path / "merged")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert says(res.output, f"{csv} {message}" if fault != "empty" else f"CSV file {csv} {message}"), res.output


# --- unwritable output: read-only folder, over-long file name --------------------------------------------------------


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permissions: then a sysfs folder, which refuses)."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return ro / "data"
    try:
        os.mkdir("/sys/retinaug-probe")
    except OSError:
        return Path("/sys/retinaug-probe/data")
    os.rmdir("/sys/retinaug-probe")
    pytest.skip("no folder refuses writes on this machine")


@pytest.mark.parametrize("fault", ["read-only folder", "file name over 255 bytes"])
def test_unwritable_output_is_a_one_line_error(tmp_path, fault):
    root = class_folders(tmp_path / "ds", n=3)
    out = _unwritable(tmp_path) if fault == "read-only folder" else tmp_path / ("x" * 300) / "data"
    res = cli("prepare", "folder", root, "--out", out, "--val", "0.3", "--test", "0.3")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert says(
        res.stderr, f"cannot write {out}", "permission denied" if fault == "read-only folder" else "file name too long"
    ), res.stderr
    try:
        (tmp_path / "readonly").chmod(0o755)
    except FileNotFoundError:
        pass


def test_long_names_from_the_data_do_not_break_written_copies(tmp_path):
    """augment --write-files names each copy after its source: a 250-byte source name still gives a valid file."""
    from retinaug.augment import AugmentConfig, augment

    data = make_dataset(tmp_path / "data", classes=("G", "C"), patients_per_class=4)
    long = Path(data["path"].iloc[0]).with_name("g" * 250 + ".png")
    os.rename(data["path"].iloc[0], long)
    data.loc[0, "path"] = str(long)
    rows = augment(data, AugmentConfig(ratio=1, classes=("G",), write_files=True), tmp_path / "aug")
    assert all(len(Path(p).name.encode()) <= 255 and Path(p).is_file() for p in rows["path"])


# --- class folders: hidden files, empty folders, one name in two classes, loose files ---------------------------------


def test_hidden_and_loose_files_are_counted(tmp_path):
    root = class_folders(tmp_path / "ds")
    write_image(root / "glaucoma" / ".g9_left.png", seed=50)  # hidden file (was: dropped, not counted)
    write_image(root / "glaucoma" / ".thumbs" / "g8_left.png", seed=51)  # in a hidden sub-folder (was: kept)
    write_image(root / "normal" / "._n0_left.png", seed=52)  # macOS resource fork
    (root / ".DS_Store").write_bytes(b"\x00")
    write_image(root / "loose_left.png", seed=53)  # beside the class folders: no class
    df = prepare_folder(root, FolderConfig(val=0.25, test=0.25), tmp_path / "out")
    assert (
        len(df) == 16
        and not df["path"].map(lambda p: Path(p).relative_to(root)).astype(str).str.contains(r"(^|/)\.|loose").any()
    )
    assert rejected(tmp_path / "out")["reason"].value_counts().to_dict() == {
        "hidden file": 4,
        "not in a class folder": 1,
    }


def test_empty_class_folder_and_shared_names_warn(tmp_path):
    root = tmp_path / "ds"
    for ci, name in enumerate(("glaucoma", "normal")):
        for k in range(6):
            write_image(root / name / f"{k}.jpg", seed=10 * ci + k)  # numbered per class: 0.jpg in both folders
    (root / "cataract").mkdir()
    res = runner.invoke(
        app, ["prepare", "folder", str(root), "--out", str(tmp_path / "out"), "--val", "0.2", "--test", "0.2"]
    )
    assert res.exit_code == 0, res.output
    assert says(
        res.output,
        "class folder cataract (C) holds no image files",
        "6 file name(s) occur in more than one class folder (e.g. 0.jpg in glaucoma, normal)",
        "--patient-regex",
    )
    df = load_manifest(tmp_path / "out")
    assert (
        df["patient_id"].nunique() == 12 and df.groupby("patient_id")["label"].nunique().max() == 1
    )  # (was: 6 patients, 2 labels each)
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert len(summary["warnings"]) == 3  # empty folder, shared names, no patient ids in the names


def test_identical_file_under_two_classes_is_rejected(tmp_path):
    root = class_folders(tmp_path / "ds")
    shutil.copyfile(root / "glaucoma" / "g0_left.png", root / "normal" / "z9_left.png")
    df = prepare_folder(root, FolderConfig(val=0.25, test=0.25), tmp_path / "out")
    rej = rejected(tmp_path / "out")
    assert rej["reason"].tolist() == ["conflicting labels"] * 2 and len(df) == 15


# --- options ----------------------------------------------------------------------------------------------------------


def test_bad_option_values_and_empty_labels(tmp_path):
    from test_ingest import kaggle_dataset

    root = class_folders(tmp_path / "ds")
    for bad in (["--min-size", "-5"], ["--min-size", "0"], ["--workers", "0"]):
        res = runner.invoke(app, ["prepare", "folder", str(root), "--out", str(tmp_path / "o"), *bad])
        assert res.exit_code == 1 and "Input should be greater than or equal to 1" in res.output, res.output
    res = runner.invoke(app, ["prepare", "folder", str(root), "--out", str(tmp_path / "o"), "--unmatched", "drop"])
    assert res.exit_code == 1 and "unmatched: Input should be 'own-patient' or 'reject'" in res.output, res.output
    odir = tmp_path / "odir"
    df = kaggle_dataset(odir, n_patients=8)
    df.loc[0, "labels"] = ""
    df.loc[1, "labels"] = "N, C"
    df.to_csv(odir / "full_df.csv", index=False)
    prepare_odir(odir, OdirConfig(val=0.25, test=0.25), tmp_path / "out")
    details = rejected(tmp_path / "out").set_index("row")["detail"]
    assert (
        details[2] == "the labels cell is empty; expected a list of class codes like ['N']"
    )  # (was: invalid syntax (<unknown>, line 0))
    assert details[3] == "'N, C' is not a list of class codes like ['N']"


# --- report on a folder that is not a run; output file modes ----------------------------------------------------------


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "photos").mkdir()
    res = cli("report", tmp_path / "photos")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert says(res.stderr, f"{tmp_path / 'photos'} is not a run folder")
    assert not (tmp_path / "photos" / "report").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_output_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        prepare_folder(class_folders(tmp_path / "ds"), FolderConfig(val=0.25, test=0.25), tmp_path / "out")
    finally:
        os.umask(old)
    written = [
        tmp_path / "a.json",
        *(tmp_path / "out" / n for n in ("manifest.parquet", "rejected.csv", "summary.json")),
    ]
    assert {f.name: f.stat().st_mode & 0o777 for f in written} == {f.name: mode for f in written}  # (was: 0600 always)


# --- Ctrl-C during each long stage of `retinaug run` ------------------------------------------------------------------


# where each long stage is interrupted (RETINAUG_FAULT, see retinaug.faults: the process sends itself SIGINT there)
INTERRUPT_AT = {
    "generator": "int@step:2",
    "synthetic": "int@image:2",
    "labeler": "int@epoch:1",
    "experiments": "int@fit:1",
}


def _sigint_config(folder: Path) -> Path:
    """The tiny pipeline with its long stages a few steps, images, epochs or fits long, and little else."""
    from pipeline_helpers import TINY

    raw = json.loads(json.dumps(TINY))
    raw["synthetic"]["batch_size"] = 1
    raw["labeler"]["train"]["epochs"] = 2
    raw["experiments"]["scenarios"] = raw["experiments"]["scenarios"][:2]  # real, syn
    for section in ("selection", "augment", "quality"):
        raw.setdefault(section, {})["enabled"] = False
    (folder / "cfg.yaml").write_text(yaml.safe_dump(raw))
    return folder / "cfg.yaml"


def test_ctrl_c_during_each_long_stage_says_what_stopped_and_resumes(tmp_path):
    """`retinaug run` is interrupted (SIGINT, as Ctrl-C sends) inside each long stage, at a fixed point of it (not after
    a sleep, which on a fast machine lands after the stage); every re-run of the same command resumes the interrupted
    stage, and the last one finishes the run. (was: exit 130, no message)"""
    cfg, run = _sigint_config(tmp_path), tmp_path / "run"
    command = ["run", str(cfg), "--out", str(run)]
    resumed = None
    for stage, fault in INTERRUPT_AT.items():
        res = subprocess.run(
            [sys.executable, "-c", "from retinaug.cli import main; main()", *command],
            env={**ENV, "RETINAUG_FAULT": fault},
            capture_output=True,
            text=True,
            timeout=300,
        )
        err = res.stderr
        assert res.returncode == 130, (stage, err[-2000:])
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err and sum("interrupted (Ctrl-C)" in line for line in lines) == 1, err[-2000:]
        assert lines[-1].startswith(f"retinaug run: interrupted (Ctrl-C) during stage {stage}"), lines[-1]
        assert lines[-1].endswith(
            f"finished work is kept; run the same command again to resume: retinaug {' '.join(command)}"
        )
        assert read_record(run / stage)["status"] == "interrupted"
        if resumed:  # the previous interrupted stage was resumed by this run and finished
            assert (
                read_record(run / resumed)["status"] == "done"
                and read_record(run / resumed)["why"] == "its last attempt was interrupted"
            )
        resumed = stage
    final = cli(*command)
    assert final.returncode == 0, final.stderr[-2000:]
    assert (
        read_record(run / "experiments")["why"] == "its last attempt was interrupted"
        and (run / "report" / "index.html").is_file()
    )
