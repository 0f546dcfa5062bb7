"""Pixels and YAML read right (issue 26): cache keys, EXIF orientation, multi-frame files, strict YAML, xlsx flags."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_ingest import challenge_dataset, kaggle_dataset, write_image
from typer.testing import CliRunner

from retinaug.cache import image_cache, open_rgb
from retinaug.cli import app
from retinaug.config import apply_set, load_config
from retinaug.errors import RetinaugError
from retinaug.ingest import FolderConfig, OdirConfig, prepare_folder, prepare_odir
from retinaug.ingest.checks import check_image


def bmp_bytes(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="BMP")  # uncompressed: same size for every colour
    return buf.getvalue()


# --- row 6: the decoded-image cache sees an in-place rewrite that keeps size and mtime -------------------------------


def test_cache_decodes_again_after_rewrite_in_place_with_same_size_and_mtime(tmp_path):
    path = tmp_path / "eye.bmp"
    path.write_bytes(bmp_bytes((255, 0, 0)))
    df = pd.DataFrame({"path": [str(path)]})
    assert image_cache(df, 16, tmp_path / "cache").get(str(path))[0, 0].tolist() == [255, 0, 0]
    before = os.stat(path)
    with open(path, "r+b") as f:  # the same inode, the same number of bytes
        f.write(bmp_bytes((0, 0, 255)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime set back
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns  # what the file system records of the write
    assert image_cache(df, 16, tmp_path / "cache").get(str(path))[0, 0].tolist() == [0, 0, 255]  # (was: stale red)


# --- row 8: EXIF orientation --------------------------------------------------------------------------------------


def test_portrait_jpeg_with_exif_orientation_loads_upright_everywhere(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 0))  # stored sideways: black left half, white right half
    stored.paste((255, 255, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "portrait.jpg"
    stored.save(path, exif=exif, quality=95)

    upright = np.asarray(open_rgb(path)).astype(int)
    assert upright.shape == (40, 20, 3)  # (was: 20 x 40, sideways)
    assert upright[:18].max() < 40 and upright[22:].min() > 215  # black on top, white below
    check = check_image(str(path), min_size=1)
    assert (check.width, check.height) == (20, 40)
    cached = image_cache(pd.DataFrame({"path": [str(path)]}), 40, tmp_path / "cache").get(str(path)).astype(int)
    assert cached[5:15, 15:25].max() < 40 and cached[25:35, 15:25].min() > 215  # padded left and right, upright


# --- row 11: multi-frame TIFF / GIF: the first frame kept, and counted ---------------------------------------------


def write_frames(path: Path, frames: int = 3, size: int = 80) -> None:
    pages = [Image.fromarray(np.full((size, size, 3), 60 * k, np.uint8)) for k in range(frames)]
    pages[0].save(path, save_all=True, append_images=pages[1:])


def folder_with_multi_frame(root: Path) -> str:
    for k in range(4):
        for e, eye in enumerate(("left", "right")):
            write_image(root / "glaucoma" / f"g{k}_{eye}.png", seed=2 * k + e)
            write_image(root / "normal" / f"n{k}_{eye}.png", seed=100 + 2 * k + e)
    (root / "glaucoma" / "g0_left.png").unlink()
    write_frames(root / "glaucoma" / "g0_left.tif")
    return "g0_left.tif"


def odir_with_multi_frame(root: Path) -> str:
    table = kaggle_dataset(root, n_patients=8)
    (root / "preprocessed_images" / "1_left.jpg").unlink()
    write_frames(root / "preprocessed_images" / "1_left.gif")
    table.loc[table["filename"] == "1_left.jpg", "filename"] = "1_left.gif"
    table.to_csv(root / "full_df.csv", index=False)
    return "1_left.gif"


@pytest.mark.parametrize(
    "make, prepare, settings",
    [(folder_with_multi_frame, prepare_folder, FolderConfig), (odir_with_multi_frame, prepare_odir, OdirConfig)],
)
def test_multi_frame_images_keep_the_first_frame_and_are_counted(tmp_path, caplog, make, prepare, settings):
    name = make(tmp_path / "ds")
    caplog.set_level(logging.INFO, logger="retinaug")
    df = prepare(tmp_path / "ds", settings(val=0.25, test=0.25), tmp_path / "out")
    assert df["path"].str.endswith(name).sum() == 1
    assert json.loads((tmp_path / "out/summary.json").read_text())["multi_frame"] == 1  # (was: no count)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "multi-frame images (TIFF pages / GIF frames: only the first frame is used): 1" in logged
    assert np.asarray(open_rgb(df.loc[df["path"].str.endswith(name), "path"].iloc[0])).max() == 0  # frame 1 is black


# --- rows 9, 13a, 15b: the YAML loader --------------------------------------------------------------------------------

LAUGHS = b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nname: *c\n"  # billion laughs, 3 levels deep


@pytest.mark.parametrize(
    "text, message",
    [
        (
            b"experiments:\n  seeds: 1\nname: x\n\nexperiments:\n  seeds: 2\n",
            "line 5: key 'experiments' appears twice (first at line 1); remove one of them",
        ),
        (b"data:\n  seed: 1\n  val: 0.2\n  seed: 2\n", "line 4: key 'seed' appears twice (first at line 2)"),
        (b"data: {seed: 1, seed: 2}\n", "line 1: key 'seed' appears twice (first at line 1)"),
        (LAUGHS, "line 2: YAML aliases are not accepted (*a); write the value out instead"),
        (b"name: caf\xe9\n", "line 1: byte 0xe9 is not UTF-8 text; re-save the file as UTF-8"),
    ],
    ids=["duplicate-section", "duplicate-nested-key", "duplicate-in-flow-mapping", "alias", "latin-1"],
)
def test_yaml_config_refuses_duplicate_keys_aliases_and_non_utf8(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_bytes(text)
    with pytest.raises(RetinaugError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"config file {path} {message}")


def test_cli_prints_a_config_that_is_not_utf8_as_one_error_line(tmp_path):
    (tmp_path / "run.yaml").write_bytes(b"name: caf\xe9\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--dry-run"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # (was: a UnicodeDecodeError traceback)
    said = " ".join(result.output.replace("│", " ").split())  # rich's error box as one line
    assert "line 1: byte 0xe9 is not UTF-8 text; re-save the file as UTF-8" in said and not (tmp_path / "run").exists()


def test_set_override_refuses_duplicate_keys_and_aliases():
    with pytest.raises(
        RetinaugError, match=r"--set 'data=\{seed: 1, seed: 2\}': value line 1: key 'seed' appears twice"
    ):
        apply_set({}, "data={seed: 1, seed: 2}")
    with pytest.raises(RetinaugError, match=r"YAML aliases are not accepted \(\*a\)"):
        apply_set({}, "name=[&a [1, 1], *a, *a]")


def test_validation_messages_quote_a_bounded_part_of_the_input(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"name: {list(range(100_000))}\n" + "".join(f"typo{k}: 1\n" for k in range(30)))
    with pytest.raises(RetinaugError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "name: Input should be a valid string (got [0, 1, 2, 3, 4, 5, ...])" in message  # (was: all 100,000)
    assert "typo18: unknown key" in message and "typo19" not in message
    assert message.endswith("... and 11 more problem(s)") and len(message) < 3000


# --- row 15a: challenge-layout flag cells that are not 0/1 --------------------------------------------------------


@pytest.mark.parametrize("cell", ["inf", "1e400", "2", "yes"])
def test_challenge_flag_cell_not_0_or_1_is_a_rejected_row_naming_file_row_and_column(tmp_path, cell):
    import openpyxl

    root = tmp_path / "odir"
    challenge_dataset(root)
    xlsx = root / "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
    wb = openpyxl.load_workbook(xlsx)
    wb.active["J3"] = cell  # patient 1 (Excel row 3), flag G (column J)
    wb.save(xlsx)
    # (was: OverflowError for inf/1e400; '2' read as 0)
    df = prepare_odir(root, OdirConfig(val=0.2, test=0.2), tmp_path / "out")
    assert "1" not in set(df["patient_id"])
    rejected = pd.read_csv(tmp_path / "out/rejected.csv")
    rejected = rejected[rejected["row"] == 3]
    assert rejected["reason"].tolist() == ["unknown label"] * 2  # both eyes of patient 1
    assert set(rejected["detail"]) == {f"{xlsx.name} column J (flag G) holds {cell!r}, not 0 or 1"}
