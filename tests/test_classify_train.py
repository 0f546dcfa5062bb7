"""fit/train, determinism, imbalance controls, safe loading, evaluate and label on a tiny on-disk dataset."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_dataset
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from retinaug.classify import (
    EvaluateConfig,
    LabelConfig,
    TrainConfig,
    embed,
    evaluate,
    fit,
    label,
    load_classifier,
    predict,
    train,
)
from retinaug.classify.data import TrainingRows, class_weights, train_loader
from retinaug.classify.models import create_model
from retinaug.cli import app
from retinaug.errors import RetinaugError, validated
from retinaug.manifest import load_manifest, new_manifest, save_manifest

TINY = dict(backbone="resnet10t", size=32, epochs=2, batch_size=8, task="G,C,A", patience=2, augment=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clf") / "data"
    make_dataset(root)
    return root


@pytest.fixture(scope="module")
def model_dir(data: Path) -> Path:
    out = data.parent / "labeler"
    train(data, TrainConfig(**TINY), out)
    return out


def test_fit_saves_weights_and_meta(model_dir: Path):
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["classes"] == ["G", "C", "A"] and meta["size"] == 32 and meta["backbone"] == "resnet10t"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert set(meta["history"][0]) == {
        "epoch",
        "train_loss",
        "val_loss",
        "val_macro_f1",
        "val_accuracy",
        "seconds",
        "val_recall_G",
        "val_recall_C",
        "val_recall_A",
    }
    assert meta["n_train"] == 24 and meta["n_val"] == 12 and meta["train_counts"] == {"G": 8, "C": 8, "A": 8}
    assert meta["config"]["backbone"] == "resnet10t" and meta["best_epoch"] in (1, 2)
    assert {"load_images_s", "train_s", "total_s"} <= set(meta["timings"])
    clf = load_classifier(model_dir)
    assert clf.classes == ("G", "C", "A") and not clf.model.training
    df = load_manifest(model_dir.parent / "data")
    probs = predict(clf, df)
    assert probs.shape == (len(df), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    feats = embed(clf, df.iloc[:5])
    assert feats.shape == (5, clf.model.num_features)


def _logged(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_same_seed_same_metrics_and_task_filter(data: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="retinaug")
    df = load_manifest(data)
    outside = df[df["split"] == "test"].iloc[:3].assign(label="N")  # not in the task: dropped with a count
    tr = pd.concat([df[df["split"] == "train"], outside], ignore_index=True)
    va = df[df["split"] == "val"]
    cfg = TrainConfig(**{**TINY, "imbalance": "oversample", "epochs": 1})
    a = fit(tr, va, cfg, tmp_path / "a")
    assert "train: dropped 3 row(s) outside task G,C,A: {'N': 3}" in _logged(caplog)
    b = fit(tr, va, cfg, tmp_path / "b")
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = fit(tr, va, cfg.model_copy(update={"seed": 1}), tmp_path / "c")
    assert strip(c["history"]) != strip(a["history"])


def test_class_weights_and_oversampling():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 3)
    w = class_weights(labels, 4)  # class 3 absent -> weight 0
    assert w == pytest.approx([39 / (3 * 30), 39 / (3 * 6), 39 / (3 * 3), 0])
    ds = TrainingRows(np.zeros((len(labels), 4, 4, 3), np.uint8), labels, np.arange(len(labels)))
    drawn = np.concatenate(
        [labels[rows.numpy()] for seed in range(20) for _, rows in train_loader(ds, 13, "oversample", 4, seed)]
    )
    share = np.bincount(drawn, minlength=4) / len(drawn)
    assert share[:3] == pytest.approx([1 / 3] * 3, abs=0.05) and share[3] == 0
    plain = np.concatenate([labels[rows.numpy()] for _, rows in train_loader(ds, 13, "none", 4, 0)])
    assert np.bincount(plain).tolist() == [30, 6, 3]  # no re-weighting: each image once per epoch


def test_refuses_pickle_tampered_and_misshapen(model_dir: Path, tmp_path: Path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(RetinaugError, match="pickle"):
        load_classifier(pt)
    with pytest.raises(RetinaugError, match="pickle"):
        create_model(TrainConfig(**{**TINY, "pretrained": pt}), 3)
    bad = tmp_path / "tampered"
    bad.mkdir()
    (bad / "model.json").write_text((model_dir / "model.json").read_text())
    raw = bytearray((model_dir / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(RetinaugError, match="checksum"):
        load_classifier(bad)
    # a renamed pickle without a recorded checksum is still refused: not a valid safetensors file
    meta = json.loads((model_dir / "model.json").read_text())
    meta.pop("weights_sha256")
    (bad / "model.json").write_text(json.dumps(meta))
    (bad / "model.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(RetinaugError, match="not a valid safetensors"):
        load_classifier(bad)
    # well-formed safetensors with the wrong shapes
    state = load_file(str(model_dir / "model.safetensors"))
    state = {k: torch.zeros(2, 2) if k.startswith("fc.") else v for k, v in state.items()}
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(RetinaugError, match="does not fit backbone resnet10t"):
        load_classifier(bad)


def test_pretrained_from_local_safetensors(model_dir: Path, caplog):
    caplog.set_level(logging.INFO, logger="retinaug")
    model = create_model(TrainConfig(**{**TINY, "pretrained": model_dir / "model.safetensors"}), 5)
    assert "left at initialisation" in _logged(caplog)
    trained = load_file(str(model_dir / "model.safetensors"))
    assert torch.equal(model.state_dict()["conv1.0.weight"], trained["conv1.0.weight"])
    assert model.state_dict()["fc.weight"].shape == (5, trained["fc.weight"].shape[1])


def test_vgg_head_is_the_seeds():
    """vgg* (vgg19 in the paper preset; vgg11 here, same code, faster) gets GAP -> dense -> dropout -> linear."""
    model = create_model(TrainConfig(backbone="vgg11", head_hidden=16, task="G,C,A"), 3)
    assert isinstance(model.pre_logits[0], torch.nn.AdaptiveAvgPool2d) and model.head.fc.in_features == 16
    x = torch.zeros(2, 3, 32, 32)
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 16)


def test_evaluate_with_missing_and_unknown_classes(model_dir: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="retinaug")
    df = load_manifest(model_dir.parent / "data")
    test = df[(df["split"] == "test") & (df["label"] != "A")]
    odd = df[(df["split"] == "test") & (df["label"] == "A")].assign(label="N")
    m = evaluate(model_dir, pd.concat([test, odd]), EvaluateConfig(split="all", n_boot=50, seed=3), tmp_path / "eval")
    out = _logged(caplog)
    assert "excluded 4 image(s)" in out and "absent from the data: A" in out
    assert m["excluded"] == {"count": 4, "by_class": {"N": 4}} and m["classes_missing_from_data"] == ["A"]
    assert m["n_images"] == 8 and m["n_patients"] == 4 and m["per_class"]["A"]["auc"] is None
    assert set(m["ci"]) >= {"macro_f1", "accuracy", "odir_score"} and len(m["confusion"]) == 3
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["macro_f1"] == pytest.approx(m["macro_f1"])
    preds = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert list(preds.columns) == ["path", "label", "patient_id", "pred", "prob_G", "prob_C", "prob_A"]
    assert len(preds) == 8 and np.allclose(preds[["prob_G", "prob_C", "prob_A"]].sum(axis=1), 1, atol=1e-5)
    again = evaluate(model_dir, pd.concat([test, odd]), EvaluateConfig(split="all", n_boot=50, seed=3))
    assert again["ci"] == m["ci"]


def _synthetic(model_dir: Path, tmp_path: Path) -> Path:
    """A synthetic manifest reusing the tiny dataset's pixels, some with a deliberately wrong intended label."""
    import shutil

    src = load_manifest(model_dir.parent / "data")
    rows = []
    for i, r in enumerate(src.itertuples()):
        dst = tmp_path / "syn" / r.label / f"{i}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r.path, dst)
        intended = r.label if i % 4 else "G"  # every 4th image claims G
        rows.append(
            dict(
                path=str(dst),
                label=intended,
                patient_id=f"syn-{intended}-{i}",
                eye="unknown",
                split="train",
                origin="synthetic",
                source="test-generator",
            )
        )
    save_manifest(new_manifest(rows), tmp_path / "syn")
    return tmp_path / "syn"


