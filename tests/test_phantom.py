"""Phantom dataset: exact class counts, determinism, two mirrored eyes per patient, manifest + splits, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from retinaug.classes import CODES
from retinaug.cli import app
from retinaug.errors import RetinaugError, validated
from retinaug.manifest import load_manifest
from retinaug.phantom import PhantomConfig, make_phantom, phantom_counts, render_fundus
from retinaug.split import check_split


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """The smallest full dataset: 96 images = 8 classes x 6 patients x 2 eyes, 32 px."""
    out = tmp_path_factory.mktemp("phantom") / "data"
    df = make_phantom(PhantomConfig(n=96, size=32, seed=3), out)
    return out, df


def test_counts_follow_odir_with_a_minimum_per_class():
    assert phantom_counts(1000) == {"N": 228, "D": 128, "G": 19, "C": 21, "A": 20, "H": 10, "M": 19, "O": 55}
    assert phantom_counts(96) == {c: 6 for c in CODES}  # the minimum: 6 patients per class
    small = phantom_counts(200)  # rare classes pinned at 6, N/D/O share the rest in ODIR's ratio
    assert sum(small.values()) == 100 and min(small.values()) == 6 and small["N"] > small["D"] > small["O"]
    assert phantom_counts(100, "N=3,D=1") == {"N": 38, "D": 12}
    assert phantom_counts(160, "uniform") == {c: 10 for c in CODES}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=50), "too small"),
        (dict(n=101), "even number"),
        (dict(size=8), "size: Input should be greater than or equal to 16"),  # refused by the config
        (dict(proportions="N=1,X=2"), "unknown class code"),
        (dict(proportions="N=1"), "at least two classes"),
        (dict(proportions="N:1,D:2"), "CLASS=weight"),
        (dict(val=0.6, test=0.5), "sum to less than 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(RetinaugError, match=message):
        make_phantom(validated(PhantomConfig, {"n": 96, "size": 32, **kwargs}, "phantom settings"), tmp_path / "data")
    assert not (tmp_path / "data" / "images").exists()  # checked before anything is written


def test_manifest_is_valid_with_two_eyes_per_patient_and_every_class_in_every_split(phantom):
    out, df = phantom
    saved = load_manifest(out, check_files=True)
    assert len(saved) == 96 and saved["patient_id"].nunique() == 48
    assert set(saved["source"]) == {"phantom"} and set(saved["origin"]) == {"real"}
    eyes = saved.groupby("patient_id")["eye"].agg(lambda e: "+".join(sorted(e)))
    assert set(eyes) == {"left+right"} and (saved.groupby("patient_id")["label"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        assert set(saved.loc[saved["split"] == split, "label"]) == set(CODES), split
    assert check_split(saved) == []
    assert (saved.loc[saved["label"] == "N", "severity"] == 0).all()
    assert (saved.loc[saved["label"] == "N", "findings"] == "").all()
    assert (saved.loc[saved["label"] != "N", "findings"] != "").all()
    for path, label, pid, eye in saved[["path", "label", "patient_id", "eye"]].itertuples(index=False):
        assert path.endswith(f"/images/{label}/{pid}_{eye}.png")
    with Image.open(saved["path"].iloc[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert (out / "summary.json").is_file() and (out / "rejected.csv").is_file()


def test_same_seed_same_bytes_other_seed_differs_and_stale_files_go(phantom, tmp_path):
    out, df = phantom
    stale = tmp_path / "data" / "images" / "N" / "ph99999_left.png"
    stale.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(stale)
    again = make_phantom(PhantomConfig(n=96, size=32, seed=3), tmp_path / "data")
    assert not stale.exists()
    key = ["patient_id", "eye"]
    a, b = df.sort_values(key), again.sort_values(key)
    assert a["sha256"].tolist() == b["sha256"].tolist() and a["split"].tolist() == b["split"].tolist()
    other = make_phantom(PhantomConfig(n=96, size=32, seed=4), tmp_path / "other")
    assert not set(other["sha256"]) & set(df["sha256"])


def test_image_depends_only_on_seed_patient_eye(phantom):
    out, df = phantom
    row = df[df["patient_id"] == "ph00005"].iloc[0]
    img, info = render_fundus(row["label"], 5, row["eye"], size=32, seed=3)
    with Image.open(row["path"]) as im:
        assert np.array_equal(np.asarray(im), img)
    assert info["severity"] == pytest.approx(row["severity"])


@pytest.mark.parametrize("label", ["N", "G"])
def test_left_and_right_eyes_are_mirrored(label):
    """The optic disc (brightest spot) is right of centre in a right eye and left of centre in a left eye."""
    for patient in range(6):
        xs = {}
        for eye in ("left", "right"):
            img, _ = render_fundus(label, patient, eye, size=64, seed=0)
            lum = img.astype(float) @ [0.3, 0.59, 0.11]
            bright = lum >= np.quantile(lum, 0.995)
            xs[eye] = np.nonzero(bright)[1].mean() / 64
        assert xs["right"] > 0.6 and xs["left"] < 0.4, (patient, xs)


def test_cli_writes_images_and_manifest_and_rejects_bad_args(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run" / "data"
    res = runner.invoke(app, ["prepare", "phantom", "--n", "96", "--size", "16", "--seed", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(list((out / "images").glob("*/*.png"))) == 96
    assert len(load_manifest(out)) == 96
    res = runner.invoke(app, ["prepare", "phantom", "--n", "40", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "too small" in res.output
    res = runner.invoke(app, ["prepare", "phantom", "--size", "8", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "size: Input should be greater than or equal to 16" in res.output
