"""Validation errors of the Manifest (manifest.py): every problem is named, with where and how to fix it."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retinaug.errors import ManifestError
from retinaug.manifest import class_counts, load_manifest, new_manifest, save_manifest, validate_manifest


def rows(n: int = 3) -> list[dict]:
    return [
        dict(
            path=f"/data/img{i}.png",
            label="G",
            patient_id=f"p{i}",
            eye="left",
            split="train",
            origin="real",
            source="t",
        )
        for i in range(n)
    ]


def test_missing_columns():
    df = pd.DataFrame(rows()).drop(columns=["split", "origin"])
    with pytest.raises(ManifestError, match="missing required column\\(s\\): split, origin"):
        validate_manifest(df)


def test_unknown_codes_and_values_are_all_listed():
    df = pd.DataFrame(rows())
    df.loc[0, "label"] = "X"
    df.loc[1, "split"] = "holdout"
    df.loc[2, "eye"] = "both"
    df["pred_label"] = ["G", "Z", None]
    with pytest.raises(ManifestError) as err:
        validate_manifest(df)
    msg = str(err.value)
    assert "unknown label value(s) 'X'" in msg and "allowed: N, D, G, C, A, H, M, O" in msg
    assert "unknown split value(s) 'holdout'" in msg and "unknown eye value(s) 'both'" in msg
    assert "unknown class code(s) in pred_label: 'Z'" in msg


def test_empty_values_and_duplicate_paths():
    df = pd.DataFrame(rows() + rows(1))
    df.loc[1, "patient_id"] = " "
    with pytest.raises(ManifestError) as err:
        validate_manifest(df)
    assert "column 'patient_id' is empty in row(s) 1" in str(err.value)
    assert "duplicate path(s) (same image and transform twice): '/data/img0.png'" in str(err.value)
    views = pd.DataFrame(rows(1) * 2)
    views["transform"] = [None, "hflip"]  # the same file under another transform is a different row
    assert len(validate_manifest(views)) == 2


def test_missing_files_only_when_asked(tmp_path):
    df = pd.DataFrame(rows(1))
    assert len(validate_manifest(df)) == 1
    with pytest.raises(ManifestError, match="image file\\(s\\) not found: '/data/img0.png'"):
        validate_manifest(df, check_files=True)


def test_save_load_round_trip_and_relative_paths(tiny_data, tmp_path):
    stored = pq.read_table(tiny_data.attrs["manifest_dir"] + "/manifest.parquet").column("path").to_pylist()
    assert stored[0] == "images/G/G000_left.png"  # relative to the manifest's folder on disk
    assert tiny_data["path"].iloc[0].startswith(tiny_data.attrs["manifest_dir"])  # absolute in memory
    moved = tmp_path / "elsewhere"
    save_manifest(tiny_data, moved)  # images outside the folder: root = their common folder
    again = load_manifest(moved)
    assert again["path"].tolist() == tiny_data["path"].tolist()
    assert class_counts(again).loc["total", "total"] == 48
    with pytest.raises(ManifestError, match="outside the manifest's image root"):
        save_manifest(tiny_data, tmp_path / "x", root=tmp_path / "x")


def test_sibling_manifest_follows_a_moved_folder_external_images_stay(tiny_data, tmp_path):
    """A manifest whose images sit in a sibling folder (augment/ -> data/images) keeps working after the parent
    folder is renamed; one whose images are elsewhere on disk keeps its absolute root."""
    save_manifest(tiny_data, tmp_path / "augment")
    (tmp_path / "external").mkdir()
    save_manifest(tiny_data, tmp_path / "external" / "m")
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    again = load_manifest(moved / "augment", check_files=True)
    assert again["path"].tolist() == [p.replace(str(tmp_path), str(moved), 1) for p in tiny_data["path"]]
    (moved / "external" / "m").rename(tmp_path.parent / "m-alone")  # images not beside it any more
    tmp_path.mkdir()
    (tmp_path / "data").symlink_to(moved / "data")  # the absolute root, recreated
    alone = load_manifest(tmp_path.parent / "m-alone", check_files=True)
    assert alone["path"].tolist() == tiny_data["path"].tolist()


def test_escaping_paths_are_refused_on_load(tmp_path):
    df = new_manifest(rows(2))
    df["path"] = ["ok.png", "../../etc/passwd"]
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({b"retinaug": json.dumps({"root": ".", "version": 1}).encode()})
    (tmp_path / "m").mkdir()
    pq.write_table(table, tmp_path / "m/manifest.parquet")
    with pytest.raises(ManifestError, match="escape the image root .*row 1: '../../etc/passwd'"):
        load_manifest(tmp_path / "m")


def test_unreadable_or_absent_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no manifest at .* run `retinaug prepare"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.parquet").write_bytes(b"garbage")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path)
