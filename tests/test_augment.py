"""Traditional augmentation: exact counts per ratio, distinct (parent, transform) pairs, correct pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retinaug.augment import MAX_RATIO, AugmentConfig, augment
from retinaug.cache import image_cache
from retinaug.errors import RetinaugError
from retinaug.manifest import load_manifest, new_manifest, save_manifest


def _real_train(df, code):
    return df[(df["label"] == code) & (df["split"] == "train") & (df["origin"] == "real")]


@pytest.mark.parametrize("ratio", [0.5, 1, 2, MAX_RATIO])
def test_exact_counts_and_no_duplicates(tiny_data, tmp_path, ratio):
    rows = augment(tiny_data, AugmentConfig(ratio=ratio, classes=("G", "C"), seed=0), tmp_path / "aug")
    for code in ("G", "C"):
        n = len(_real_train(tiny_data, code))
        assert (rows["label"] == code).sum() == int(np.floor(ratio * n + 0.5))
    assert not rows.duplicated(["parent", "transform"]).any()
    assert set(rows["origin"]) == {"traditional"} and set(rows["split"]) == {"train"}
    assert (rows["path"] == rows["parent"]).all()
    parents = tiny_data.set_index("path")
    assert (parents.loc[rows["parent"], "patient_id"].to_numpy() == rows["patient_id"].to_numpy()).all()
    assert set(parents.loc[rows["parent"], "split"]) == {"train"}
    assert "A" not in set(rows["label"])
    if ratio == MAX_RATIO:  # every image gets all 7 distinct symmetries
        assert (rows.groupby("parent")["transform"].nunique() == MAX_RATIO).all()
    saved = load_manifest(tmp_path / "aug")
    assert len(saved) == len(rows) and (tmp_path / "aug" / "summary.json").is_file()


def test_deterministic_and_seeded(tiny_data):
    a = augment(tiny_data, AugmentConfig(ratio=1.5, classes=("G",), seed=3))
    b = augment(tiny_data, AugmentConfig(ratio=1.5, classes=("G",), seed=3))
    c = augment(tiny_data, AugmentConfig(ratio=1.5, classes=("G",), seed=4))
    key = lambda df: list(zip(df["parent"], df["transform"]))  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)
    # the seed's three transforms come first: at ratio 1.5 no image needs a fourth
    assert set(a["transform"]) <= {"hflip", "vflip", "rot90"}


def test_ratio_beyond_distinct_transforms_is_refused(tiny_data):
    with pytest.raises(RetinaugError, match="only 7 distinct"):
        augment(tiny_data, AugmentConfig(ratio=8, classes=("G",)))
    with pytest.raises(RetinaugError, match="no real training images of class"):
        augment(tiny_data, AugmentConfig(ratio=1, classes=("M",)))


@pytest.fixture
def marker_data(tmp_path):
    """One training image, 8x8, black with a red pixel at the top-left corner and a green one right of it."""
    img = np.zeros((8, 8, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    img[0, 1] = (0, 255, 0)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.fromarray(img).save(root / "images" / "one.png")
    row = dict(
        path=str(root / "images" / "one.png"),
        label="G",
        patient_id="p1",
        eye="left",
        split="train",
        origin="real",
        source="t",
    )
    save_manifest(new_manifest([row]), root)
    return load_manifest(root)


# (row, col) of the red and the green marker after each transform of an 8x8 image (rotations counter-clockwise)
EXPECTED = {
    "hflip": ((0, 7), (0, 6)),
    "vflip": ((7, 0), (7, 1)),
    "rot90": ((7, 0), (6, 0)),
    "rot180": ((7, 7), (7, 6)),
    "rot270": ((0, 7), (1, 7)),
    "hflip+rot90": ((0, 0), (1, 0)),
    "hflip+rot270": ((7, 7), (6, 7)),
}


def test_transforms_move_pixels_where_expected(marker_data, tmp_path):
    rows = augment(marker_data, AugmentConfig(ratio=MAX_RATIO, classes=("G",)), tmp_path / "aug")
    assert set(rows["transform"]) == set(EXPECTED)
    cache = image_cache(marker_data, 8)
    for transform in rows["transform"]:
        img = cache.get(marker_data["path"].iat[0], transform)
        (rr, rc), (gr, gc) = EXPECTED[transform]
        assert tuple(img[rr, rc]) == (255, 0, 0), transform
        assert tuple(img[gr, gc]) == (0, 255, 0), transform
        assert int(img.sum()) == 2 * 255, transform


def test_write_files_writes_transformed_pngs(marker_data, tmp_path):
    rows = augment(marker_data, AugmentConfig(ratio=3, classes=("G",), write_files=True), tmp_path / "aug")
    assert rows["transform"].isna().all() and set(rows["file_transform"]) == {"hflip", "vflip", "rot90"}
    for path, transform in zip(rows["path"], rows["file_transform"]):
        assert path.startswith(str(tmp_path / "aug" / "images" / "G"))
        img = np.asarray(Image.open(path).convert("RGB"))
        (rr, rc), _ = EXPECTED[transform]
        assert tuple(img[rr, rc]) == (255, 0, 0)
    assert len(load_manifest(tmp_path / "aug")) == 3
