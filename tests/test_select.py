"""t-SNE selection: sizes per strategy, determinism, train-only, outputs; the strategies' geometry."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_dataset
from pydantic import ValidationError

from retinaug.errors import RetinaugError
from retinaug.select import SelectConfig, keep_count, select
from retinaug.select.tsne import _core, _coverage


@pytest.fixture(scope="module")
def dn_data(tmp_path_factory):
    """D and N (the dominant classes) + G as context: 10 train images per class."""
    return make_dataset(tmp_path_factory.mktemp("sel") / "data", classes=("D", "N", "G"), patients_per_class=10)


@pytest.mark.parametrize("strategy,keep,expected", [("coverage", 0.5, 5), ("core", 3, 3), ("random", 0.25, 3)])
def test_sizes_and_outputs(dn_data, tmp_path, strategy, keep, expected):
    out = tmp_path / "sel"
    chosen = select(dn_data, SelectConfig(strategy=strategy, keep=keep), out)
    assert chosen["label"].value_counts().to_dict() == {"D": expected, "N": expected}
    assert set(chosen["split"]) == {"train"} and not chosen["path"].duplicated().any()
    points = pd.read_csv(out / "tsne.csv")
    assert list(points.columns[:5]) == ["path", "label", "x", "y", "selected"]
    assert len(points) == 30  # D, N and the context class G, train only
    assert set(points.loc[points["selected"], "path"]) == set(chosen["path"])
    assert not points.loc[points["label"] == "G", "selected"].any()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["D"] == {"train": 10, "kept": expected, "dropped": 10 - expected, "capped": False}
    assert (out / "tsne.png").stat().st_size > 1000
    assert (out / "manifest.parquet").is_file()


def test_deterministic(dn_data):
    cfg = SelectConfig(keep=4, strategy="coverage", seed=1)
    a, b = select(dn_data, cfg), select(dn_data, cfg)
    assert a["path"].tolist() == b["path"].tolist()


def test_coverage_spreads_over_clusters():
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(10, 0.1, (5, 2)), rng.normal((0, 10), 0.1, (5, 2))])
    picked = _coverage(xy, 3, seed=0)
    assert sorted({0 if i < 20 else 1 if i < 25 else 2 for i in picked}) == [
        0,
        1,
        2,
    ]  # one per blob, not 3 from the big one
    dup = np.zeros((6, 2))  # identical points: k-means finds one cluster; still return 3 distinct images
    assert len(set(_coverage(dup, 3, seed=0))) == 3


def test_core_drops_images_among_other_classes():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.3, (8, 2))
    n = rng.normal(5, 0.3, (8, 2))
    xy = np.concatenate([d, n, [[5.0, 5.0]]])  # the last D image sits inside the N cluster
    labels = np.array(["D"] * 8 + ["N"] * 8 + ["D"])
    members = np.flatnonzero(labels == "D")
    kept = members[_core(xy, labels, members, 8, k=3)]
    assert 16 not in kept and len(kept) == 8


def test_keep_count_and_errors(dn_data):
    assert (
        keep_count(10, 0.5) == 5 and keep_count(10, 0.01) == 1 and keep_count(10, 200) == 10 and keep_count(10, 1) == 10
    )
    with pytest.raises(ValidationError, match="whole number"):
        SelectConfig(keep=2.5)
    with pytest.raises(ValidationError, match="unknown class"):
        SelectConfig(classes=["X"])
    with pytest.raises(ValidationError):
        SelectConfig(strategy="best")
    with pytest.raises(RetinaugError, match="no real training images of class"):
        select(dn_data, SelectConfig(classes=["A"]))
