"""What a generator learns from (train_classes, the eye side) and what it samples: only the asked classes,
txt2img or img2img from balanced real TRAIN parents with a fixed or per-image strength; sampling options."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import make_dataset
from PIL import Image
from pipeline_helpers import cli, cli_env
from tiny_sd import single_thread  # noqa: F401  (fixture)
from typer.testing import CliRunner

from retinaug.cache import load_image
from retinaug.cli import app
from retinaug.errors import RetinaugError, validated
from retinaug.generate import DDPMConfig, GenerateConfig, finetune, generate, load_generator
from retinaug.generate.base import TrainSet, diffusion_loss
from retinaug.generate.conditioning import Conditions
from retinaug.generate.run import assign_parents, draw_strength
from retinaug.manifest import load_manifest

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "size": 16,
    "steps": 4,
    "batch_size": 8,
    "block_out_channels": [16, 32],
    "attention_levels": [],
    "norm_num_groups": 8,
    "warmup_steps": 1,
    "samples_per_class": 1,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """4 classes (8 TRAIN images each), a generator that learned all of them and one that also knows the eye side."""
    root = tmp_path_factory.mktemp("cond")
    make_dataset(root / "data", classes=("N", "G", "C", "A"))
    finetune(root / "data", DDPMConfig(**TINY), root / "gen")
    finetune(root / "data", DDPMConfig(**TINY, condition_eye=True), root / "eye")
    return root


def _pixels(df) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in df["path"]]


def test_learns_every_class_samples_only_the_asked_ones(world):
    meta = json.loads((world / "gen" / "config.json").read_text())
    assert meta["classes"] == ["N", "G", "C", "A"] and meta["n_train_images"] == 32  # default train_classes: all
    gen = load_generator(world / "gen")
    assert gen.unet.config.num_class_embeds == 5  # 4 classes + null
    df = generate(world / "gen", world / "data", GenerateConfig(per_class=2, classes="G,A", steps=3), world / "syn-GA")
    assert sorted(df["label"]) == ["A", "A", "G", "G"]
    # the pixels are the asked class's: the same seed asked as another class gives another image
    pipe = gen.pipeline()
    g = df[df["label"] == "G"].iloc[0]
    as_g, as_n = pipe(["G"], [int(g["seed"])], steps=3), pipe(["N"], [int(g["seed"])], steps=3)
    np.testing.assert_array_equal(as_g[0], np.asarray(Image.open(g["path"])))
    assert not np.array_equal(as_g, as_n)
    with pytest.raises(RetinaugError, match="not trained on class"):
        generate(world / "gen", world / "data", GenerateConfig(per_class=1, classes="H"), world / "syn-H")


def test_train_classes_subset_and_synthetic_outside_a_pipeline(world, tmp_path):
    with pytest.raises(RetinaugError, match="train_classes: synthetic means the classes a pipeline run generates"):
        finetune(world / "data", DDPMConfig(**TINY, train_classes="synthetic"), tmp_path / "g")
    with pytest.raises(RetinaugError, match="no TRAIN images of class"):
        finetune(world / "data", DDPMConfig(**TINY, train_classes=["G", "H"]), tmp_path / "g")
    with pytest.raises(RetinaugError, match="`classes` is now `train_classes`"):
        finetune(world / "data", validated(DDPMConfig, {**TINY, "classes": ["G"]}, "ddpm config"), tmp_path / "g")
    with pytest.raises(RetinaugError, match="sample_steps -> steps"):
        finetune(world / "data", validated(DDPMConfig, {**TINY, "sample_steps": 3}, "ddpm config"), tmp_path / "g")


def test_img2img_strength_zero_or_below_one_step_returns_the_parent(world):
    for strength, steps in ((0.0, 4), (0.2, 4)):  # int(4 x 0.2) = 0 steps to run
        df = generate(
            world / "gen",
            world / "data",
            GenerateConfig(per_class=3, steps=steps, mode="img2img", strength=strength),
            world / f"i2i-{strength}",
        )
        assert df["parent"].notna().all() and set(df["strength"]) == {strength}
        for img, parent in zip(_pixels(df), df["parent"]):
            np.testing.assert_array_equal(img, load_image(parent, 16))


def test_img2img_more_strength_more_change_and_deterministic(world):
    change = []
    for strength in (0.25, 0.5, 1.0):
        df = generate(
            world / "gen",
            world / "data",
            GenerateConfig(per_class=6, steps=8, mode="img2img", strength=strength),
            world / f"more-{strength}",
        )
        diffs = [np.abs(img.astype(float) - load_image(p, 16)).mean() for img, p in zip(_pixels(df), df["parent"])]
        change.append(np.mean(diffs))
    assert 0 < change[0] < change[1] < change[2], change
    again = generate(
        world / "gen",
        world / "data",
        GenerateConfig(per_class=6, steps=8, mode="img2img", strength=0.5, batch_size=5),
        world / "more-again",
    )
    first = load_manifest(world / "more-0.5")
    assert list(again["parent"]) == list(first["parent"])
    for a, b in zip(_pixels(again), _pixels(first)):
        np.testing.assert_array_equal(a, b)


def test_img2img_strength_range_drawn_per_image_and_batch_independent(world):
    one = generate(
        world / "gen",
        world / "data",
        GenerateConfig(per_class=5, steps=6, mode="img2img", strength=[0.2, 0.9], batch_size=1),
        world / "range-1",
    )
    many = generate(
        world / "gen",
        world / "data",
        GenerateConfig(per_class=5, steps=6, mode="img2img", strength=[0.2, 0.9], batch_size=20),
        world / "range-20",
    )
    assert one["strength"].between(0.2, 0.9).all() and one["strength"].nunique() == len(one)
    assert list(one["strength"]) == [draw_strength([0.2, 0.9], int(s)) for s in one["seed"]]
    assert list(one["strength"]) == list(many["strength"])
    for a, b in zip(_pixels(one), _pixels(many)):  # images of different depths share a batch without changing:
        diff = np.abs(a.astype(int) - b)  # fp32 kernels round differently per batch size: a rare one-level flip
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_parents_are_balanced_seeded_train_images_of_the_class(world):
    df = generate(
        world / "gen",
        world / "data",
        GenerateConfig(per_class=20, classes="G,C", steps=2, mode="img2img", strength=0.0),
        world / "balanced",
    )
    real = load_manifest(world / "data")
    for code in "GC":
        train = set(real[(real["label"] == code) & (real["split"] == "train")]["path"])
        used = Counter(df.loc[df["label"] == code, "parent"])
        assert set(used) == train and sorted(set(used.values())) == [2, 3]  # 20 images over 8 parents
    paths = [f"p{i}" for i in range(4)]
    assert Counter(assign_parents(paths, 10, 0, "G")).most_common()[-1][1] == 2
    assert (
        assign_parents(paths, 5, 0, "G") == assign_parents(paths, 10, 0, "G")[:5]
    )  # more images keep the first ones' parents
    assert assign_parents(paths, 8, 0, "G") != assign_parents(paths, 8, 1, "G")


def test_eye_condition_flips_swap_the_side_and_samples_record_it(world):
    conditions = Conditions(("G", "C"), eyes=True)
    assert conditions.index(["G", "G", "C"], ["left", "right", "right"]) == [0, 1, 3] and conditions.null == 4
    assert conditions.flipped(torch.tensor([0, 1, 3])).tolist() == [1, 0, 2]
    real = load_manifest(world / "data")
    train = real[(real["split"] == "train") & real["label"].isin(["G", "C"])]
    data = TrainSet(train, 16, conditions)
    idx, flip = torch.tensor([0, 1]), torch.tensor([False, True])
    assert data.condition(idx, flip, "cpu").tolist() == [
        conditions.index([train["label"].iloc[0]], [train["eye"].iloc[0]])[0],
        conditions.index([train["label"].iloc[1]], [train["eye"].iloc[1]])[0] ^ 1,
    ]
    assert torch.equal(data.pixels(idx, flip, "cpu")[1], data.pixels(idx, ~flip, "cpu")[1].flip(-1))
    unknown = train.assign(eye="unknown")
    with pytest.raises(RetinaugError, match="condition_eye needs the eye side"):
        TrainSet(unknown, 16, conditions)

    gen = load_generator(world / "eye")
    assert gen.unet.config.num_class_embeds == 4 * 2 + 1
    txt = generate(world / "eye", world / "data", GenerateConfig(per_class=4, steps=3), world / "eye-txt")
    assert list(txt["eye"]) == ["left", "right"] * 8  # alternating sides
    left, right = gen.pipeline()(["G", "G"], [5, 5], eyes=["left", "right"], steps=3)
    assert not np.array_equal(left, right)
    img = generate(
        world / "eye",
        world / "data",
        GenerateConfig(per_class=4, steps=3, mode="img2img", strength=0.5),
        world / "eye-img",
    )
    eye_of = dict(zip(real["path"], real["eye"]))
    assert list(img["eye"]) == [eye_of[p] for p in img["parent"]]  # the parent's side


def test_sampling_options_and_their_errors(world):
    karras = generate(
        world / "gen", world / "data", GenerateConfig(per_class=1, steps=4, karras=True), world / "karras"
    )
    plain = generate(world / "gen", world / "data", GenerateConfig(per_class=1, steps=4), world / "plain")
    assert not all(np.array_equal(a, b) for a, b in zip(_pixels(karras), _pixels(plain)))
    record = json.loads((world / "karras" / "generate.json").read_text())["sampling"]
    assert (
        record["karras"] is True and record["steps"] == 4 and record["guidance"] == 3.0 and record["mode"] == "txt2img"
    )
    assert record["precision"] == "no"  # the default: fp32
    bf16 = generate(
        world / "gen", world / "data", GenerateConfig(per_class=1, steps=4, precision="bf16"), world / "bf16"
    )
    assert json.loads((world / "bf16" / "generate.json").read_text())["sampling"]["precision"] == "bf16"
    assert not all(np.array_equal(a, b) for a, b in zip(_pixels(bf16), _pixels(plain)))  # autocast ran
    with pytest.raises(RetinaugError, match="negative_prompt do not apply to the ddpm generator"):
        generate(world / "gen", world / "data", GenerateConfig(per_class=1, negative_prompt="blurry"), world / "x")
    with pytest.raises(RetinaugError, match="karras sigmas need scheduler dpm or euler"):
        options = {"per_class": 1, "scheduler": "ddim", "karras": True}
        generate(world / "gen", world / "data", validated(GenerateConfig, options, "generate options"), world / "x")
    with pytest.raises(RetinaugError, match="strength range is"):
        options = {"per_class": 1, "mode": "img2img", "strength": [0.8, 0.2]}
        generate(world / "gen", world / "data", validated(GenerateConfig, options, "generate options"), world / "x")
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--generator",
            str(world / "gen"),
            "--data",
            str(world / "data"),
            "--out",
            str(world / "cli"),
            "--per-class",
            "2",
            "--classes",
            "C",
            "--mode",
            "img2img",
            "--strength",
            "0.3,0.6",
            "--steps",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_manifest(world / "cli")["strength"].between(0.3, 0.6).all()
    bad = CliRunner().invoke(
        app,
        [
            "generate",
            "--generator",
            str(world / "gen"),
            "--data",
            str(world / "data"),
            "--out",
            str(world / "cli2"),
            "--per-class",
            "2",
            "--strength",
            "1.5",
            "--mode",
            "img2img",
        ],
    )
    assert bad.exit_code == 1 and "strength must lie in [0, 1]" in _flat(bad.output) and "Traceback" not in bad.output


def test_min_snr_weighting_matches_the_paper_for_each_prediction_type():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    torch.manual_seed(0)
    t = torch.tensor([5, 300, 900])
    x, noise, pred = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    for kind, denominator in (
        ("epsilon", lambda s: s),
        ("v_prediction", lambda s: s + 1),
        ("sample", lambda s: torch.ones_like(s)),
    ):
        schedule = DDPMScheduler(prediction_type=kind)
        snr = compute_snr(schedule, t)
        target = {"epsilon": noise, "v_prediction": schedule.get_velocity(x, noise, t), "sample": x}[kind]
        per_image = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        expected = (per_image * torch.clamp(snr, max=5.0) / denominator(snr)).mean()
        assert torch.allclose(diffusion_loss(pred, x, noise, t, schedule, 5.0), expected)
        assert torch.allclose(diffusion_loss(pred, x, noise, t, schedule, None), per_image.mean())
    assert snr[0] > 5 > snr[2]  # the weighting does bind at low noise


def test_corrupt_or_crafted_checkpoint_is_a_clear_error_and_runs_no_code(world, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / "train_state.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(RetinaugError, match="cannot read the training checkpoint"):
        finetune(world / "data", DDPMConfig(**TINY), out, checkpoint_every=2)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"key": Payload()}, out / "train_state.pt")
    with pytest.raises(RetinaugError, match="cannot read the training checkpoint") as err:
        finetune(world / "data", DDPMConfig(**TINY), out, checkpoint_every=2)
    assert not marker.exists() and "delete it" in str(err.value)
    torch.save({"key": "x"}, out / "train_state.pt")  # a readable file that is no retinaug checkpoint
    with pytest.raises(RetinaugError, match="is not a retinaug training checkpoint"):
        finetune(world / "data", DDPMConfig(**TINY), out, checkpoint_every=2)
    options = ["--data", str(world / "data"), "--checkpoint-every", "2"] + [
        a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")
    ]
    result = CliRunner().invoke(
        app, ["finetune", "--out", str(out), *options]
    )  # a folder retinaug did not write: refused unread
    assert result.exit_code == 1 and "retinaug did not write (train_state.pt)" in _flat(result.output)
    # a checkpoint of retinaug's own (finetune killed right after its first one) replaced by a file that is not one
    mine = tmp_path / "mine"
    killed = subprocess.run(
        cli("finetune", "--out", str(mine), *options), env={**cli_env(), "RETINAUG_FAULT": "kill@step:2"}
    )
    assert killed.returncode == -9 and (mine / "train_state.pt").is_file()
    torch.save({"key": "x"}, mine / "train_state.pt")
    result = CliRunner().invoke(app, ["finetune", "--out", str(mine), *options])
    assert (
        result.exit_code == 1
        and "Traceback" not in result.output
        and "not a retinaug training checkpoint" in _flat(result.output)
    )


def _flat(text: str) -> str:
    """CLI output with rich's panel borders and line wrapping undone."""
    return " ".join(text.replace("│", " ").split())
