"""Image cache: built once, keyed by content identity and size, transforms applied at read time."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from retinaug.cache import apply_transform, image_cache, load_image
from retinaug.errors import RetinaugError


def _chunks(folder):
    return sorted(folder.glob("images-*px-*.npy"))


def test_cache_values_reuse_and_incremental_chunks(tiny_data, tmp_path):
    folder = tmp_path / "cache"
    cache = image_cache(tiny_data, 16, folder)
    assert len(cache) == len(tiny_data)
    first = tiny_data["path"].iloc[0]
    np.testing.assert_array_equal(cache.get(first), load_image(first, 16))
    assert cache.get(first).dtype == np.uint8 and cache.get(first).shape == (16, 16, 3)
    assert len(_chunks(folder)) == 1
    image_cache(tiny_data, 16, folder)
    image_cache(tiny_data[tiny_data["split"] == "train"], 16, folder)  # a subset: nothing decoded again
    assert len(_chunks(folder)) == 1
    image_cache(tiny_data, 8, folder)  # another resolution -> another chunk
    assert len(_chunks(folder)) == 2


def test_only_new_images_are_decoded(tiny_data, tmp_path):
    folder = tmp_path / "cache"
    image_cache(tiny_data.iloc[:10], 16, folder)
    both = image_cache(tiny_data, 16, folder)
    sizes = sorted(np.load(f, mmap_mode="r").shape[0] for f in _chunks(folder))
    assert sizes == [10, len(tiny_data) - 10]
    np.testing.assert_array_equal(both.rows(tiny_data)[12], load_image(tiny_data["path"].iloc[12], 16))


def test_cache_invalidated_when_an_image_changes(tiny_data, tmp_path):
    folder = tmp_path / "cache"
    image_cache(tiny_data, 16, folder)
    path = tiny_data["path"].iloc[0]
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    fresh = image_cache(tiny_data, 16, folder)
    assert int(fresh.get(path).max()) == 7
    assert len(_chunks(folder)) == 2  # only the changed image was decoded again


def test_index_is_read_once_per_state_of_the_cache_folder(tiny_data, tmp_path, monkeypatch):
    """Every stage and fit reads the index of a cache that every run shares (issue 31): with nothing changed the
    index is not rebuilt nor any sidecar parsed again; a new chunk, a rewritten sidecar or a removed array is seen."""
    import json

    from retinaug import cache

    parsed = []
    monkeypatch.setattr(cache.json, "loads", lambda text: parsed.append(1) or json.JSONDecoder().decode(text))
    folder = tmp_path / "cache"
    image_cache(tiny_data.iloc[:10], 16, folder)
    first = cache._read_index(folder, 16)
    assert len(first) == 10 and cache._read_index(folder, 16) is first and len(parsed) == 1
    image_cache(tiny_data, 16, folder)  # a second chunk: the first one is not parsed again
    second = cache._read_index(folder, 16)
    assert len(second) == len(tiny_data) and len(parsed) == 2
    sidecar = next(f for f in folder.glob("images-16px-*.json") if len(json.loads(f.read_text())["paths"]) == 10)
    record = json.loads(sidecar.read_text())
    cache.write_json_atomic(sidecar, {**record, "decoder": "another"})  # rewritten: its rows are another decoder's
    assert len(cache._read_index(folder, 16)) == len(tiny_data) - 10
    cache.write_json_atomic(sidecar, record)
    assert len(cache._read_index(folder, 16)) == len(tiny_data)
    sidecar.with_suffix(".npy").unlink()  # the array gone: its images are decoded again, right
    again = image_cache(tiny_data, 16, folder)
    np.testing.assert_array_equal(again.get(tiny_data["path"].iloc[3]), load_image(tiny_data["path"].iloc[3], 16))
    assert len(_chunks(folder)) == 2


def test_missing_image_is_a_clear_error(tiny_data):
    os.remove(tiny_data["path"].iloc[3])
    with pytest.raises(RetinaugError, match="not found"):
        image_cache(tiny_data, 16)


def test_non_square_images_are_padded_not_stretched(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :] = 200
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 40)
    assert out.shape == (40, 40, 3)
    assert out[0, 20].max() == 0 and out[20, 20].min() == 200  # black bars top/bottom, image in the middle


def test_transforms_on_a_known_image():
    img = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)  # [[0,1,2],[3,4,5]]
    assert apply_transform(img, "hflip")[:, :, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert apply_transform(img, "vflip")[:, :, 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    assert apply_transform(img, "rot90")[:, :, 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # counter-clockwise
    assert apply_transform(img, "rot180")[:, :, 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert apply_transform(img, "hflip+vflip").tolist() == apply_transform(img, "rot180").tolist()
    assert apply_transform(img, None) is img
    with pytest.raises(RetinaugError, match="unknown transform 'shear'"):
        apply_transform(img, "shear")


def test_rows_apply_each_rows_transform(tiny_data):
    df = tiny_data.head(2).copy()
    df["transform"] = ["hflip", None]
    cache = image_cache(tiny_data, 16)
    rows = cache.rows(df)
    np.testing.assert_array_equal(rows[0], cache.get(df["path"].iloc[0])[:, ::-1])
    np.testing.assert_array_equal(rows[1], cache.get(df["path"].iloc[1]))
