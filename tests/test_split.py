"""Patient-level stratified split and the leakage audit (split.py, `retinaug check-split`)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.manifest import load_manifest, save_manifest
from retinaug.split import assign_splits, check_split, split_counts

PATIENTS = {"N": 200, "D": 100, "G": 40, "H": 7}


def table(patients: dict[str, int] = PATIENTS) -> pd.DataFrame:
    """Two eyes per patient; no files needed for splitting."""
    rows = [
        dict(path=f"/x/{c}{k}_{eye}.jpg", label=c, patient_id=f"{c}{k}", eye=eye)
        for c, n in patients.items()
        for k in range(n)
        for eye in ("left", "right")
    ]
    return pd.DataFrame(rows)


def test_split_is_stratified_and_patient_grouped():
    out = assign_splits(table(), val=0.15, test=0.15, seed=0)
    assert out.groupby("patient_id")["split"].nunique().max() == 1  # both eyes on one side
    per_class = out.drop_duplicates("patient_id").groupby(["label", "split"]).size().unstack()
    for code, n in PATIENTS.items():
        expected = split_counts(n, 0.15, 0.15)
        assert tuple(per_class.loc[code, ["train", "val", "test"]]) == expected
    assert tuple(per_class.loc["N", ["train", "val", "test"]]) == (140, 30, 30)
    assert tuple(per_class.loc["H", ["train", "val", "test"]]) == (5, 1, 1)  # rare class still in val and test


def test_split_is_deterministic_and_order_independent():
    df = table()
    a = assign_splits(df, seed=3)
    b = assign_splits(df.sample(frac=1, random_state=1), seed=3)
    key = lambda d: d.set_index("path")["split"].sort_index()  # noqa: E731
    assert key(a).equals(key(b))
    c = assign_splits(df, seed=4)
    assert not key(a).equals(key(c))


def test_patient_label_is_rarest_class_and_duplicates_share_a_split():
    df = table({"N": 30, "G": 10})
    df.loc[df["path"] == "/x/N0_left.jpg", "label"] = "G"  # a patient with one N eye and one G eye
    df["sha256"] = [f"h{i}" for i in range(len(df))]
    df.loc[df["path"] == "/x/N5_left.jpg", "sha256"] = "same"  # identical bytes for two patients
    df.loc[df["path"] == "/x/G3_right.jpg", "sha256"] = "same"
    out = assign_splits(df, seed=0)
    split = out.set_index("path")["split"]
    assert split["/x/N5_left.jpg"] == split["/x/G3_right.jpg"] == split["/x/N5_right.jpg"] == split["/x/G3_left.jpg"]
    assert check_split(out) == []


def test_tiny_datasets_and_clear_errors():
    three = assign_splits(table({"G": 3}), seed=0)
    assert sorted(three.drop_duplicates("patient_id")["split"]) == ["test", "train", "val"]
    few = assign_splits(table({"N": 20, "H": 1}), seed=0)
    assert set(few.loc[few["label"] == "H", "split"]) == {"train"}
    assert any("class H has only 1 patient" in w for w in few.attrs["split_warnings"])
    with pytest.raises(RetinaugError, match="cannot make 3 splits from 2 patient"):
        assign_splits(table({"G": 2}))
    with pytest.raises(RetinaugError, match="came out empty"):
        assign_splits(table({"G": 2, "C": 1, "A": 1}))
    with pytest.raises(RetinaugError, match="sum to less than 1"):
        assign_splits(table(), val=0.5, test=0.5)
    no_val = assign_splits(table({"G": 2}), val=0, test=0.5)
    assert set(no_val["split"]) == {"train", "test"}


def test_check_split_catches_planted_leaks(tiny_data, tmp_path):
    assert check_split(tiny_data) == []
    leak = tiny_data.copy()
    row = leak.index[(leak["patient_id"] == "G000") & (leak["eye"] == "right")][0]
    leak.loc[row, "split"] = "test"  # same patient in train and test
    problems = check_split(leak)
    assert problems == ["patient 'G000' is in train and test (2 images)"]

    copy = tiny_data.copy()
    test_img = copy.loc[copy["split"] == "test", "path"].iloc[0]
    train_img = copy.loc[copy["split"] == "train", "path"].iloc[0]
    shutil.copyfile(train_img, test_img)  # same bytes in train and test, different patients
    problems = check_split(copy)  # no sha256 column: hashes are computed
    assert len(problems) == 1 and problems[0].startswith("identical image content in train and test")
    assert train_img in problems[0] and test_img in problems[0]


def test_check_split_cli(tiny_data, tmp_path):
    runner = CliRunner()
    data = tiny_data.attrs["manifest_dir"]
    ok = runner.invoke(app, ["check-split", data])
    assert ok.exit_code == 0 and ok.output.startswith("OK: 48 images of 24 patients")
    leak = load_manifest(data)
    leak.loc[leak["patient_id"] == "C000", "split"] = np.array(["train", "val"])
    save_manifest(leak, tmp_path / "leak")
    bad = runner.invoke(app, ["check-split", str(tmp_path / "leak")])
    assert bad.exit_code == 1
    text = " ".join(bad.output.replace("│", " ").split())  # the error panel wraps long lines
    assert "1 leakage problem(s)" in text and "patient 'C000' is in train and val (2 images)" in text
