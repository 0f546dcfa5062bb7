"""Recipe options of the classifier (issue 14): starting weights (init, pretrained via the Hugging Face cache),
mixup/cutmix, EMA of the weights, test-time augmentation and augmentation strength, on tiny local data."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from conftest import make_dataset, write_hub_snapshot
from safetensors.torch import load_file, save_file
from torchvision.transforms import v2
from typer.testing import CliRunner

from retinaug.classify import EvaluateConfig, TrainConfig, evaluate, fit, load_classifier, predict, train, warm_start
from retinaug.classify.data import Augment
from retinaug.classify.models import create_model, head_keys
from retinaug.classify.train import _mixer
from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.io import sha256_file
from retinaug.manifest import load_manifest

TINY = dict(backbone="resnet10t", size=32, epochs=1, batch_size=8, task="G,C,A", patience=1, mixed_precision="no")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe") / "data"
    make_dataset(root, classes=("N", "G", "C", "A"), patients_per_class=6)
    return root


@pytest.fixture(scope="module")
def model_dir(data: Path) -> Path:
    out = data.parent / "plain"
    train(data, TrainConfig(**TINY), out)
    return out


def _splits(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = load_manifest(data)
    return df[df["split"] == "train"], df[df["split"] == "val"]


# ---------------------------------------------------------------- test-time augmentation


def test_tta_is_the_mean_of_the_image_and_its_mirror(model_dir: Path, data: Path, tmp_path: Path):
    clf = load_classifier(model_dir)
    df = load_manifest(data)
    df = df[df["label"] != "N"]
    plain = predict(clf, df, tta=False)
    mirrored = predict(clf, df.assign(transform="hflip"), tta=False)  # the image cache flips left-right
    both = predict(clf, df, tta=True)
    assert np.allclose(both, (plain + mirrored) / 2, atol=1e-6) and not np.allclose(both, plain, atol=1e-4)
    assert np.array_equal(predict(clf, df), plain)  # trained with tta: false -> no TTA unless asked
    clf.meta["config"]["tta"] = True  # a model trained with tta: true predicts with it by default
    assert np.array_equal(predict(clf, df), both)
    m = evaluate(clf, df, EvaluateConfig(split="all", n_boot=0), tmp_path / "eval")
    assert m["tta"] is True
    probs = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")[["prob_G", "prob_C", "prob_A"]].to_numpy()
    assert np.allclose(probs, both, atol=1e-6)


# ---------------------------------------------------------------- augmentation strength


def _smooth_image(size: int = 64) -> torch.Tensor:
    """A (1, 3, size, size) float image without pixel-level noise, so two bilinear resamplings can be compared."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"), 7, 1)


def _params(n: int = 1, **given) -> dict[str, torch.Tensor]:
    """Augment parameters that change nothing, but for `given`."""
    params = {
        "flip": torch.zeros(n, dtype=torch.bool),
        "angle": torch.zeros(n, dtype=torch.float64),
        "zoom": torch.ones(n, dtype=torch.float64),
        "shift": torch.zeros(n, 2, dtype=torch.float64),
        **{k: torch.ones(n, dtype=torch.float64) for k in ("brightness", "contrast", "saturation")},
    }
    return params | {k: torch.as_tensor(v) for k, v in given.items()}


def test_augment_geometry_is_torchvisions_rotation_crop_and_flip():
    x = _smooth_image()
    augment = Augment(TrainConfig(size=64, rotation=30, color_jitter=0, crop_scale=0.2), seed=0)
    centre = (..., slice(16, 48), slice(16, 48))  # the corners rotate in from outside the image: black in both
    rotated = augment.apply(x, _params(angle=[25.0]))
    expected = v2.functional.rotate(x, 25.0, interpolation=v2.InterpolationMode.BILINEAR)
    assert (rotated - expected)[centre].abs().max() < 0.01
    assert (rotated - v2.functional.rotate(x, -25.0, interpolation=v2.InterpolationMode.BILINEAR))[
        centre
    ].abs().max() > 10
    # a crop of half the side centred at (+0.25, -0.25) in [-1, 1] coordinates: rows 8-39, columns 24-55, resized back
    cropped = augment.apply(x, _params(zoom=[0.5], shift=[[0.25, -0.25]]))
    expected = v2.functional.resized_crop(
        x, 8, 24, 32, 32, [64, 64], interpolation=v2.InterpolationMode.BILINEAR, antialias=False
    )
    assert (cropped - expected)[..., 4:60, 4:60].abs().max() < 0.01
    assert torch.allclose(augment.apply(x, _params(flip=[True])), x.flip(3), atol=1e-3)


