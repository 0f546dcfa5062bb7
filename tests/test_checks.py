"""Up-front checks: each bad setting fails `retinaug run --dry-run` (and `run`, before any stage starts) with a
message that names it; the config as shipped passes."""

from __future__ import annotations

import pytest
import yaml
from pipeline_helpers import TINY
from typer.testing import CliRunner

from retinaug.cli import app

BAD = [
    ("generator.ddpm.block_out_channels=[16, 32, 64]", None),  # 16 px over 3 levels: fine
    (
        "labeler.train.backbone=resnet181",
        "labeler.train.backbone: unknown backbone 'resnet181': not a timm model name (similar: resnet18",
    ),
    ("experiments.train.backbone=vgg99", "experiments.train.backbone: unknown backbone 'vgg99'"),
    (
        "generator.ddpm.size=18; generator.ddpm.block_out_channels=[16, 32, 64]",
        "size 18 must be divisible by 2^(levels-1) = 4",
    ),
    ("generator.ddpm.norm_num_groups=12", "norm_num_groups=12 must divide every width [16, 32]"),
    ("data.n=40", "data: --n 40 is too small: 8 classes x 6 patients x 2 eyes need n >= 96"),
    ("augment.classes=[G, X]", "augment.classes: unknown class code(s) X"),
    ("experiments.train.task=G", "experiments.train.task: 'G' names 1 class(es), at least 2 are needed"),
    # the phantom's plan (nothing rendered) against what each stage asks of it
    (
        "data.proportions={N: 1, D: 1, G: 1, C: 1, A: 1, M: 1, O: 1}",
        "scenario real needs train images of H, and the data has none",
    ),
    ("data.val=0", "the labeler (task 8-class) needs val images of N, D, G, C, A, H, M, O, and the data has none"),
    ("generator.ddpm.train_classes=[G, C]", "synthetic.classes A, H, M are not in generator train_classes ['G', 'C']"),
    ("augment.ratio=0.5", "augment.ratio 0.5 makes fewer rows than scenario trad asks for (x1)"),
    ("augment.enabled=false", "scenario trad needs traditional augmentation rows: switch the augment stage on"),
    (
        "labeler.enabled=false",
        "scenario syn needs labelled synthetic images: switch on labeler (labeler.enabled: true)",
    ),
    (
        "selection.classes=[D]",
        "scenario sel replaces N by selected images, but selection.classes (D) does not select them",
    ),
    (
        "quality.extractor=/no/such/model",
        "quality.extractor '/no/such/model' is neither auto, labeler, pixels, imagenet[:<timm backbone>] nor a model folder",
    ),
    ("label.policy=agree", None),  # a labeler of 8 classes knows every synthetic class: fine
    # ImageNet weights are read from local sources only: a missing one is said before the generator trains
    (
        "labeler.train.recipe=imagenet",
        "labeler.train: pretrained: imagenet for backbone resnet10t: timm:resnet10t.c3_in1k is "
        "not in the Hugging Face cache",
    ),
    ("experiments.train.recipe=auto", None),  # resnet10t has no local ImageNet weights: from scratch, with a warning
]


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache that holds nothing, whatever this machine's holds."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def _text(output: str) -> str:
    """The CLI's error box as one line (rich draws borders and wraps)."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize("override,message", BAD, ids=[b[0] for b in BAD])
def test_bad_setting_fails_dry_run_first(cfg_file, tmp_path, override, message):
    out = tmp_path / "run"
    sets = [arg for item in override.split("; ") for arg in ("--set", item)]
    res = CliRunner().invoke(app, ["run", str(cfg_file), "--out", str(out), "--dry-run", *sets])
    if message is None:
        assert res.exit_code == 0, res.output
        return
    text = _text(res.output)
    assert res.exit_code == 1 and message in text and "Traceback" not in res.output, res.output
    assert not out.exists()  # the dry-run wrote nothing


def test_bad_setting_stops_run_before_any_stage(cfg_file, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "run",
            str(cfg_file),
            "--out",
            str(out),
            "--set",
            "augment.ratio=0.5",
            "--set",
            "experiments.train.backbone=vgg99",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "experiments.train.backbone: unknown backbone" in res.output  # read errors come first, one message
    res = CliRunner().invoke(
        app, ["run", str(cfg_file), "--out", str(out), "--set", "augment.ratio=0.5", "--set", "selection.classes=[D]"]
    )
    text = _text(res.output)
    assert res.exit_code == 1 and "the config cannot run (nothing was started)" in text
    assert "augment.ratio 0.5" in text and "selection.classes (D)" in text  # every problem at once
    assert not out.exists()  # checked before the run folder is made: no stage folder, no config.yaml, no lock
