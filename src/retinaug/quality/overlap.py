"""Near-duplicate images between two datasets: an external test set that holds resized copies of the training
images inflates every score, and file names and bytes do not reveal it.

Each image of A is embedded with the matcher's features (downscaled pixels by default), its top-k most similar
images of B are found by cosine (`topk_cosine`), and SSIM of the grey-level images at `ssim_size` px decides: a
pair with SSIM >= `threshold` is a near-copy. Grey levels carry the structure a copy keeps, cost a third of RGB,
and separate better: on the shared ODIR copy, resized (224-512 px) and re-encoded copies score >= 0.998 with
their original while the closest different image scores <= 0.92 (RGB: 0.983 / 0.905); phantom patients, which
look much alike, reach 0.96 between different patients and >= 0.993 for copies. Hence the default 0.97.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2.functional import rgb_to_grayscale

from ..cache import image_cache
from ..errors import RetinaugError
from ..features import FeatureExtractor, get_extractor, l2_normalise
from ..fields import OVERLAP_THRESHOLD
from ..io import atomic_path, make_dirs, write_json_atomic
from ..manifest import manifest_rows, split_rows
from .config import OverlapConfig
from .match import pair_ssim, topk_cosine
from .plots import contact_sheet

SHEET_PAIRS = 12  # closest pairs drawn in overlap.png
SSIM_BLOCK = 512  # pairs whose images are in memory at once


def _ssim_pairs(a: pd.DataFrame, b: pd.DataFrame, ia: np.ndarray, ib: np.ndarray, size: int) -> np.ndarray:
    """Grey-level SSIM of the image pairs (a[ia[k]], b[ib[k]]), loaded from the image cache a block at a time."""
    cache_a, cache_b = image_cache(a, size), image_cache(b, size)

    def unit(cache, df, rows) -> torch.Tensor:
        return rgb_to_grayscale(torch.from_numpy(cache.rows(df.iloc[rows])).permute(0, 3, 1, 2)).float().div_(255.0)

    out = [
        pair_ssim(unit(cache_a, a, ia[s : s + SSIM_BLOCK]), unit(cache_b, b, ib[s : s + SSIM_BLOCK]))
        for s in range(0, len(ia), SSIM_BLOCK)
    ]
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def find_overlap(
    a: pd.DataFrame,
    b: pd.DataFrame,
    threshold: float = OVERLAP_THRESHOLD,
    top_k: int = 3,
    extractor: str | Path | FeatureExtractor = "pixels",
    labeler: str | Path | None = None,
    ssim_size: int = 64,
) -> pd.DataFrame:
    """One row per image of `a`: its closest image of `b` (the best SSIM among its top-k cosine neighbours), with
    `duplicate` = SSIM >= `threshold`; most similar first. The same file in both sets is a duplicate too."""
    if not 0 < threshold <= 1:
        raise RetinaugError(f"--threshold is an SSIM between 0 and 1 (got {threshold})")
    if top_k < 1:
        raise RetinaugError(f"--top-k must be at least 1 (got {top_k})")
    if not len(a) or not len(b):
        raise RetinaugError(f"nothing to compare: the first set has {len(a)} image(s), the second {len(b)}")
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    ext = get_extractor(extractor, labeler)
    cosine, idx = topk_cosine(l2_normalise(ext(a)), l2_normalise(ext(b)), top_k)
    ia = np.repeat(np.arange(len(a)), idx.shape[1])
    ssim = _ssim_pairs(a, b, ia, idx.ravel(), max(ssim_size, 11)).reshape(idx.shape)  # 11 px: SSIM's window
    best = ssim.argmax(axis=1)
    rows = np.arange(len(a))
    ib = idx[rows, best]
    table = pd.DataFrame(
        {
            "a_path": a["path"].astype(str).to_numpy(),
            "a_label": a["label"].astype(str).to_numpy(),
            "a_patient": a["patient_id"].astype(str).to_numpy(),
            "a_split": a["split"].astype(str).to_numpy(),
            "b_path": b["path"].astype(str).to_numpy()[ib],
            "b_label": b["label"].astype(str).to_numpy()[ib],
            "b_patient": b["patient_id"].astype(str).to_numpy()[ib],
            "b_split": b["split"].astype(str).to_numpy()[ib],
            "cosine": cosine[rows, best].astype(float),
            "ssim": ssim[rows, best].astype(float),
        }
    )
    table["duplicate"] = table["ssim"] >= threshold
    return table.sort_values("ssim", ascending=False, kind="stable").reset_index(drop=True)


def overlap_summary(table: pd.DataFrame, n_b: int, threshold: float) -> dict:
    dup = table[table["duplicate"]]
    return {
        "n_a": int(len(table)),
        "n_b": int(n_b),
        "threshold": threshold,
        "duplicates": int(len(dup)),
        "a_patients": int(dup["a_patient"].nunique()),
        "b_patients": int(dup["b_patient"].nunique()),
        "same_label": int((dup["a_label"] == dup["b_label"]).sum()),
        "ssim_max_below_threshold": float(table.loc[~table["duplicate"], "ssim"].max())
        if (~table["duplicate"]).any()
        else None,
    }


def check_overlap(
    a: str | Path | pd.DataFrame,
    b: str | Path | pd.DataFrame,
    config: OverlapConfig,
    out: str | Path,
    labeler: str | Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`find_overlap` of the rows of A and B (manifest folders or rows; `split_a`/`split_b` of them), written to
    `out`: overlap.csv (every image of A with its closest image of B), overlap.png (the closest pairs) and
    overlap.json (counts). Returns the table and the counts."""
    threshold, top_k, ssim_size = config.threshold, config.top_k, config.ssim_size
    a, b = split_rows(manifest_rows(a), config.split_a), split_rows(manifest_rows(b), config.split_b)
    ext = get_extractor(config.extractor, labeler)
    table = find_overlap(a, b, threshold, top_k, ext, labeler, ssim_size)
    summary = {
        **overlap_summary(table, len(b), threshold),
        "top_k": top_k,
        "ssim_size": ssim_size,
        "extractor": ext.name,
    }
    out = make_dirs(out)
    with atomic_path(out / "overlap.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    write_json_atomic(out / "overlap.json", summary)
    _sheet(table.head(SHEET_PAIRS), out / "overlap.png", ssim_size)
    return table, summary


def _sheet(pairs: pd.DataFrame, path: Path, size: int) -> None:
    def units(paths: pd.Series) -> torch.Tensor:
        df = pd.DataFrame({"path": paths.to_numpy()})
        return torch.from_numpy(image_cache(df, size).rows(df)).permute(0, 3, 1, 2).float().div_(255.0)

    img_a, img_b = units(pairs["a_path"]), units(pairs["b_path"])
    rows = [
        (
            img_a[k],
            f"A {r.a_label} {Path(r.a_path).name[:18]}",
            [(img_b[k], f"B {r.b_label} {Path(r.b_path).name[:18]}\nssim {r.ssim:.3f}{' DUP' if r.duplicate else ''}")],
        )
        for k, r in enumerate(pairs.itertuples(index=False))
    ]
    contact_sheet(rows, path, "closest pairs: image of A (left), its closest image of B (right)")
