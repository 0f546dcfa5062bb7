"""`retinaug manifest export-csv / concat / info`: the seed's per-class CSVs and CSV merge, done on manifests."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import ManifestError
from retinaug.manifest import REQUIRED, load_manifest
from retinaug.manifest_tools import concat, export_csv

runner = CliRunner()


def test_export_per_class_then_concat_round_trip(tiny_data, tmp_path):
    data = tiny_data.attrs["manifest_dir"]
    result = runner.invoke(app, ["manifest", "export-csv", data, "--per-class", "--out", str(tmp_path / "csv")])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "csv").glob("*.csv"))
    assert files == ["A.csv", "C.csv", "G.csv"]
    g = pd.read_csv(tmp_path / "csv/G.csv")
    assert list(g.columns[:2]) == ["filename", "labels"] and set(REQUIRED) <= set(g.columns)
    assert len(g) == 16 and set(g["labels"]) == {"['G']"} and g["filename"].iloc[0] == "G000_left.png"
    csvs = [str(tmp_path / "csv" / f) for f in files]
    result = runner.invoke(app, ["manifest", "concat", *csvs, "-o", str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    back = load_manifest(tmp_path / "back").sort_values("path").reset_index(drop=True)
    orig = tiny_data.sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(back[list(REQUIRED)], orig[list(REQUIRED)])


def test_concat_manifests_and_duplicates(tiny_data, tmp_path):
    other = make_dataset(tmp_path / "other", classes=("H", "M"), patients_per_class=4)
    both = concat([tiny_data.attrs["manifest_dir"], tmp_path / "other"], tmp_path / "both")
    assert len(both) == 48 + 16 and set(both["label"]) == {"G", "C", "A", "H", "M"}
    assert load_manifest(tmp_path / "both")["path"].tolist() == both["path"].tolist()
    with pytest.raises(ManifestError, match="duplicate path"):
        concat([tmp_path / "other", tmp_path / "other"], tmp_path / "dup")
    export_csv(other, tmp_path / "one")
    assert len(pd.read_csv(tmp_path / "one/manifest.csv")) == 16


def test_relative_csv_paths_cannot_escape(tmp_path):
    pd.DataFrame(
        [dict(path="../x.jpg", label="G", patient_id="1", eye="left", split="train", origin="real", source="t")]
    ).to_csv(tmp_path / "bad.csv", index=False)
    result = runner.invoke(app, ["manifest", "concat", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "escapes its data folder" in " ".join(result.output.replace("│", " ").split())


def test_manifest_info(tiny_data):
    result = runner.invoke(app, ["manifest", "info", tiny_data.attrs["manifest_dir"]])
    assert result.exit_code == 0
    assert "48 images, 24 patients" in result.output
    assert "patients: train 12, val 6, test 6" in result.output and "origin: real 48" in result.output
