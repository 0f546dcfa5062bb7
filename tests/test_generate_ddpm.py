"""ddpm generator + the generate loop: train split only, determinism across batch sizes, ratio counts,
provenance, resume after deletion / stray temp files / SIGKILL, refusal of mixed settings, checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import kill9_at, make_dataset
from PIL import Image
from tiny_sd import single_thread  # noqa: F401  (fixture)
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.generate import DDPMConfig, GenerateConfig, finetune, generate, image_seed, load_generator
from retinaug.manifest import load_manifest

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "size": 16,
    "steps": 6,
    "batch_size": 8,
    "block_out_channels": [16, 32],
    "attention_levels": [1],
    "norm_num_groups": 8,
    "warmup_steps": 2,
    "samples_per_class": 2,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-class dataset (8 TRAIN images per class) and a tiny ddpm trained on it via the CLI."""
    root = tmp_path_factory.mktemp("ddpm")
    df = make_dataset(root / "data")
    # val/test images are deleted: touching any of them while training would fail
    for p in df.loc[df["split"] != "train", "path"]:
        os.remove(p)
    args = ["finetune", "--data", str(root / "data"), "--out", str(root / "gen"), "--method", "ddpm"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root


def _pngs(folder: Path) -> list[Path]:
    """Finished images (pathlib's glob also matches the hidden temporary files of an unfinished write)."""
    return sorted(folder.glob("*/[!.]*.png"))


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in _pngs(folder)}


def test_finetune_uses_train_split_only_and_writes_outputs(trained):
    gen_dir = trained / "gen"
    meta = json.loads((gen_dir / "config.json").read_text())
    assert meta["method"] == "ddpm" and meta["classes"] == ["G", "C", "A"]
    assert meta["n_train_images"] == 24 and meta["train_counts"] == {"G": 8, "C": 8, "A": 8}
    assert meta["train_patients"] == 12
    history = json.loads((gen_dir / "history.json").read_text())
    assert history["step"][-1] == 6 and len(history["loss"]) == len(history["step"])
    assert all(np.isfinite(history["loss"])) and history["images_per_s"] > 0
    assert (gen_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    grid = Image.open(gen_dir / "samples.png")
    assert grid.size == (2 + 2 * 18, 2 + 3 * 18)  # 2 per class, a row per class, 2 px padding
    gen = load_generator(gen_dir)
    assert gen.unet.config.num_class_embeds == 4  # 3 classes + the null class for guidance


def test_finetune_class_subset_and_epochs(trained, tmp_path):
    meta = finetune(trained / "data", DDPMConfig(**TINY, epochs=1, train_classes=["G", "A"]), tmp_path / "gen")
    assert meta["classes"] == ["G", "A"] and meta["n_train_images"] == 16
    assert json.loads((tmp_path / "gen" / "history.json").read_text())["steps"] == 2  # 16 images / batch 8


def test_seed_determinism_independent_of_batch_size(trained):
    a = generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, batch_size=1, seed=5), trained / "b1")
    generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, batch_size=3, seed=5), trained / "b3")
    generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, batch_size=4, seed=6), trained / "s6")
    p1, p3, p6 = _pixels(trained / "b1"), _pixels(trained / "b3"), _pixels(trained / "s6")
    assert len(p1) == 9 and p1.keys() == p3.keys()
    for name in p1:
        np.testing.assert_array_equal(p1[name], p3[name])
    assert any(not np.array_equal(p1[n], p6[n]) for n in p1)  # another run seed gives other images
    assert list(a["seed"]) == [image_seed(5, c, i) for c in "GCA" for i in range(3)]


def test_ratio_counts_and_provenance(trained):
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--generator",
            str(trained / "gen"),
            "--data",
            str(trained / "data"),
            "--out",
            str(trained / "ratio"),
            "--ratio",
            "0.5",
            "--classes",
            "G,A",
            "--guidance",
            "1.5",
            "--steps",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    df = load_manifest(trained / "ratio", check_files=True)
    assert df["label"].value_counts().to_dict() == {"G": 4, "A": 4}  # 0.5 x 8 real TRAIN images
    assert set(df["origin"]) == {"synthetic"} and set(df["split"]) == {"train"} and set(df["eye"]) == {"unknown"}
    assert sorted(df["patient_id"]) == sorted(f"syn-{c}-{i}" for c in "GA" for i in range(4))
    assert set(df["generator"]) == {"ddpm"} and set(df["steps"]) == {3} and set(df["guidance"]) == {1.5}
    assert df["prompt"].isna().all() and df["parent"].isna().all() and df["strength"].isna().all()
    assert Path(df["path"].iloc[0]).name == "G_00000.png"
    assert Image.open(df["path"].iloc[0]).size == (16, 16)