def test_augment_jitter_is_torchvisions_arithmetic_per_image():
    x = _smooth_image(16).repeat(2, 1, 1, 1)
    augment = Augment(TrainConfig(size=16, rotation=0, color_jitter=0.5), seed=0)
    out = augment.apply(x, _params(2, brightness=[1.3, 1.0], contrast=[1.0, 0.6], saturation=[1.0, 1.2]))
    expected = [
        v2.functional.adjust_brightness(x[0] / 255, 1.3) * 255,
        v2.functional.adjust_saturation(v2.functional.adjust_contrast(x[1] / 255, 0.6), 1.2) * 255,
    ]
    assert torch.allclose(out[0], expected[0], atol=0.05) and torch.allclose(out[1], expected[1], atol=0.05)
    assert float(out.min()) >= 0 and float(out.max()) <= 255


def test_augment_draws_per_image_from_its_seed_within_the_configured_ranges():
    config = TrainConfig(size=32)  # defaults: rotation 10, colour jitter 0.2, no crop
    x = (
        torch.arange(3 * 32 * 32, dtype=torch.int64)
        .reshape(1, 3, 32, 32)
        .remainder(251)
        .to(torch.uint8)
        .repeat(64, 1, 1, 1)
    )
    params = Augment(config, seed=3).draw(64)
    assert params["angle"].abs().max() <= 10 and params["angle"].std() > 3
    assert torch.equal(params["zoom"], torch.ones(64, dtype=torch.float64))
    assert torch.all((params["brightness"] - 1).abs() <= 0.2) and torch.all((params["saturation"] - 1).abs() <= 0.1)
    assert 10 < int(params["flip"].sum()) < 54
    out = Augment(config, seed=3)(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert len({round(float(v.mean()), 3) for v in out}) == 64  # every image its own draw
    assert torch.equal(Augment(config, seed=3)(x), out) and not torch.equal(Augment(config, seed=4)(x), out)
    flips_only = Augment(TrainConfig(size=32, rotation=0, color_jitter=0), seed=0)
    views = flips_only(x)
    mirrored = torch.tensor([torch.equal(v, x[0].float().flip(2)) for v in views])
    assert all(torch.equal(v, x[0].float()) or m for v, m in zip(views, mirrored)) and 0 < int(mirrored.sum()) < 64
    zoomed = Augment(TrainConfig(size=32, rotation=0, color_jitter=0, crop_scale=0.3), seed=0).draw(200)["zoom"] ** 2
    assert (
        float(zoomed.min()) >= 0.3 and float(zoomed.min()) < 0.35 and float(zoomed.max()) > 0.95
    )  # crop area fraction


# ---------------------------------------------------------------- mixup / cutmix


def test_mixup_mixes_pairs_and_folds_label_smoothing_into_the_targets():
    assert _mixer(TrainConfig(), 3) is None
    mixer = _mixer(TrainConfig(mixup=0.4, label_smoothing=0.1), 3)
    x = torch.rand(8, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    np.random.seed(0)
    mixed, target = mixer(x.clone(), y)
    other = x.flip(0)
    lam = float(
        ((mixed - other) * (x - other)).sum() / ((x - other) ** 2).sum()
    )  # least squares: mixed = lam x + (1-lam) other
    assert 0 < lam < 1 and torch.allclose(mixed, lam * x + (1 - lam) * other, atol=1e-5)
    smooth = lambda t: torch.nn.functional.one_hot(t, 3).float() * 0.9 + 0.1 / 3  # noqa: E731
    assert torch.allclose(target, lam * smooth(y) + (1 - lam) * smooth(y.flip(0)), atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be even"):
        TrainConfig(cutmix=1.0, batch_size=7)


def _loss_targets(config: TrainConfig, data: Path, out: Path, monkeypatch) -> list[torch.Tensor]:
    """The targets the training loop hands its loss, batch by batch (the training loss, watched, not replaced)."""
    train_module = importlib.import_module(
        "retinaug.classify.train"
    )  # the module (the package exports a train function)
    seen, loss = [], train_module._loss

    def watched(logits, target, *args):
        seen.append(target.detach().clone())
        return loss(logits, target, *args)

    with monkeypatch.context() as m:
        m.setattr(train_module, "_loss", watched)
        fit(*_splits(data), config, out)
    return seen


def test_fit_with_mixup_and_cutmix_trains_on_mixed_soft_targets(data: Path, tmp_path: Path, monkeypatch):
    plain = _loss_targets(TrainConfig(**TINY), data, tmp_path / "plain", monkeypatch)
    assert plain and all(t.dtype == torch.long for t in plain)
    mixed = _loss_targets(TrainConfig(**{**TINY, "mixup": 0.4, "cutmix": 1.0}), data, tmp_path / "mix", monkeypatch)
    assert len(mixed) == len(plain)  # one per batch, as many batches
    for t in mixed:
        assert t.shape == (8, 3) and torch.allclose(t.sum(1), torch.ones(8))
        assert t.min() >= 0.1 / 3 - 1e-6  # label smoothing 0.1 is folded in: no class gets less than 0.1/3
    # not just smoothed one-hot rows: pairs of images were mixed with a weight strictly between 0 and 1
    assert any(not torch.isclose(t.max(1).values, torch.tensor(0.9 + 0.1 / 3)).all() for t in mixed)


# ---------------------------------------------------------------- EMA of the weights


def test_ema_weights_are_the_ones_validated_and_saved(data: Path, model_dir: Path, tmp_path: Path):
    tr, va = _splits(data)
    meta = fit(tr, va, TrainConfig(**{**TINY, "ema_decay": 0.99}), tmp_path / "ema")
    plain = json.loads((model_dir / "model.json").read_text())
    # the raw weights train exactly as without EMA ...
    assert meta["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"], rel=1e-6)
    raw, ema = load_file(str(model_dir / "model.safetensors")), load_file(str(tmp_path / "ema" / "model.safetensors"))
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    # ... and the saved EMA weights are the ones whose validation loss was recorded
    va = va[va["label"].isin(["G", "C", "A"])]
    y = va["label"].map({"G": 0, "C": 1, "A": 2}).to_numpy()

    def val_loss(folder: Path) -> float:
        probs = predict(load_classifier(folder), va)
        return float(-np.log(probs[np.arange(len(y)), y]).mean())

    assert val_loss(tmp_path / "ema") == pytest.approx(meta["history"][0]["val_loss"], abs=1e-5)
    assert val_loss(model_dir) == pytest.approx(plain["history"][0]["val_loss"], abs=1e-5)
    assert abs(meta["history"][0]["val_loss"] - plain["history"][0]["val_loss"]) > 1e-4


# ---------------------------------------------------------------- init: PATH / all-classes


def test_init_path_loads_everything_but_the_head(model_dir: Path):
    trained = load_file(str(model_dir / "model.safetensors"))
    torch.manual_seed(0)
    fresh = create_model(TrainConfig(**TINY), 3).state_dict()
    for init in (model_dir, model_dir / "model.safetensors"):  # a classifier folder or its weights file
        torch.manual_seed(0)
        model = create_model(TrainConfig(**{**TINY, "init": init}), 3)
        head = head_keys(model)
        assert head == {"fc.weight", "fc.bias"}
        for k, v in model.state_dict().items():
            if k in head:  # same shape as the trained head, yet re-initialised
                assert torch.equal(v, fresh[k]) and not torch.equal(v, trained[k])
            else:
                assert torch.equal(v, trained[k]), k
    with pytest.raises(RetinaugError, match="not found"):
        create_model(TrainConfig(**{**TINY, "init": model_dir / "missing.safetensors"}), 3)
    with pytest.raises(RetinaugError, match="warm_start"):
        create_model(TrainConfig(**{**TINY, "init": "all-classes"}), 3)


def test_warm_start_trains_on_every_train_class_once(data: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="retinaug")
    df = load_manifest(data)
    cfg = TrainConfig(**{**TINY, "init": "all-classes"})
    weights = warm_start(cfg, df, tmp_path / "cache")
    meta = json.loads((weights.parent / "model.json").read_text())
    assert meta["classes"] == ["N", "G", "C", "A"] and meta["config"]["init"] == "scratch"
    assert meta["n_train"] == int((df["split"] == "train").sum()) and meta["n_val"] == int((df["split"] == "val").sum())
    stamp = weights.stat().st_mtime_ns
    assert (
        warm_start(cfg.model_copy(update={"task": "G,C", "seed": 0}), df, tmp_path / "cache") == weights
    )  # task aside
    assert weights.stat().st_mtime_ns == stamp
    assert caplog.text.count("init: training the all-classes model") == 1
    other = warm_start(cfg.model_copy(update={"lr": 1e-3}), df, tmp_path / "cache")  # another recipe: another model
    assert other != weights and len(list((tmp_path / "cache").iterdir())) == 2
    assert warm_start(TrainConfig(**TINY), df, tmp_path / "cache") is None
    # `train` (CLI, labeler) fine-tunes from it: cached in OUT/init by default
    fine = train(data, cfg.model_copy(update={"task": "G,C"}), tmp_path / "labeler")
    cached = list((tmp_path / "labeler" / "init").glob("all-classes-*/model.safetensors"))
    assert len(cached) == 1 and fine["config"]["init"] == str(cached[0]) and fine["classes"] == ["G", "C"]


def test_experiments_share_one_all_classes_model_across_scenarios_and_seeds(tmp_path: Path, caplog):
    from retinaug.config import load_config
    from retinaug.experiments import ExperimentConfig, run_experiments
    from retinaug.manifest import load_manifest

    caplog.set_level(logging.INFO, logger="retinaug")
    run = tmp_path / "run"
    make_dataset(run / "data", classes=("N", "G", "C", "A"), patients_per_class=4, size=16)
    train_cfg = {
        "backbone": "resnet10t",
        "size": 16,
        "epochs": 1,
        "batch_size": 8,
        "augment": False,
        "init": "all-classes",
    }

    def experiments(scenarios: list[dict]) -> None:
        path = tmp_path / "cfg.yaml"
        path.write_text(
            yaml.safe_dump(
                {"experiments": {"sets": [], "seeds": 2, "n_boot": 0, "scenarios": scenarios, "train": train_cfg}}
            )
        )
        cfg = ExperimentConfig(**load_config(path).experiments.model_dump(exclude={"enabled"}))
        run_experiments(load_manifest(run / "data"), cfg, run / "experiments")

    experiments([{"name": "gca", "task": "G,C,A"}, {"name": "gc", "task": "G,C"}])
    cached = list((run / "experiments" / "_init").glob("*/model.safetensors"))
    assert len(cached) == 1
    warm, stamp = cached[0], cached[0].stat().st_mtime_ns
    assert json.loads((warm.parent / "model.json").read_text())["classes"] == ["N", "G", "C", "A"]
    experiments([{"name": "gca", "task": "G,C,A"}, {"name": "gc", "task": "G,C"}, {"name": "ca", "task": "C,A"}])
    out = caplog.text
    assert out.count("init: training the all-classes model") == 1  # one warm fit for both runs
    assert (
        out.count("init: loaded") == 6 and out.count(str(warm)) >= 6
    )  # every fit started from it: 3 scenarios x 2 seeds
    assert (
        list((run / "experiments" / "_init").glob("*/model.safetensors")) == [warm] and warm.stat().st_mtime_ns == stamp
    )
    for name in ("gca", "gc", "ca"):
        for seed in (0, 1):
            folder = run / "experiments" / name / f"seed{seed}"
            assert json.loads((folder / "model.json").read_text())["config"]["init"] == str(warm)
            recipe = json.loads((folder / "recipe.json").read_text())
            assert recipe["train"]["init"] == "all-classes" and recipe["init_sha256"] == sha256_file(warm)


# ---------------------------------------------------------------- pretrained: timm tags, hub ids, offline


def _hub_cache(root: Path, repo: str, model: torch.nn.Module) -> Path:
    """A Hugging Face hub cache holding REPO's model.safetensors + config.json."""
    root.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "weights.tmp"))
    write_hub_snapshot(
        root,
        repo,
        {
            "config.json": json.dumps({"architecture": "resnet10t", "num_classes": 10}).encode(),
            "model.safetensors": (root / "weights.tmp").read_bytes(),
        },
    )
    return root


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the test suite runs offline (conftest): nothing may be downloaded
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", num_classes=10)
    cache = _hub_cache(tmp_path / "hub", "timm/resnet10t.c3_in1k", source)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # huggingface_hub reads the variable at import
    return cache, source.state_dict()


