"""Class fidelity and CAS on planted cases: "synthetic" images that are copies of real images of the right class,
or of a wrong class, with a real (tiny) labeler and real classifier fits."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import make_dataset
from pipeline_helpers import tiny_run
from typer.testing import CliRunner

from retinaug.classify import TrainConfig, train
from retinaug.cli import app
from retinaug.manifest import load_manifest, save_manifest
from retinaug.quality import AuditConfig, audit, cas, class_fidelity

CLASSES = ("G", "C", "A")
RECIPE = TrainConfig(backbone="resnet10t", size=16, task="G,C,A", epochs=6, batch_size=8, augment=False, patience=6)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """16 patients x 2 eyes per class (colour + noise per class), and a labeler trained on its train split."""
    root = tmp_path_factory.mktemp("fidelity")
    data = make_dataset(root / "data", classes=CLASSES, patients_per_class=16, size=16)
    train(root / "data", RECIPE, root / "labeler")
    return root, data


def planted(root, data, name: str, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """A synthetic manifest of copies (new files, same pixels): `pairs` = (source image, asked class)."""
    rows = []
    for i, (path, asked) in enumerate(pairs):
        copy = root / name / asked / f"{i:04d}.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
        rows.append(
            dict(
                path=str(copy),
                label=asked,
                patient_id=f"syn-{name}-{i}",
                eye="unknown",
                split="train",
                origin="synthetic",
                source="planted",
            )
        )
    save_manifest(pd.DataFrame(rows), root / name)
    return load_manifest(root / name)


def real(data, split: str, code: str) -> list[str]:
    return sorted(data.loc[(data["split"] == split) & (data["label"] == code), "path"])


def test_copies_of_test_images_of_the_right_class_have_fidelity_one(world):
    root, data = world
    syn = planted(root, data, "right", [(p, c) for c in CLASSES for p in real(data, "test", c)])
    summary, per_image = class_fidelity(syn, data, root / "labeler")
    assert summary["predictions"] == "predicted with the labeler"
    for c in CLASSES:
        row = summary["per_class"][c]
        assert row["n_synthetic"] == row["n_test"] == 8
        assert row["test_recall"] > 0.5  # the labeler recognises the class at all
        assert row["share"] == pytest.approx(row["test_recall"])  # the same pixels, the same predictions
        assert row["fidelity"] == pytest.approx(1.0) and row["reason"] is None
    assert summary["macro_fidelity"] == pytest.approx(1.0) and summary["n_classes_scored"] == 3
    assert len(per_image) == 24 and set(per_image.columns) == {"path", "asked", "pred_label", "agrees"}


def test_copies_of_a_wrong_class_have_fidelity_near_zero(world):
    root, data = world
    # asked for G, got images of C; asked for C, got A; asked for A, got G
    wrong = {"G": "C", "C": "A", "A": "G"}
    syn = planted(root, data, "wrong", [(p, c) for c in CLASSES for p in real(data, "test", wrong[c])])
    summary, per_image = class_fidelity(syn, data, root / "labeler")
    for c in CLASSES:
        row = summary["per_class"][c]
        assert row["fidelity"] is not None and row["fidelity"] <= 0.15, (c, row)
        assert row["assigned_to"].get(wrong[c], 0) >= 6  # the labeler sees the class they really show
    assert summary["macro_fidelity"] <= 0.15
    assert not per_image["agrees"].astype(bool).all()


def test_pred_label_column_is_used_and_missing_recall_has_a_reason(world):
    root, data = world
    syn = planted(root, data, "labelled", [(p, c) for c in ("G", "C") for p in real(data, "test", c)[:4]])
    syn["intended_label"] = syn["label"]
    syn["label"] = "A"  # the relabel policy rewrote `label`; the asked class is `intended_label`
    syn["pred_label"] = pd.array(["G"] * 8, dtype="string")  # the label stage's predictions: everything G
    summary, _ = class_fidelity(syn, data, None)
    assert summary["predictions"] == "pred_label column (the label stage's predictions)"
    assert summary["per_class"]["G"]["share"] == 1.0 and summary["per_class"]["C"]["share"] == 0.0
    assert summary["per_class"]["G"]["fidelity"] is None and "no labeler" in summary["per_class"]["G"]["reason"]
    assert summary["macro_fidelity"] is None
    with_labeler, _ = class_fidelity(syn, data, root / "labeler")
    g = with_labeler["per_class"]["G"]
    assert g["fidelity"] == pytest.approx(1.0 / g["test_recall"])  # predictions from the column, recall measured
    no_test = class_fidelity(syn, data[data["split"] != "test"], root / "labeler")[0]
    assert no_test["per_class"]["G"]["reason"] == "no real test image of class G"


def test_cas_on_copies_of_train_images_matches_real_and_wrong_labels_fail(world, tmp_path):
    root, data = world
    copies = planted(root, data, "cas-copies", [(p, c) for c in CLASSES for p in real(data, "train", c)])
    good = cas(copies, data, RECIPE, tmp_path / "good")
    assert good["classes"] == list(CLASSES) and good["n_test"] == 24
    for c in CLASSES:
        assert good["per_class"][c] | {"cas_recall": 0, "real_recall": 0} == {
            "real_train": 16,
            "synthetic_available": 16,
            "synthetic_used": 16,
            "shortfall": 0,
            "cas_recall": 0,
            "real_recall": 0,
        }
    assert good["real"]["macro_f1"] >= 0.8
    assert good["synthetic"]["macro_f1"] == pytest.approx(good["real"]["macro_f1"], abs=0.15)
    assert good["f1_ratio"] == pytest.approx(good["synthetic"]["macro_f1"] / good["real"]["macro_f1"])
    for name in ("synthetic", "real"):
        assert (tmp_path / "good" / name / "model.safetensors").is_file() and (
            tmp_path / "good" / name / "metrics.json"
        ).is_file()

    # every image asked as the wrong class (G as C, C as A, A as G): what is learnt is the wrong mapping. (Shuffled
    # labels proved a poor planted case: with nothing to learn, the epoch kept by real-val selection could be one whose
    # random mapping happened to be right.)
    wrong = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
    mislabelled = planted(root, data, "cas-wrong", [(p, wrong[c]) for c in CLASSES for p in real(data, "train", c)])
    bad = cas(mislabelled, data, RECIPE, tmp_path / "bad")
    assert bad["synthetic"]["macro_f1"] <= 0.5 and bad["f1_ratio"] <= 0.6
    assert bad["real"]["macro_f1"] == pytest.approx(good["real"]["macro_f1"])  # the same real fit, same seed


def test_cas_shortfall_and_classes_without_synthetic_images(world, tmp_path):
    root, data = world
    syn = planted(root, data, "short", [(p, c) for c in ("G", "C") for p in real(data, "train", c)[:5]])
    result = cas(syn, data, RECIPE.model_copy(update={"epochs": 1}), tmp_path / "short")
    assert result["classes"] == ["G", "C"] and result["skipped_classes"] == {"A": "no synthetic image of this class"}
    assert result["per_class"]["G"]["synthetic_used"] == 5 and result["per_class"]["G"]["shortfall"] == 11
    one = cas(syn[syn["label"] == "G"], data, RECIPE, tmp_path / "one")
    assert "at least 2 classes" in one["reason"] and not (tmp_path / "one").exists()


def test_audit_and_cli_write_fidelity_cas_and_class_grid(world, tmp_path, monkeypatch):
    root, data = world
    syn = planted(root, data, "audit", [(p, c) for c in CLASSES for p in real(data, "test", c)[:6]])
    cfg = AuditConfig(
        extractor="pixels", kid_subsets=2, min_test=5, cas_n_boot=0, cas_recipe=RECIPE.model_copy(update={"epochs": 1})
    )
    report = audit(syn, data, cfg, tmp_path / "q", labeler=root / "labeler")
    assert report["class_fidelity"]["n_classes_scored"] == 3 and report["cas"]["classes"] == list(CLASSES)
    assert json.loads((tmp_path / "q" / "audit.json").read_text())["cas"]["recipe"]["epochs"] == 1
    assert len(pd.read_csv(tmp_path / "q" / "class_fidelity.csv")) == 18
    assert (tmp_path / "q" / "class_samples.png").stat().st_size > 2000

    off = audit(syn, data, cfg.model_copy(update={"cas": False, "class_fidelity": False}), tmp_path / "off")
    assert off["cas"] == {"reason": "switched off (cas: false)"} and "switched off" in off["class_fidelity"]["reason"]
    assert not (tmp_path / "off" / "cas").exists() and not (tmp_path / "off" / "class_fidelity.csv").exists()

    recipe = tmp_path / "run-config.yaml"  # a run's config.yaml: CAS takes its experiments.train recipe
    recipe.write_text(
        json.dumps({"experiments": {"train": RECIPE.model_copy(update={"epochs": 1}).model_dump(mode="json")}})
    )
    args = [
        "audit",
        "--synthetic",
        str(root / "audit"),
        "--data",
        str(root / "data"),
        "--labeler",
        str(root / "labeler"),
        "--extractor",
        "pixels",
        "--recipe",
        str(recipe),
        "--cas-n-boot",
        "0",
        "--out",
        str(tmp_path / "cli"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "class fidelity" in res.output and "CAS macro-F1" in res.output
    assert json.loads((tmp_path / "cli" / "audit.json").read_text())["cas"]["recipe"]["backbone"] == "resnet10t"
    monkeypatch.chdir(tmp_path)  # a short path: the error panel folds a long one across lines
    res = CliRunner().invoke(app, args[:-2] + ["--recipe", "nope.yaml", "--out", str(tmp_path / "cli2")])
    assert res.exit_code == 1 and "nope.yaml" in res.output


def test_pipeline_quality_stage_scores_cas_with_the_experiments_recipe():
    run = tiny_run()
    report = json.loads((run / "quality" / "audit.json").read_text())
    resolved = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert report["cas"]["recipe"] == {
        **resolved["experiments"]["train"],
        "seed": 0,
    }  # the scenarios' recipe, first seed
    assert report["cas"]["classes"] == ["G", "C", "A", "H", "M"]
    assert all(report["cas"]["per_class"][c]["synthetic_used"] == 4 for c in "GCAHM")  # 4 generated per class < 6 real
    assert report["class_fidelity"]["predictions"] == "pred_label column (the label stage's predictions)"
    assert set(report["class_fidelity"]["per_class"]) == set("GCAHM")
    for name in ("cas/synthetic/metrics.json", "cas/real/metrics.json", "class_fidelity.csv", "class_samples.png"):
        assert (run / "quality" / name).is_file(), name
