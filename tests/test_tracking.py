"""Optional accelerate trackers (TensorBoard, MLflow, wandb): off by default; when on, the curves are logged."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import make_dataset

from retinaug.classify import TrainConfig, fit
from retinaug.generate import DDPMConfig, finetune

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY_DDPM = {
    "size": 16,
    "steps": 4,
    "batch_size": 8,
    "block_out_channels": [16, 32],
    "norm_num_groups": 8,
    "warmup_steps": 1,
    "samples_per_class": 1,
}


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
    meta = fit(
        df[df["split"] == "train"], df[df["split"] == "val"], TrainConfig(**cfg, tracker="tensorboard"), tmp_path / "on"
    )
    scalars = _scalars(tmp_path / "on" / "tracking")
    assert [s for s, _ in scalars["val_macro_f1"]] == [1, 2]
    assert [v for _, v in scalars["val_macro_f1"]] == pytest.approx([h["val_macro_f1"] for h in meta["history"]])


def test_generator_loss_curve_in_tensorboard(tmp_path):
    make_dataset(tmp_path / "data", patients_per_class=4, size=16)
    finetune(tmp_path / "data", DDPMConfig(**TINY_DDPM, tracker="tensorboard"), tmp_path / "gen")
    history = json.loads((tmp_path / "gen" / "history.json").read_text())
    loss = _scalars(tmp_path / "gen" / "tracking")["loss"]
    assert [s for s, _ in loss] == history["step"] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx(history["loss"])


def test_generator_and_classifier_curves_in_mlflow_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3.x keeps its file store behind this switch
    df = make_dataset(tmp_path / "data", patients_per_class=4, size=16)
    finetune(tmp_path / "data", DDPMConfig(**TINY_DDPM, tracker="mlflow", lr=0.003), tmp_path / "gen")
    cfg = dict(backbone="resnet10t", size=16, epochs=2, batch_size=8, task="G,C,A", augment=False, tracker="mlflow")
    meta = fit(df[df["split"] == "train"], df[df["split"] == "val"], TrainConfig(**cfg), tmp_path / "clf")

    client = MlflowClient(store)
    history = json.loads((tmp_path / "gen" / "history.json").read_text())
    (gen_run,) = client.search_runs([client.get_experiment_by_name("ddpm").experiment_id])
    loss = client.get_metric_history(gen_run.info.run_id, "loss")
    assert [m.step for m in loss] == history["step"] == [1, 2, 3, 4]
    assert [m.value for m in loss] == pytest.approx(history["loss"])
    assert gen_run.data.params["lr"] == "0.003" and gen_run.info.status == "FINISHED"
    (clf_run,) = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    f1 = client.get_metric_history(clf_run.info.run_id, "val_macro_f1")
    assert [m.step for m in f1] == [1, 2]
    assert [m.value for m in f1] == pytest.approx([h["val_macro_f1"] for h in meta["history"]])
    assert not (tmp_path / "gen" / "tracking").exists() or not any((tmp_path / "gen" / "tracking").iterdir())


def test_wandb_offline_run_under_out(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    make_dataset(tmp_path / "data", patients_per_class=4, size=16)
    finetune(tmp_path / "data", DDPMConfig(**TINY_DDPM, tracker="wandb"), tmp_path / "gen")
    runs = list((tmp_path / "gen" / "tracking").rglob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb")), "no offline wandb run under OUT/tracking"


def test_unknown_or_missing_tracker_is_a_clear_error(tmp_path):
    from retinaug.errors import RetinaugError
    from retinaug.tracking import TRACKERS, tracker_args

    with pytest.raises(ValueError, match="tracker"):
        DDPMConfig(tracker="neptune")
    missing = next((t for t in TRACKERS if t != "tensorboard" and importlib.util.find_spec(t) is None), None)
    if missing is None:
        pytest.skip("every tracker package is installed")
    with pytest.raises(RetinaugError, match=f"tracker '{missing}' needs the {missing} package: pip install"):
        tracker_args(missing, tmp_path)
    assert tracker_args("none", tmp_path) == {} and tracker_args("tensorboard", None) == {}
