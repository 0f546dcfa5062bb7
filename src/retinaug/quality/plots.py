"""Figures of the quality stages (matplotlib's object API: no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..classes import CODES
from ..io import save_figure

SheetRow = tuple[torch.Tensor, str, Sequence[tuple[torch.Tensor, str]]]
CLASS_COLOURS = dict(
    zip(CODES, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"))
)


def contact_sheet(rows: Sequence[SheetRow], path: str | Path, title: str, pad: int = 2) -> Path:
    """A grid drawn as one mosaic image (fast): each row is a query image followed by its matches
    (CHW float images in [0, 1]), each tile captioned."""
    n_cols = 1 + max((len(m) for _, _, m in rows), default=0)
    size = rows[0][0].shape[-1] if rows else 1
    cell_w, cell_h = size + 2 * pad, size + 2 * pad + max(12, size // 3)  # room for a two-line caption
    mosaic = np.ones((max(len(rows), 1) * cell_h, n_cols * cell_w, 3), dtype=np.float32)
    tiles = [(r, 0, q, cap) for r, (q, cap, _) in enumerate(rows)]
    tiles += [(r, c + 1, img, cap) for r, (_, _, matches) in enumerate(rows) for c, (img, cap) in enumerate(matches)]
    fig = Figure(figsize=(1.5 * n_cols, 1.6 * max(len(rows), 1) + 0.4))
    ax = fig.add_subplot(1, 1, 1)
    for r, c, img, caption in tiles:
        y, x = r * cell_h + pad, c * cell_w + pad
        mosaic[y : y + size, x : x + size] = img.permute(1, 2, 0).clamp(0, 1).numpy()
        ax.text(x, y + size + pad, caption, fontsize=5.5, va="top", ha="left")
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return save_figure(fig, path)


def similarity_hist(
    groups: dict[str, tuple[np.ndarray, np.ndarray, float | None]], path: str | Path, xlabel: str
) -> Path:
    """One panel per group: histograms of synthetic-vs-train and test-vs-train NN similarity + threshold."""
    fig = Figure(figsize=(3.2 * len(groups), 2.8))
    for i, (name, (synthetic, test, threshold)) in enumerate(groups.items()):
        ax = fig.add_subplot(1, len(groups), i + 1)
        values = np.concatenate([synthetic, test])
        bins = np.linspace(values.min(), values.max(), 30) if len(values) and np.ptp(values) > 0 else 10
        ax.hist(test, bins=bins, alpha=0.6, density=True, label=f"real test vs train (n={len(test)})", color="#4c72b0")
        ax.hist(
            synthetic,
            bins=bins,
            alpha=0.6,
            density=True,
            label=f"synthetic vs train (n={len(synthetic)})",
            color="#dd8452",
        )
        if threshold is not None:
            ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.supxlabel(xlabel, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def tsne_plot(points: pd.DataFrame, path: str | Path, title: str) -> Path:
    """t-SNE map: candidates coloured by class, selected filled / dropped hollow; context classes grey."""
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    context = points[~points["candidate"]]
    if len(context):
        ax.scatter(context["x"], context["y"], s=6, c="#cccccc", label="other classes (context)")
    for label, group in points[points["candidate"]].groupby("label", sort=False):
        colour = CLASS_COLOURS.get(label, "k")
        kept, dropped = group[group["selected"]], group[~group["selected"]]
        ax.scatter(kept["x"], kept["y"], s=12, color=colour, label=f"{label} selected ({len(kept)})")
        ax.scatter(
            dropped["x"],
            dropped["y"],
            s=12,
            facecolors="none",
            edgecolors=colour,
            lw=0.6,
            label=f"{label} dropped ({len(dropped)})",
        )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return save_figure(fig, path)