def test_label_policies(model_dir: Path, tmp_path: Path):
    syn = _synthetic(model_dir, tmp_path)
    original = (syn / "manifest.parquet").read_bytes()
    agree = label(model_dir, syn, LabelConfig(policy="agree", threshold=0.0), tmp_path / "label")
    assert (agree["accepted"] == (agree["pred_label"] == agree["label"])).all()
    assert (agree["intended_label"] == agree["label"]).all()
    stored = load_manifest(tmp_path / "label")
    assert stored["accepted"].tolist() == agree["accepted"].tolist() and "pred_conf" in stored
    assert stored["path"].tolist() == load_manifest(syn)["path"].tolist()  # rows point at the synthetic images
    assert (syn / "manifest.parquet").read_bytes() == original  # the synthetic manifest is never rewritten
    summary = json.loads((tmp_path / "label" / "summary.json").read_text())
    assert summary["policy"] == "agree" and summary["generated"] == len(agree)
    assert sum(v["accepted"] for v in summary["per_class"].values()) == int(agree["accepted"].sum())

    from retinaug.classify.train import _extra_rows

    assert len(_extra_rows(tmp_path / "label")) == int(
        agree["accepted"].sum()
    )  # `train --extra` takes only accepted rows

    thr = float(np.median(agree["pred_conf"]))
    relabel = label(model_dir, syn, LabelConfig(policy="relabel", threshold=thr), tmp_path / "label")
    assert (relabel["label"] == relabel["pred_label"]).all()
    assert (relabel["intended_label"] == agree["label"]).all()
    assert (relabel["accepted"] == (relabel["pred_conf"] >= thr)).all()

    everything = label(
        model_dir, syn, LabelConfig(policy="all"), tmp_path / "label"
    )  # always from the generator's labels
    assert everything["accepted"].all() and (everything["label"] == agree["label"]).all()
    with pytest.raises(RetinaugError, match="policy: Input should be 'agree', 'relabel' or 'all'"):
        validated(LabelConfig, {"policy": "maybe"}, "label settings")


