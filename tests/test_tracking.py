"""Optional accelerate tracker (TensorBoard): off by default; when on, the curves land in OUT/tracking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_dataset
from retinaug.classify import TrainConfig, fit
from retinaug.generate import finetune

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = sorted(folder.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {folder}"
    out: dict[str, list[tuple[int, float]]] = {}
    for ev in events:
        acc = EventAccumulator(str(ev))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_classifier_curves_in_tensorboard(tmp_path):
    df = make_dataset(tmp_path / "data", patients_per_class=4, size=16)
    cfg = dict(backbone="resnet10t", size=16, epochs=2, batch_size=8, task="G,C,A", augment=False)
    off = fit(df[df["split"] == "train"], df[df["split"] == "val"], TrainConfig(**cfg), tmp_path / "off")
    assert off["config"]["tracker"] == "none" and not (tmp_path / "off" / "tracking").exists()
    meta = fit(df[df["split"] == "train"], df[df["split"] == "val"], TrainConfig(**cfg, tracker="tensorboard"), tmp_path / "on")
    scalars = _scalars(tmp_path / "on" / "tracking")
    assert [s for s, _ in scalars["val_macro_f1"]] == [1, 2]
    assert [v for _, v in scalars["val_macro_f1"]] == pytest.approx([h["val_macro_f1"] for h in meta["history"]])


def test_generator_loss_curve_in_tensorboard(tmp_path):
    make_dataset(tmp_path / "data", patients_per_class=4, size=16)
    tiny = {"size": 16, "steps": 4, "batch_size": 8, "block_out_channels": [16, 32], "norm_num_groups": 8,
            "warmup_steps": 1, "samples_per_class": 1, "tracker": "tensorboard"}
    finetune(tmp_path / "data", "ddpm", tiny, tmp_path / "gen")
    history = json.loads((tmp_path / "gen" / "history.json").read_text())
    loss = _scalars(tmp_path / "gen" / "tracking")["loss"]
    assert [s for s, _ in loss] == history["step"] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx(history["loss"])