def test_resume_skips_finished_and_cleans_temp_files(trained):
    out = trained / "resume"
    generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, batch_size=2), out)
    before = _pixels(out)
    (out / "G" / "G_00001.png").unlink()
    (out / "A" / "A_00002.png").unlink()
    (out / "C" / ".C_00000.png.x1y2.tmp.png").write_bytes(b"half a png")
    kept = out / "C" / "C_00001.png"
    mtime = kept.stat().st_mtime_ns
    df = generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, batch_size=2), out)
    assert len(df) == 9 and df["path"].is_unique
    assert kept.stat().st_mtime_ns == mtime  # finished image not redone
    assert not list(out.glob("*/.*tmp*"))
    after = _pixels(out)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    with pytest.raises(RetinaugError, match="different seed"):
        generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, seed=1), out)
    sampled = json.loads((out / "generate.json").read_text())
    assert sampled["written_this_run"] == 2 and sampled["images_per_s"] > 0
    moved = trained / "gen-moved"  # the same training run elsewhere (a moved run folder): its images are reused
    shutil.copytree(trained / "gen", moved)
    assert (
        len(generate(moved, trained / "data", GenerateConfig(per_class=3), out)) == 9
        and kept.stat().st_mtime_ns == mtime
    )
    record = json.loads((out / "generate.json").read_text())  # nothing sampled: the last sampling speed is kept
    assert record["written_this_run"] == 0 and (record["seconds"], record["images_per_s"]) == (
        sampled["seconds"],
        sampled["images_per_s"],
    )
    history = json.loads((moved / "history.json").read_text())
    (moved / "history.json").write_text(json.dumps({**history, "seconds": history["seconds"] + 1}))  # a retrain
    with pytest.raises(RetinaugError, match="different generator training run"):
        generate(moved, trained / "data", GenerateConfig(per_class=3), out)
    with pytest.raises(RetinaugError, match="exactly one of"):
        generate(trained / "gen", trained / "data", GenerateConfig(), out)


def test_sigkill_mid_run_then_resume(trained):
    """Killed right after its 3rd image (RETINAUG_FAULT), mid-batch; the in-process re-run writes the other 33."""
    out = trained / "killed"
    kill9_at(
        [
            "generate",
            "--generator",
            str(trained / "gen"),
            "--data",
            str(trained / "data"),
            "--out",
            str(out),
            "--per-class",
            "12",
            "--batch-size",
            "2",
            "--steps",
            "4",
        ],
        "kill@image:3",
    )
    assert len(_pngs(out)) == 3
    for p in _pngs(out):  # every finished file is a complete PNG
        Image.open(p).load()
    generate(trained / "gen", trained / "data", GenerateConfig(per_class=12, steps=4), out)  # resume in-process
    df = load_manifest(out, check_files=True)
    assert len(df) == 36 and df["path"].is_unique
    assert len(_pngs(out)) == 36 and not list(out.rglob(".*tmp*"))


def test_two_processes_split_the_work_and_match_one_process(trained):
    """Under torchrun (2 CPU processes) each process samples half of the plan; the pixels equal one process's."""
    generate(trained / "gen", trained / "data", GenerateConfig(per_class=3, seed=9), trained / "one")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "retinaug.cli",
        "generate",
        "--generator",
        str(trained / "gen"),
        "--data",
        str(trained / "data"),
        "--out",
        str(trained / "two"),
        "--per-class",
        "3",
        "--seed",
        "9",
    ]
    env = {**os.environ, "RETINAUG_QUIET": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    log = res.stdout + res.stderr
    assert "process 1/2: 5 of 9 images" in log and "process 2/2: 4 of 9 images" in log
    one, two = _pixels(trained / "one"), _pixels(trained / "two")
    assert len(two) == 9 and one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])
    assert len(load_manifest(trained / "two")) == 9


def _unet_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_finetune_killed_mid_training_resumes_from_checkpoint_to_identical_weights(trained, tmp_path):
    cfg = {**TINY, "steps": 12, "attention_levels": []}
    ref = finetune(trained / "data", DDPMConfig(**cfg), tmp_path / "ref", checkpoint_every=5)
    assert not (tmp_path / "ref" / "train_state.pt").exists()  # deleted when training finished
    out = tmp_path / "killed"
    args = [
        "finetune",
        "--data",
        str(trained / "data"),
        "--out",
        str(out),
        "--method",
        "ddpm",
        "--checkpoint-every",
        "5",
    ]
    kill9_at(
        args + [a for k, v in cfg.items() for a in ("--set", f"{k}={json.dumps(v)}")], "kill@step:7"
    )  # checkpoint: step 5
    assert (out / "train_state.pt").exists() and not (out / "config.json").exists()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "train_state.pt").write_bytes((out / "train_state.pt").read_bytes())

    finetune(
        trained / "data", DDPMConfig(**{**cfg, "samples_per_class": 1}), out, checkpoint_every=5
    )  # the grid may change
    hist = json.loads((out / "history.json").read_text())
    assert hist["resumed_from_step"] == 5 and not (out / "train_state.pt").exists()
    ref_hist = json.loads((tmp_path / "ref" / "history.json").read_text())
    assert hist["loss"] == ref_hist["loss"]
    a, b = _unet_weights(tmp_path / "ref"), _unet_weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert ref["train_counts"] == json.loads((out / "config.json").read_text())["train_counts"]

    finetune(trained / "data", DDPMConfig(**cfg, lr=0.01), stale, checkpoint_every=5)  # training changed: start over
    assert json.loads((stale / "history.json").read_text())["resumed_from_step"] == 0


def test_sampling_processes_that_fail_report_their_error(trained, tmp_path):
    """A worker's RetinaugError reaches the launching process as one RetinaugError quoting it (no traceback).

    Both workers fail; torchrun stops the other at the first failure, so which one is quoted is a race."""
    from retinaug.generate.launch import generate_in_processes

    with pytest.raises(
        RetinaugError,
        match=r"(?s)sampling in 2 processes failed.*\[process [12]\] error: .*nowhere is not a generator folder",
    ):
        generate_in_processes(tmp_path / "nowhere", trained / "data", GenerateConfig(per_class=1), tmp_path / "out", 2)
    assert not (tmp_path / "out" / ".launch.json").exists()
