"""Similarity matcher: for each query image, its top-k most similar reference images.

The seed compared every synthetic image with every real one by re-running CLIP on both images inside a
double loop (N x M x 2 forward passes). Here each image is embedded once (batched), the features are
L2-normalised, and the top-k cosine neighbours come from blocked matrix products (memory stays bounded:
one query block x one reference block at a time) or from faiss when it is installed. SSIM, which is
expensive, is computed only on the top-k pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from ..cache import image_cache
from ..errors import RetinaugError
from ..features import get_extractor, l2_normalise
from ..io import atomic_path
from ..manifest import manifest_rows, split_rows
from .config import MatchConfig
from .plots import contact_sheet

SHEET_MATCHES = 5  # matches shown per query on the contact sheet


def _faiss():
    try:
        import faiss  # optional: exact inner-product search, faster on large references
    except ImportError:
        return None
    return faiss


def row_keys(df: pd.DataFrame) -> np.ndarray:
    """One string per row identifying the image as loaded: path plus its traditional transform."""
    transform = df["transform"].fillna("").astype(str) if "transform" in df.columns else ""
    return (df["path"].astype(str) + "|" + transform).to_numpy(dtype=object)


def topk_cosine(
    query: np.ndarray,
    reference: np.ndarray,
    k: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    query_block: int = 1024,
    ref_block: int = 16384,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of L2-normalised rows: (scores, indices), each (n_query, k), best first.

    `exclude=(query_keys, ref_keys)` skips pairs whose keys are equal (an image matching itself when query
    and reference overlap); such slots, and slots beyond the reference size, get score -inf and index -1.
    """
    n_q, n_r = len(query), len(reference)
    if n_r == 0 or n_q == 0:
        raise RetinaugError("top-k search needs at least one query and one reference image")
    k = min(k, n_r)
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise RetinaugError("backend 'faiss' requested but faiss is not installed (pip install faiss-cpu), use 'torch'")
    if faiss is not None:
        return _topk_faiss(faiss, query, reference, k, exclude)
    q_keys, r_keys = exclude if exclude is not None else (None, None)
    if q_keys is not None:  # integer codes make the per-block equality mask a cheap comparison
        codes, _ = pd.factorize(np.concatenate([q_keys, r_keys]))
        q_codes, r_codes = torch.from_numpy(codes[:n_q]), torch.from_numpy(codes[n_q:])
    q_all, r_all = torch.from_numpy(np.ascontiguousarray(query)), torch.from_numpy(np.ascontiguousarray(reference))
    scores = np.empty((n_q, k), dtype=np.float32)
    index = np.empty((n_q, k), dtype=np.int64)
    for qs in range(0, n_q, query_block):
        q = q_all[qs : qs + query_block]
        best_s = torch.full((len(q), 0), -torch.inf)
        best_i = torch.zeros((len(q), 0), dtype=torch.long)
        for rs in range(0, n_r, ref_block):
            sims = q @ r_all[rs : rs + ref_block].T
            if q_keys is not None:
                same = q_codes[qs : qs + len(q), None] == r_codes[None, rs : rs + sims.shape[1]]
                sims = sims.masked_fill(same, -torch.inf)
            s, i = torch.topk(sims, min(k, sims.shape[1]), dim=1)
            # merge this block's candidates with the running best (top-k of a union = top-k of the tops)
            cand_s, cand_i = torch.cat([best_s, s], 1), torch.cat([best_i, i + rs], 1)
            best_s, pos = torch.topk(cand_s, min(k, cand_s.shape[1]), dim=1)
            best_i = torch.gather(cand_i, 1, pos)
        scores[qs : qs + len(q)] = best_s.numpy()
        index[qs : qs + len(q)] = np.where(np.isfinite(best_s.numpy()), best_i.numpy(), -1)
    return scores, index


def _topk_faiss(faiss, query, reference, k, exclude):
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    extra = 1 if exclude is not None and k < len(reference) else 0  # keys are unique per manifest: <= 1 self-hit
    scores, idx = index.search(np.ascontiguousarray(query, dtype=np.float32), k + extra)
    scores, idx = scores.astype(np.float32), idx.astype(np.int64)
    if exclude is not None:
        q_keys, r_keys = exclude
        hit = (idx >= 0) & (r_keys[np.clip(idx, 0, None)] == q_keys[:, None])
        scores[hit], idx[hit] = -np.inf, -1
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, idx = np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)
    scores[idx < 0] = -np.inf
    return scores, idx


