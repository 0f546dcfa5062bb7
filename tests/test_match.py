"""Similarity matcher: blocked top-k equals brute force; the table, SSIM and contact sheet on real files."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from retinaug.errors import RetinaugError, validated
from retinaug.features import extract_features, l2_normalise
from retinaug.manifest import load_manifest, save_manifest
from retinaug.quality.config import MatchConfig
from retinaug.quality.match import match, topk_cosine


def _brute(q, r, k):
    sims = q @ r.T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, 1), idx


@pytest.mark.parametrize("query_block,ref_block,k", [(7, 5, 4), (7, 5, 9), (1, 1, 3), (64, 64, 31), (4, 31, 1)])
def test_blocked_topk_equals_brute_force(query_block, ref_block, k):
    rng = np.random.default_rng(0)
    q = l2_normalise(rng.normal(size=(23, 16)))
    r = l2_normalise(rng.normal(size=(31, 16)))
    scores, idx = topk_cosine(q, r, k, query_block=query_block, ref_block=ref_block, backend="torch")
    want_s, want_i = _brute(q, r, k)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-6)


def test_topk_clamps_k_and_excludes_self_pairs():
    rng = np.random.default_rng(1)
    x = l2_normalise(rng.normal(size=(10, 8)))
    scores, idx = topk_cosine(x, x, 50, backend="torch")
    assert idx.shape == (10, 10) and (idx[:, 0] == np.arange(10)).all()  # itself first
    keys = np.array([f"img{i}" for i in range(10)], dtype=object)
    scores, idx = topk_cosine(x, x, 10, exclude=(keys, keys), query_block=3, ref_block=4, backend="torch")
    assert (idx[:, :9] != np.arange(10)[:, None]).all()  # never itself
    assert (idx[:, 9] == -1).all() and np.isneginf(scores[:, 9]).all()  # only 9 other images exist
    want_s, want_i = _brute(x, x, 10)
    np.testing.assert_array_equal(idx[:, :9], want_i[:, 1:])


def test_match_table_ssim_and_sheet(tiny_data, tmp_path):
    test = tiny_data[tiny_data["split"] == "test"].reset_index(drop=True)
    train = tiny_data[tiny_data["split"] == "train"].reset_index(drop=True)
    # plant an exact copy of a training image among the queries (a new file, same pixels)
    copy = tmp_path / "data" / "images" / "copy.png"
    shutil.copy(train["path"].iat[5], copy)
    query = pd.concat([test, test.iloc[:1].assign(path=str(copy), patient_id="copy")], ignore_index=True)
    save_manifest(query, tmp_path / "query")
    query = load_manifest(tmp_path / "query")

    table = match(query, train, MatchConfig(top_k=3, extractor="pixels"), tmp_path / "q")
    assert list(table.columns[:5]) == ["query", "rank", "match", "cosine", "ssim"]
    assert len(table) == len(query) * 3 and set(table["rank"]) == {1, 2, 3}
    # rank-1 equals the brute-force nearest neighbour in pixel space
    qf, rf = l2_normalise(extract_features(query, "pixels")), l2_normalise(extract_features(train, "pixels"))
    best = table[table["rank"] == 1].set_index("query")
    for i, path in enumerate(query["path"]):
        assert best.loc[path, "match"] == train["path"].iat[int(np.argmax(rf @ qf[i]))]
    planted = best.loc[str(copy)]
    assert planted["match"] == train["path"].iat[5]
    assert planted["cosine"] == pytest.approx(1.0, abs=1e-5) and planted["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert (best.drop(index=str(copy))["ssim"] < 0.9).all()  # noise images: structurally unlike each other
    assert table["cosine"].between(-1, 1.0001).all() and table["ssim"].between(-1, 1.0001).all()
    assert (table.groupby("query")["cosine"].apply(lambda s: s.is_monotonic_decreasing)).all()
    on_disk = pd.read_csv(tmp_path / "q" / "match.csv")
    assert len(on_disk) == len(table)
    assert (tmp_path / "q" / "match.png").stat().st_size > 1000


def test_match_with_itself_never_returns_the_same_image(tiny_data, tmp_path):
    table = match(tiny_data, tiny_data, MatchConfig(top_k=2, extractor="pixels", ssim_size=16))
    assert len(table) == 2 * len(tiny_data)
    assert not (table["query"] == table["match"]).any()
    with pytest.raises(RetinaugError, match="top_k: Input should be greater than or equal to 1"):
        validated(MatchConfig, {"top_k": 0, "extractor": "pixels"}, "match settings")


def test_faiss_backend_agrees_with_torch():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    x = l2_normalise(rng.normal(size=(20, 8)))
    r = l2_normalise(rng.normal(size=(15, 8)))
    keys_q = np.array([f"k{i}" for i in range(20)], dtype=object)
    keys_r = keys_q[:15]
    for exclude in (None, (keys_q, keys_r)):
        s_t, i_t = topk_cosine(x, r, 4, exclude=exclude, backend="torch")
        s_f, i_f = topk_cosine(x, r, 4, exclude=exclude, backend="faiss")
        np.testing.assert_array_equal(i_t, i_f)
        np.testing.assert_allclose(s_t, s_f, rtol=1e-5, atol=1e-6)