@pytest.mark.parametrize("spec", ["timm:resnet10t.c3_in1k", "timm/resnet10t.c3_in1k", "hf-hub:timm/resnet10t.c3_in1k"])
def test_pretrained_resolves_through_a_local_hub_cache(hub_cache, spec, caplog):
    caplog.set_level(logging.INFO, logger="retinaug")
    _, source = hub_cache
    model = create_model(TrainConfig(backbone="resnet10t", task="G,C,A", pretrained=spec), 3)
    assert "pretrained: loaded" in caplog.text
    state = model.state_dict()
    assert state["fc.weight"].shape == (3, 512)  # the 10-class head does not fit: left at initialisation
    assert all(torch.equal(v, source[k]) for k, v in state.items() if not k.startswith("fc."))


def test_pretrained_offline_says_how_to_pass_a_local_file(tmp_path: Path, monkeypatch, data: Path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    cfg = TrainConfig(backbone="resnet10t", task="G,C,A", pretrained="timm:resnet10t.c3_in1k")
    with pytest.raises(RetinaugError, match=r"offline.*pretrained: path/to/weights\.safetensors"):
        create_model(cfg, 3)
    with pytest.raises(RetinaugError, match="timm:resnet10t.c3_in1k"):  # an unknown tag lists the known ones
        create_model(cfg.model_copy(update={"pretrained": "timm:resnet10t.nope"}), 3)
    with pytest.raises(RetinaugError, match="set backbone: resnet18"):
        create_model(cfg.model_copy(update={"pretrained": "timm:resnet18.a1_in1k"}), 3)
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "x"),
            "--task",
            "G,C,A",
            "--backbone",
            "resnet10t",
            "--size",
            "32",
            "--pretrained",
            "timm:resnet10t.c3_in1k",
        ],
    )
    assert res.exit_code == 1 and "HF_HUB_OFFLINE" in res.output and "Traceback" not in res.output