def unit_images(df: pd.DataFrame, size: int, rows: np.ndarray) -> torch.Tensor:
    """Cached images of `df`'s `rows` (transforms applied) as float NCHW in [0, 1]."""
    arr = image_cache(df, size).rows(df.iloc[rows])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def pair_ssim(a: torch.Tensor, b: torch.Tensor, batch: int = 256) -> np.ndarray:
    """SSIM of each (a[i], b[i]) pair (float NCHW in [0, 1])."""
    out = [
        structural_similarity_index_measure(a[s : s + batch], b[s : s + batch], data_range=1.0, reduction="none")
        for s in range(0, len(a), batch)
    ]
    return torch.cat(out).numpy() if out else np.empty(0, dtype=np.float32)


def match_features(
    query_df: pd.DataFrame,
    reference_df: pd.DataFrame,
    query_features: np.ndarray,
    reference_features: np.ndarray,
    top_k: int = 10,
    out: str | Path | None = None,
    ssim_size: int = 64,
    exclude_self: bool = True,
    sheet_rows: int = 8,
) -> pd.DataFrame:
    """The matcher on already-computed features (the audit reuses its embeddings this way)."""
    if top_k < 1:
        raise RetinaugError(f"--top-k must be at least 1 (got {top_k})")
    q_keys, r_keys = row_keys(query_df), row_keys(reference_df)
    exclude = (q_keys, r_keys) if exclude_self and len(set(q_keys) & set(r_keys)) else None
    scores, idx = topk_cosine(l2_normalise(query_features), l2_normalise(reference_features), top_k, exclude)
    qi, rank = np.nonzero(idx >= 0)
    ri = idx[qi, rank]
    table = pd.DataFrame(
        {
            "query": query_df["path"].to_numpy()[qi],
            "rank": rank + 1,
            "match": reference_df["path"].to_numpy()[ri],
            "cosine": scores[qi, rank].astype(float),
        }
    )
    ssim_size = max(ssim_size, 11)  # the SSIM Gaussian window is 11 px
    # only the reference images that occur in a pair are loaded (the reference set can be large)
    q_used, q_pos = np.unique(qi, return_inverse=True)
    r_used, r_pos = np.unique(ri, return_inverse=True)
    q_img, r_img = unit_images(query_df, ssim_size, q_used), unit_images(reference_df, ssim_size, r_used)
    table["ssim"] = pair_ssim(q_img[q_pos], r_img[r_pos]).astype(float)
    table["query_label"] = query_df["label"].to_numpy()[qi]
    table["match_label"] = reference_df["label"].to_numpy()[ri]
    if "transform" in query_df.columns or "transform" in reference_df.columns:
        for name, frame, rows in (("query_transform", query_df, qi), ("match_transform", reference_df, ri)):
            col = frame["transform"] if "transform" in frame.columns else pd.Series([pd.NA] * len(frame))
            table[name] = col.to_numpy()[rows]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "match.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
        firsts = np.flatnonzero(rank == 0)
        sheet = []
        for row in firsts[np.argsort(-table["cosine"].to_numpy()[firsts], kind="stable")[:sheet_rows]]:
            pairs = np.flatnonzero(qi == qi[row])[:SHEET_MATCHES]
            sheet.append(
                (
                    q_img[q_pos[row]],
                    f"query {table['query_label'].iat[row]}",
                    [
                        (
                            r_img[r_pos[p]],
                            f"{table['match_label'].iat[p]} cos {table['cosine'].iat[p]:.3f}\nssim {table['ssim'].iat[p]:.2f}",
                        )
                        for p in pairs
                    ],
                )
            )
        contact_sheet(sheet, out / "match.png", "closest pairs: query (left) and its top matches")
    return table


def match(
    query: str | Path | pd.DataFrame,
    reference: str | Path | pd.DataFrame,
    config: MatchConfig,
    out: str | Path | None = None,
    labeler: str | Path | None = None,
) -> pd.DataFrame:
    """Top-k most similar reference images per query image (cosine of features, then SSIM); each set a manifest
    folder or its rows (`query_split`/`reference_split` of them).

    Writes `out/match.csv` (query, rank, match, cosine, ssim, labels) and `out/match.png` (the closest
    pairs) when `out` is given; returns the table. An image never matches itself when query and
    reference overlap."""
    query_df = split_rows(manifest_rows(query), config.query_split)
    same = reference is query and config.reference_split == config.query_split
    reference_df = query_df if same else split_rows(manifest_rows(reference), config.reference_split)
    ext = get_extractor(config.extractor, labeler)
    q_feat = ext(query_df)
    r_feat = q_feat if same else ext(reference_df)
    return match_features(query_df, reference_df, q_feat, r_feat, config.top_k, out, config.ssim_size)
