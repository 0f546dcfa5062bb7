"""Quality audit: FID/KID/precision-recall values, planted copies flagged, outputs, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_dataset
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.manifest import load_manifest, save_manifest
from retinaug.quality import AuditConfig, audit
from retinaug.quality.metrics import _Precomputed, fid, kid, knn_precision_recall


def test_fid_of_a_set_with_itself_is_zero_and_matches_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 24))
    b = rng.normal(0.5, 1.3, size=(30, 24))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    stock = FrechetInceptionDistance(feature=_Precomputed(24))  # torchmetrics' own (general-eigvals) compute
    stock.update(torch.from_numpy(a), real=True)
    stock.update(torch.from_numpy(b), real=False)
    assert fid(a, b) == pytest.approx(float(stock.compute()), rel=1e-6)
    wide_a, wide_b = rng.normal(size=(12, 96)), rng.normal(0.2, 1, size=(9, 96))  # n << dims: projected, still exact
    stock = FrechetInceptionDistance(feature=_Precomputed(96))
    stock.update(torch.from_numpy(wide_a), real=True)
    stock.update(torch.from_numpy(wide_b), real=False)
    assert fid(wide_a, wide_b) == pytest.approx(float(stock.compute()), rel=1e-5)
    assert fid(a[:1], b) is None


def test_kid_and_precision_recall_small_sets():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 8)), rng.normal(3, 1, size=(5, 8))
    same = rng.normal(size=(30, 8))  # another sample of a's distribution
    mean, std, size = kid(a, same, subset_size=100, subsets=5, seed=0)
    assert size == 20 and abs(mean) < 0.2
    assert kid(a, same, 100, 5, 0) == (mean, std, size)  # seeded subsets
    far, _, size = kid(a, b, subset_size=100, subsets=5, seed=0)
    assert size == 5 and far > 10 * max(abs(mean), 0.1)
    assert kid(a, b[:1], 100, 5, 0) == (None, None, 1)
    assert knn_precision_recall(a, a, 3) == (1.0, 1.0)
    precision, recall = knn_precision_recall(a, b, 3)
    assert precision < 0.5 and recall < 0.5  # the shifted set sits outside the real manifold
    assert knn_precision_recall(a, b[:3], 3) == (None, None)


@pytest.fixture
def audit_data(tmp_path):
    """Real data (12 patients x 2 eyes per class) + a 'synthetic' set: exact copies of 6 training images per
    class (new files, same pixels) and the 6 real test images per class, which must mostly not be flagged."""
    data = make_dataset(
        tmp_path / "data", classes=("G", "C"), patients_per_class=12, splits={"train": 0.5, "val": 0.25, "test": 0.25}
    )
    rows = []
    for code in ("G", "C"):
        train = data[(data["label"] == code) & (data["split"] == "train")].iloc[:6]
        for i, path in enumerate(train["path"]):
            copy = tmp_path / "synthetic" / code / f"copy{i}.png"
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy)
            rows.append(
                dict(
                    path=str(copy),
                    label=code,
                    patient_id=f"syn-{code}-{i}",
                    eye="unknown",
                    split="train",
                    origin="synthetic",
                    source="planted",
                    planted=True,
                )
            )
        for i, path in enumerate(data[(data["label"] == code) & (data["split"] == "test")]["path"]):
            other = tmp_path / "synthetic" / code / f"test{i}.png"
            shutil.copy(path, other)
            rows.append(
                dict(
                    path=str(other),
                    label=code,
                    patient_id=f"syn-{code}-t{i}",
                    eye="unknown",
                    split="train",
                    origin="synthetic",
                    source="test-image",
                    planted=False,
                )
            )
    save_manifest(pd.DataFrame(rows), tmp_path / "synthetic")
    return load_manifest(tmp_path / "synthetic"), data


def test_planted_copies_are_flagged(audit_data, tmp_path):
    synthetic, data = audit_data
    report = audit(
        synthetic, data, AuditConfig(extractor="pixels", kid_subsets=5, min_test=5, cas=False), tmp_path / "quality"
    )
    table = pd.read_csv(tmp_path / "quality" / "memorization.csv")
    syn = table[table["set"] == "synthetic"].merge(synthetic[["path", "planted"]], on="path")
    assert syn.loc[syn["planted"], "flagged"].all()  # 100% of exact copies
    assert syn.loc[syn["planted"], "nn_cosine"].min() > 0.99999
    assert syn.loc[~syn["planted"], "flagged"].mean() <= 0.25  # real test images: mostly not
    assert len(table[table["set"] == "test"]) == 12
    for code in ("G", "C"):
        res = report["per_class"][code]
        assert res["n_synthetic"] == 12 and res["n_train"] == 12 and res["n_test"] == 6
        mem = report["memorization"][code]
        assert mem["n_flagged"] >= 6 and mem["rate"] == pytest.approx(mem["n_flagged"] / 12)
        assert mem["threshold"] < 0.99999 and mem["threshold_source"] == "class"
        assert res["fid"] is not None and res["fid"] >= 0 and res["kid_subset_size"] == 12
        assert 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1
    assert report["memorization"]["n_flagged"] == sum(report["memorization"][c]["n_flagged"] for c in ("G", "C"))
    assert report["overall"]["fid"] is not None and report["overall"]["kid_subset_size"] == 24
    assert json.loads((tmp_path / "quality" / "audit.json").read_text())["classes"] == ["G", "C"]
    for name in ("similarity_hist.png", "match.png"):
        assert (tmp_path / "quality" / name).stat().st_size > 1000
    matches = pd.read_csv(tmp_path / "quality" / "match.csv")
    assert len(matches) == 24 * 5 and set(matches["match"]) <= set(data.loc[data["split"] == "train", "path"])


def test_img2img_copies_of_their_parent_are_parent_copies_not_memorization(audit_data, tmp_path):
    """img2img rows: a copy of its own parent is a parent copy (not memorization of the training set); a copy of
    another training image is memorization whatever its parent; a real test image given a parent is neither."""
    synthetic, data = audit_data
    train = {c: sorted(data.loc[(data["label"] == c) & (data["split"] == "train"), "path"]) for c in ("G", "C")}
    rows, kind = [], []
    for c in ("G", "C"):
        for i in range(6):  # exact copies of their own parent, at two strengths
            rows.append((train[c][i], c, train[c][i], 0.1 if i % 2 else 0.3))
            kind.append("own parent")
        for i in range(3):  # exact copies of a training image that is not their parent
            rows.append((train[c][i], c, train[c][i + 6], 0.5))
            kind.append("other image")
        for i, path in enumerate(sorted(data.loc[(data["label"] == c) & (data["split"] == "test"), "path"])):
            rows.append((path, c, train[c][i], 0.5))  # an unrelated real image, given a parent
            kind.append("unrelated")
        rows.append((train[c][11], c, str(tmp_path / "elsewhere.png"), 0.5))  # parent outside the training images
        kind.append("unknown parent")
    records = []
    for i, (src, c, parent, strength) in enumerate(rows):
        copy = tmp_path / "i2i" / f"{i:03d}.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, copy)
        records.append(
            dict(
                path=str(copy),
                label=c,
                patient_id=f"syn-{i}",
                eye="unknown",
                split="train",
                origin="synthetic",
                source="planted",
                parent=parent,
                strength=strength,
            )
        )
    save_manifest(pd.DataFrame(records), tmp_path / "i2i")
    syn = load_manifest(tmp_path / "i2i")
    report = audit(syn, data, AuditConfig(extractor="pixels", kid_subsets=2, min_test=5, cas=False), tmp_path / "q")
    table = pd.read_csv(tmp_path / "q" / "memorization.csv")
    table = table[table["set"] == "synthetic"].reset_index(drop=True).assign(kind=kind)
    by = table.groupby("kind")
    # flagged only at the rule's false-positive rate (a training image is as near another one as a test image gets)
    assert by.get_group("own parent")["parent_copy"].all() and by.get_group("own parent")["flagged"].mean() <= 0.25
    assert (by.get_group("own parent")["parent_cosine"] > 0.99999).all()
    # the nearest *other* training image is reported, never the parent itself
    assert (by.get_group("own parent")["nn_match"] != by.get_group("own parent")["parent"]).all()
    assert by.get_group("other image")["flagged"].all() and not by.get_group("other image")["parent_copy"].any()
    assert (
        by.get_group("unrelated")["parent_copy"].mean() <= 0.25 and by.get_group("unrelated")["flagged"].mean() <= 0.25
    )
    assert by.get_group("unknown parent")["parent"].isna().all() and by.get_group("unknown parent")["flagged"].all()
    for c in ("G", "C"):
        mem = report["memorization"][c]
        assert mem["n_img2img"] == 6 + 3 + 6 and mem["n_parent_copies"] >= 6 and mem["n_flagged"] >= 3 + 1
        assert mem["median_parent_cosine"] is not None
    img2img = report["memorization"]["img2img"]
    assert img2img["n"] == 30 and img2img["parents_not_in_train"] == 2
    low = table[[r[3] == 0.1 for r in rows]]
    assert img2img["by_strength"]["0.1"] == {
        "n": 6,
        "median_parent_cosine": pytest.approx(1.0),
        "n_parent_copies": 6,
        "n_flagged": int(low["flagged"].sum()),
    }
    assert img2img["by_strength"]["0.5"]["n"] == 18
    # without a parent column nothing changes: a copy of a training image is memorization
    plain = audit(
        syn.drop(columns=["parent"]),
        data,
        AuditConfig(extractor="pixels", kid_subsets=2, min_test=5, cas=False),
        tmp_path / "q2",
    )
    assert plain["memorization"]["img2img"]["n"] == 0 and plain["memorization"]["n_flagged"] >= 2 * (6 + 3 + 1)


def test_audit_errors(audit_data, tmp_path):
    synthetic, data = audit_data
    with pytest.raises(RetinaugError, match="no real training images of class"):
        audit(synthetic.assign(label="A"), data, AuditConfig(extractor="pixels"), tmp_path / "q")
    with pytest.raises(RetinaugError, match="needs the test split"):
        audit(synthetic, data[data["split"] != "test"], AuditConfig(extractor="pixels"), tmp_path / "q")
    with pytest.raises(RetinaugError, match="run `retinaug label`"):
        audit(synthetic, data, AuditConfig(extractor="pixels", accepted_only=True), tmp_path / "q")


def test_cli_select_augment_audit(tmp_path):
    runner = CliRunner()
    data = make_dataset(tmp_path / "data", classes=("D", "N", "G"), patients_per_class=8)
    res = runner.invoke(
        app,
        [
            "select",
            "--data",
            str(tmp_path / "data"),
            "--keep",
            "3",
            "--strategy",
            "random",
            "--out",
            str(tmp_path / "sel"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(load_manifest(tmp_path / "sel")) == 6
    res = runner.invoke(
        app,
        ["augment", "--data", str(tmp_path / "data"), "--ratio", "2", "--classes", "G", "--out", str(tmp_path / "aug")],
    )
    assert res.exit_code == 0, res.output
    assert len(load_manifest(tmp_path / "aug")) == 2 * (data["split"] == "train").sum() // 3
    res = runner.invoke(
        app, ["augment", "--data", str(tmp_path / "data"), "--ratio", "9", "--out", str(tmp_path / "aug2")]
    )
    assert res.exit_code != 0 and "distinct" in res.output
    res = runner.invoke(
        app, ["select", "--data", str(tmp_path / "data"), "--keep", "2.5", "--out", str(tmp_path / "s2")]
    )
    assert res.exit_code != 0 and "whole number" in res.output
    res = runner.invoke(
        app,
        [
            "audit",
            "--synthetic",
            str(tmp_path / "aug"),
            "--data",
            str(tmp_path / "data"),
            "--no-cas",
            "--out",
            str(tmp_path / "q"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "memorization rate" in res.output
    report = json.loads((tmp_path / "q" / "audit.json").read_text())
    assert report["memorization"]["G"]["threshold_source"] == "pooled"  # 4 test images < min_test