def test_cli_train_evaluate_label(data: Path, tmp_path: Path):
    runner = CliRunner()
    cfg = tmp_path / "clf.yaml"
    cfg.write_text("classifier:\n  backbone: resnet10t\n  batch_size: 8\n  epochs: 1\n")
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "lab"),
            "--config",
            str(cfg),
            "--task",
            "G,C,A",
            "--size",
            "32",
        ],
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "lab" / "model.json").read_text())
    assert meta["config"]["batch_size"] == 8 and meta["config"]["epochs"] == 1 and meta["size"] == 32
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "lab"), "--data", str(data), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lab" / "eval" / "metrics.json").is_file()
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "lab"), "--data", str(data), "--split", "nope"])
    assert res.exit_code != 0 and "split: Input should be 'train', 'val', 'test' or 'all'" in res.output
    res = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(tmp_path / "x"), "--backbone", "nonet", "--task", "G,C,A"]
    )
    assert res.exit_code != 0 and "unknown backbone" in res.output


def test_onecycle_schedule_with_five_steps_in_all(data: Path, tmp_path: Path):
    """torch's OneCycleLR divides by (pct_start x steps - 1): a fit of exactly 5 optimizer steps (5 epochs of one
    batch) raised ZeroDivisionError with the 20% warm-up."""
    train(data, TrainConfig(**{**TINY, "epochs": 5, "patience": 5, "batch_size": 32}), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4, 5] and meta["n_train"] == 24
