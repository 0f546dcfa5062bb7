"""Ingestion: ODIR (Kaggle + challenge layouts), keyword labels, class folders, image checks, bad input."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SHARED_ODIR
from PIL import Image
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import RetinaugError, validated
from retinaug.ingest import FolderConfig, OdirConfig, prepare_folder, prepare_odir
from retinaug.ingest.keywords import eye_classes, keyword_class, primary_class
from retinaug.manifest import load_manifest
from retinaug.split import check_split

KW_COLS = ["Left-Diagnostic Keywords", "Right-Diagnostic Keywords"]


def write_image(path: Path, seed: int, size: int = 80, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, quality=90)


def kaggle_dataset(root: Path, n_patients: int = 12) -> pd.DataFrame:
    """A Kaggle-layout ODIR folder: patient i has a cataract in the left eye and a normal right eye
    (Kaggle label C for both), except every 4th patient who is normal in both eyes."""
    rows = []
    for i in range(1, n_patients + 1):
        sick = i % 4 != 0
        left = "cataract" if sick else "normal fundus"
        for eye in ("left", "right"):
            write_image(root / "preprocessed_images" / f"{i}_{eye}.jpg", seed=i * 2 + (eye == "right"))
            rows.append(
                {
                    "ID": i,
                    "Left-Diagnostic Keywords": left,
                    "Right-Diagnostic Keywords": "normal fundus",
                    "labels": "['C']" if sick else "['N']",
                    "filename": f"{i}_{eye}.jpg",
                }
            )
    df = pd.DataFrame(rows)
    df.to_csv(root / "full_df.csv", index=False)
    return df


@pytest.mark.parametrize(
    "keywords, codes",
    [
        ("normal fundus", ["N"]),
        ("moderate non proliferative retinopathy", ["D"]),
        ("mild nonproliferative retinopathy，lens dust", ["D"]),
        ("severe proliferative diabetic retinopathy", ["D"]),
        ("suspected glaucoma", ["G"]),
        ("cataract", ["C"]),
        ("dry age-related macular degeneration", ["A"]),
        ("drusen", ["O"]),
        ("hypertensive retinopathy", ["H"]),
        ("pathological myopia,peripapillary atrophy", ["M"]),
        ("tessellated fundus", ["O"]),
        ("normal fundus，lens dust", ["N"]),
        ("moderate non proliferative retinopathy，laser spot", ["D", "O"]),
        ("low image quality，lens dust", []),
        ("anterior segment image", []),
        ("", []),
    ],
)
def test_keyword_mapping(keywords, codes):
    assert eye_classes(keywords) == codes


def test_keyword_helpers():
    assert keyword_class("optic disk photographically invisible") is None
    assert keyword_class("Macular  Epiretinal Membrane") == "O"
    assert primary_class(["D", "O"]) == "D" and primary_class(["D", "H"]) == "D" and primary_class(["N", "O"]) == "N"


def test_kaggle_layout_both_label_sources(tmp_path):
    kaggle_dataset(tmp_path / "odir")
    patient = prepare_odir(tmp_path / "odir", OdirConfig(labels="kaggle", val=0.25, test=0.25), tmp_path / "a")
    assert len(patient) == 24 and patient["patient_id"].nunique() == 12
    assert (patient.set_index("path").loc[str(tmp_path / "odir/preprocessed_images/1_right.jpg"), "label"]) == "C"
    per_eye = prepare_odir(tmp_path / "odir", OdirConfig(labels="keywords", val=0.25, test=0.25), tmp_path / "b")
    labels = per_eye.set_index("path")["label"]
    assert labels[str(tmp_path / "odir/preprocessed_images/1_left.jpg")] == "C"
    assert labels[str(tmp_path / "odir/preprocessed_images/1_right.jpg")] == "N"  # the Kaggle label was C
    assert per_eye["label"].value_counts().to_dict() == {"N": 15, "C": 9}
    assert check_split(per_eye) == []
    saved = load_manifest(tmp_path / "b")  # stored relative to the dataset folder, never copied
    assert saved["path"].tolist() == per_eye["path"].tolist()
    assert not list((tmp_path / "b").glob("**/*.jpg"))


def test_bad_input_is_counted_with_reasons_and_rows(tmp_path):
    root = tmp_path / "odir"
    df = kaggle_dataset(root)
    images = root / "preprocessed_images"
    (images / "1_left.jpg").write_bytes((images / "1_left.jpg").read_bytes()[:300])  # truncated JPEG
    (images / "2_left.jpg").write_bytes(b"not an image at all")
    (images / "2_right.jpg").write_bytes(b"")
    (images / "3_left.jpg").unlink()
    write_image(images / "3_right.jpg", seed=99, size=32)  # below --min-size
    write_image(images / "5_left.jpg", seed=98, mode="L")  # grayscale: kept, converted when loaded
    shutil.copyfile(images / "6_left.jpg", images / "7_left.jpg")  # exact duplicate, two patients
    write_image(tmp_path / "outside.jpg", seed=97)
    extra = pd.DataFrame(
        [
            {"ID": 20, **dict.fromkeys(KW_COLS, "normal fundus"), "labels": "['N']", "filename": ""},
            {"ID": 21, **dict.fromkeys(KW_COLS, "normal fundus"), "labels": "['X']", "filename": "13_left.jpg"},
            {"ID": 22, **dict.fromkeys(KW_COLS, "normal fundus"), "labels": "['N']", "filename": "../../outside.jpg"},
            {"ID": 23, **dict.fromkeys(KW_COLS, "lens dust"), "labels": "['N']", "filename": "8_right.jpg"},
            {"ID": 8, **dict.fromkeys(KW_COLS, "normal fundus"), "labels": "['N']", "filename": "8_left.jpg"},
        ]
    )
    df = df[~df["filename"].isin(["8_left.jpg", "8_right.jpg"])]
    pd.concat([df, extra]).to_csv(root / "full_df.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(
        app, ["prepare", "odir", str(root), "--out", str(tmp_path / "run/data"), "--val", "0.2", "--test", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "skipped 9" in result.output and "undecodable" in result.output
    rejected = pd.read_csv(tmp_path / "run/data/rejected.csv")
    by_row = dict(zip(rejected["row"], rejected["reason"]))
    assert by_row == {
        2: "undecodable",
        4: "undecodable",
        5: "empty file",
        6: "missing file",
        7: "too small",
        24: "bad row",
        25: "unknown label",
        26: "unsafe path",
        27: "non-fundus",
    }
    assert "escapes its data folder" in rejected.loc[rejected["row"] == 26, "detail"].item()
    assert "empty filename" in rejected.loc[rejected["row"] == 24, "detail"].item()
    summary = json.loads((tmp_path / "run/data/summary.json").read_text())
    assert summary["rows"] == 22 + 5 - 9
    assert summary["rejected"]["undecodable"] == 2 and summary["rejected_total"] == 9
    assert summary["converted_to_rgb"] == 1
    assert summary["duplicates"]["groups"] == 1 and summary["duplicates"]["extra_files"] == 1
    manifest = load_manifest(tmp_path / "run/data")
    dup = manifest[manifest["path"].str.endswith(("6_left.jpg", "7_left.jpg"))]
    assert dup["sha256"].nunique() == 1 and dup["split"].nunique() == 1  # duplicates never straddle splits
    assert check_split(manifest) == []


def test_missing_columns_and_wrong_folder(tmp_path):
    kaggle_dataset(tmp_path / "odir").drop(columns=["labels"]).to_csv(tmp_path / "odir/full_df.csv", index=False)
    with pytest.raises(RetinaugError, match="lacks column\\(s\\) labels"):
        prepare_odir(tmp_path / "odir", OdirConfig(), tmp_path / "out")
    with pytest.raises(RetinaugError, match="not an ODIR-5K folder"):
        prepare_odir(tmp_path, OdirConfig(), tmp_path / "out")
    with pytest.raises(RetinaugError, match="labels: Input should be 'kaggle' or 'keywords'"):
        validated(OdirConfig, {"labels": "flags"}, "odir settings")  # the config refuses it


def challenge_dataset(root: Path) -> None:
    """The original challenge layout: one xlsx row per patient, images in 'Training Images/'."""
    import openpyxl

    codes = list("NDGCAHMO")
    header = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", *KW_COLS, *codes]
    patients = [
        (0, "cataract", "normal fundus", "C"),
        (1, "normal fundus", "glaucoma", "G"),
        (2, "moderate non proliferative retinopathy，laser spot", "mild nonproliferative retinopathy", "DO"),
        (3, "normal fundus", "normal fundus", "N"),
        (4, "dry age-related macular degeneration", "normal fundus", "A"),
        *((k, "normal fundus", "normal fundus", "N") for k in range(5, 10)),
    ]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for pid, left, right, flags in patients:
        ws.append(
            [pid, 60, "Female", f"{pid}_left.jpg", f"{pid}_right.jpg", left, right, *[int(c in flags) for c in codes]]
        )
        for k, eye in enumerate(("left", "right")):
            write_image(root / "Training Images" / f"{pid}_{eye}.jpg", seed=pid * 2 + k)
    wb.save(root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx")


def test_challenge_layout_per_eye_labels_and_multilabel(tmp_path):
    challenge_dataset(tmp_path / "odir")
    df = prepare_odir(tmp_path / "odir", OdirConfig(labels="keywords", val=0.2, test=0.2), tmp_path / "kw")
    label = {Path(p).name: lab for p, lab in zip(df["path"], df["label"])}
    assert label["0_left.jpg"] == "C" and label["0_right.jpg"] == "N" and label["1_right.jpg"] == "G"
    assert "2_left.jpg" not in label and label["2_right.jpg"] == "D"
    rejected = pd.read_csv(tmp_path / "kw/rejected.csv")
    assert rejected[["row", "reason"]].values.tolist() == [[4, "multi-label"]]  # Excel row of patient 2
    assert (df["eye"] == df["path"].str.extract(r"_(left|right)")[0]).all()

    flags = prepare_odir(tmp_path / "odir", OdirConfig(labels="kaggle", val=0.2, test=0.2), tmp_path / "flags")
    assert len(flags) == 18 and set(flags.loc[flags["patient_id"] == "0", "label"]) == {"C"}

    multi = prepare_odir(
        tmp_path / "odir", OdirConfig(labels="keywords", allow_multilabel=True, val=0.2, test=0.2), tmp_path / "multi"
    )
    row = multi[multi["path"].str.endswith("2_left.jpg")].iloc[0]
    assert (row["label"], row["findings"]) == ("D", "D,O") and len(multi) == 20


def test_folder_ingestion_with_mapping_and_patient_regex(tmp_path):
    root = tmp_path / "folders"
    for k in range(6):
        for eye in ("L", "R"):
            write_image(root / "glaucoma" / f"p{k}_{eye}.png", seed=k * 2 + (eye == "R"))
            write_image(root / "Katarakt" / f"q{k}_{eye}.jpg", seed=100 + k * 2 + (eye == "R"))
            write_image(root / "n" / f"r{k}_{eye}.bmp", seed=200 + k * 2 + (eye == "R"))
    (root / "n" / "notes.txt").write_text("not an image")
    runner = CliRunner()
    out = tmp_path / "run/data"
    args = [
        "prepare",
        "folder",
        str(root),
        "--out",
        str(out),
        "--map",
        "katarakt=C",
        "--patient-regex",
        r"^(\w+)_[LR]$",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    df = load_manifest(out)
    assert df["label"].value_counts().to_dict() == {"G": 12, "C": 12, "N": 12}
    assert df["patient_id"].nunique() == 18 and df.groupby("patient_id")["split"].nunique().max() == 1
    assert set(df["eye"]) == {"unknown"}
    assert pd.read_csv(out / "rejected.csv")["reason"].tolist() == ["not an image file"]
    stems = prepare_folder(root, FolderConfig(mapping={"Katarakt": "C"}), tmp_path / "stems")
    assert stems["patient_id"].nunique() == 18  # default: `<patient>_<L|R>` names are grouped, and give the eye
    assert stems.groupby("patient_id")["eye"].apply(sorted).map(tuple).unique().tolist() == [("left", "right")]
    with pytest.raises(RetinaugError, match="folder\\(s\\) Katarakt .* --map 'Katarakt=CODE'"):
        prepare_folder(root, FolderConfig(), tmp_path / "x")
    with pytest.raises(RetinaugError, match="mapping: --map katarakt=Q: unknown class code"):
        validated(FolderConfig, {"mapping": "katarakt=Q"}, "folder settings")  # the config refuses it


ONLY_DATA = [
    "generator.enabled=false",
    "labeler.enabled=false",
    "selection.enabled=false",
    "augment.enabled=false",
    "experiments.enabled=false",
    "quality.enabled=false",
]


def _same_manifest(a: Path, b: Path) -> pd.DataFrame:
    left, right = load_manifest(a), load_manifest(b)
    pd.testing.assert_frame_equal(left, right)
    return left


def test_run_with_keyword_labels_equals_prepare_odir(tmp_path):
    kaggle_dataset(tmp_path / "odir")
    runner = CliRunner()
    prepared = runner.invoke(
        app,
        [
            "prepare",
            "odir",
            str(tmp_path / "odir"),
            "--out",
            str(tmp_path / "prep"),
            "--labels",
            "keywords",
            "--val",
            "0.25",
            "--test",
            "0.25",
            "--seed",
            "3",
        ],
    )
    assert prepared.exit_code == 0, prepared.output
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"source": "odir", "path": str(tmp_path / "odir"), "val": 0.25, "test": 0.25, "seed": 3}}
        )
    )
    sets = [a for s in ["data.labels=keywords", *ONLY_DATA] for a in ("--set", s)]
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), *sets])
    assert result.exit_code == 0, result.output
    df = _same_manifest(tmp_path / "prep", tmp_path / "run" / "data")
    assert (
        df.set_index("path").loc[str(tmp_path / "odir/preprocessed_images/1_right.jpg"), "label"] == "N"
    )  # kaggle says C
    assert json.loads((tmp_path / "run/data/summary.json").read_text())["labels"] == "keywords"
    kaggle = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "run2"), *sets[2:]])
    assert kaggle.exit_code == 0 and load_manifest(tmp_path / "run2" / "data")["label"].value_counts().to_dict() == {
        "C": 18,
        "N": 6,
    }


def test_run_with_folder_map_and_patient_regex_equals_prepare_folder(tmp_path):
    root = tmp_path / "folders"
    for k in range(4):
        for eye in ("L", "R"):
            write_image(root / "glau" / f"p{k}_{eye}.png", seed=k * 2 + (eye == "R"))
            write_image(root / "Katarakt" / f"q{k}_{eye}.jpg", seed=100 + k * 2 + (eye == "R"))
    runner = CliRunner()
    prepared = runner.invoke(
        app,
        [
            "prepare",
            "folder",
            str(root),
            "--out",
            str(tmp_path / "prep"),
            "--map",
            "glau=G,katarakt=C",
            "--patient-regex",
            r"^(\w+)_[LR]$",
            "--min-size",
            "32",
            "--val",
            "0.25",
            "--test",
            "0.25",
        ],
    )
    assert prepared.exit_code == 0, prepared.output
    config = tmp_path / "run.yaml"  # the map as a YAML mapping, as a config file holds it
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "source": "folder",
                    "path": str(root),
                    "mapping": {"glau": "G", "Katarakt": "C"},
                    "patient_regex": r"^(\w+)_[LR]$",
                    "min_size": 32,
                    "val": 0.25,
                    "test": 0.25,
                }
            }
        )
    )
    args = ["run", str(config), "--out", str(tmp_path / "run"), *[a for s in ONLY_DATA for a in ("--set", s)]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    df = _same_manifest(tmp_path / "prep", tmp_path / "run" / "data")
    assert df["patient_id"].nunique() == 8 and set(df["label"]) == {"G", "C"}


@pytest.mark.skipif(not (SHARED_ODIR / "full_df.csv").is_file(), reason="shared ODIR copy not available")
def test_real_odir(tmp_path):
    started = time.perf_counter()
    df = prepare_odir(SHARED_ODIR, OdirConfig(labels="kaggle"), tmp_path / "data")
    assert len(df) == 4936 and df["patient_id"].nunique() == 2584
    assert df["label"].value_counts().to_dict() == {
        "N": 2248,
        "D": 1278,
        "O": 540,
        "C": 204,
        "A": 195,
        "G": 195,
        "M": 180,
        "H": 96,
    }
    result = CliRunner().invoke(app, ["check-split", str(tmp_path / "data")])
    assert result.exit_code == 0 and result.output.startswith("OK: 4936 images of 2584 patients")
    summary = json.loads((tmp_path / "data/summary.json").read_text())
    assert summary["rejected_total"] == 0 and summary["leakage"] == []
    assert time.perf_counter() - started < 60


def test_folder_groups_both_eyes_by_default(tmp_path):
    """`<id>_left.jpg` / `<id>_right.jpg` (and L/R, OD/OS in any case, '-' or '_') are one patient without options;
    other names are their own patients, and the summary says which rule grouped how many files."""
    root = tmp_path / "ds"
    for k in range(6):
        write_image(root / "cataract" / f"{k}_left.jpg", seed=k)
        write_image(root / "cataract" / f"{k}_right.jpg", seed=50 + k)
        write_image(root / "glaucoma" / f"P{k}-OD.JPG", seed=100 + k)
        write_image(root / "normal" / f"P{k}_os.png", seed=150 + k)  # the same patient's other eye, another class
        write_image(root / "normal" / f"IMG_{k:04d}.jpg", seed=200 + k)  # no patient id in the name
    result = CliRunner().invoke(app, ["prepare", "folder", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    df = load_manifest(tmp_path / "out")
    assert len(df) == 30 and df["patient_id"].nunique() == 18  # 6 + 6 grouped pairs, 6 own patients
    eyes = df.set_index(df["path"].map(lambda p: Path(p).name))["eye"]
    assert (eyes["0_left.jpg"], eyes["P0-OD.JPG"], eyes["P0_os.png"], eyes["IMG_0000.jpg"]) == (
        "left",
        "right",
        "left",
        "unknown",
    )
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    pair = df[df["patient_id"] == "P3"]
    assert sorted(pair["label"]) == ["G", "N"] and pair["split"].nunique() == 1
    grouping = json.loads((tmp_path / "out/summary.json").read_text())["patients_grouping"]
    assert grouping["files_matched"] == 24 and grouping["files_unmatched"] == 6 and grouping["patients"] == 18
    text = " ".join(result.output.split())
    assert (
        "patients: grouped by <patient>_<eye> in file names" in text
        and "6 unmatched file(s) are their own patients" in text
    )
    assert "6 file name(s) do not match the patient pattern" in text and "--unmatched reject" in text


def test_folder_patient_regex_and_unmatched_files(tmp_path):
    root = tmp_path / "ds"
    for k in range(8):
        for eye in ("a", "b"):
            write_image(root / "G" / f"{k}_{eye}.png", seed=2 * k + (eye == "b"))
        write_image(root / "N" / f"scan{k}.png", seed=100 + k)  # does not match '^(\d+)_'
    kept = prepare_folder(root, FolderConfig(patient_regex=r"^(\d+)_", val=0.25, test=0.25), tmp_path / "own")
    assert len(kept) == 24 and kept["patient_id"].nunique() == 16  # unmatched files kept as their own patients
    assert kept.loc[kept["label"] == "N", "patient_id"].str.startswith("N/scan").all()
    dropped = prepare_folder(
        root, FolderConfig(patient_regex=r"^(\d+)_", unmatched="reject", val=0.25, test=0.25), tmp_path / "rej"
    )
    assert (
        len(dropped) == 16 and pd.read_csv(tmp_path / "rej/rejected.csv")["reason"].tolist() == ["bad patient id"] * 8
    )
    with pytest.raises(RetinaugError, match="unmatched: Input should be 'own-patient' or 'reject'"):
        validated(FolderConfig, {"unmatched": "drop"}, "folder settings")  # the config refuses it


def test_folder_without_patient_ids_warns(tmp_path):
    root = tmp_path / "ds"
    for k in range(8):
        write_image(root / "G" / f"scan{k}.png", seed=k)
        write_image(root / "N" / f"photo{k}.png", seed=50 + k)
    result = CliRunner().invoke(app, ["prepare", "folder", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no patient id found in the file names: each of the 16 images is its own patient" in text
    assert "--patient-regex '^(\\d+)_'" in text
    assert "patients: none found in the file names: every image is its own patient" in text
