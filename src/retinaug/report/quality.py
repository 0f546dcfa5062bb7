"""Report sections on the synthetic-data audit: similarity and memorization, FID/KID and k-NN precision/recall."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..classes import CLASSES
from ..io import read_json
from . import figures
from .html import flat_numbers, h3, img, join, p, per_class_table, table

FIDELITY = ("fid", "fid_test_vs_train", "kid_mean", "kid_std", "precision", "recall")


def _basenames(df: pd.DataFrame) -> pd.DataFrame:
    return df.map(lambda v: os.path.basename(v) if isinstance(v, str) and os.sep in v else v)


def section_similarity(run: Path) -> Markup | None:
    q = run / "quality"
    audit = read_json(q / "audit.json")
    match_csv = q / "match.csv"
    if not isinstance(audit, dict) and not match_csv.is_file():
        return None
    parts = []
    if (q / "similarity_hist.png").is_file():
        parts.append(img(figures.file_uri(q / "similarity_hist.png"), "similarity histogram"))
    if isinstance(audit, dict) and isinstance(mem := audit.get("memorization"), dict):
        per_class = per_class_table(mem)
        if per_class is not None:
            parts += [h3("Memorization per class"), table(per_class.reset_index())]
        overall = flat_numbers({k: v for k, v in mem.items() if k not in CLASSES})
        if overall:
            parts.append(p(", ".join(f"{k} {v:.4g}" for k, v in overall.items())))
    mem_csv = q / "memorization.csv"
    if mem_csv.is_file():
        mem_df = pd.read_csv(mem_csv)
        parts.append(h3(f"Nearest-neighbour similarity of synthetic images ({len(mem_df)} rows, most similar first)"))
        parts.append(table(_basenames(mem_df.sort_values("nn_cosine", ascending=False).head(10))))
    if match_csv.is_file():
        pairs = pd.read_csv(match_csv)
        pairs = pairs[pairs["rank"] == pairs["rank"].min()].sort_values("cosine", ascending=False).head(6)
        parts.append(h3("Closest synthetic–real pairs (query | nearest training image)"))
        if (q / "match.png").is_file():
            parts.append(img(figures.file_uri(q / "match.png"), "match grid", "70%"))
        elif (
            len(pairs)
            and all(os.path.isfile(f) for f in pairs["query"])
            and all(os.path.isfile(f) for f in pairs["match"])
        ):
            parts.append(img(figures.pair_grid(pairs), "closest pairs", "360px"))
        parts.append(table(_basenames(pairs)))
    return join(parts) if parts else None


def section_fid(run: Path) -> Markup | None:
    audit = read_json(run / "quality" / "audit.json")
    if not isinstance(audit, dict):
        return None
    blocks = {**(audit.get("per_class") or {}), "all audited classes": audit.get("overall") or {}}
    rows = {
        name: {k: block[k] for k in FIDELITY if isinstance(block.get(k), (int, float))}
        for name, block in blocks.items()
    }
    rows = {name: row for name, row in rows.items() if row}
    if not rows:
        return p("audit.json holds no FID/KID values.")
    note = p(
        f"Features: {audit.get('extractor', 'see config')}. Lower FID/KID = synthetic closer to real training images "
        "(with few images FID is biased upwards; compare like with like: fid_test_vs_train is the real-vs-real scale)."
    )
    return join([note, table(pd.DataFrame(rows).T.rename_axis("set").reset_index(), floatfmt="{:.4g}")])
