"""Matplotlib figures and image grids for the report, returned as base64 PNG data URIs (no files beside
the page, no network: the HTML is self-contained)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ..cache import apply_transform, load_image


def fig_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_uri(path: Path, max_side: int = 1400, min_side: int = 360) -> str:
    """A PNG/JPEG file as a data URI, downscaled so the page stays small (tiny grids upscaled to be seen)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        if max(im.size) < min_side:
            k = -(-min_side // max(im.size))
            im = im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _tile(row: pd.Series, size: int) -> np.ndarray:
    t = row.get("transform")
    return apply_transform(load_image(row["path"], size), None if pd.isna(t) else t)


def sample_grid(groups: dict[str, list[pd.DataFrame]], titles: Sequence[str], size: int = 64) -> str:
    """One row per class; per column group (e.g. real | synthetic) the images of that group, side by side."""
    classes = list(groups)
    widths = [max((len(g[i]) for g in groups.values()), default=0) for i in range(len(titles))]
    ncols = sum(widths) + len(titles) - 1
    fig, axes = plt.subplots(len(classes), ncols, figsize=(ncols * 0.9, len(classes) * 0.95), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, code in enumerate(classes):
        col = 0
        for gi, df in enumerate(groups[code]):
            for j, (_, row) in enumerate(df.iterrows()):
                ax = axes[r, col + j]
                ax.imshow(_tile(row, size))
                if r == 0 and j == 0:
                    ax.set_title(titles[gi], fontsize=8, loc="left")
            col += widths[gi] + 1
        axes[r, 0].text(
            -0.15, 0.5, code, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=10, weight="bold"
        )
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig_uri(fig)


def pair_grid(pairs: pd.DataFrame, size: int = 64) -> str:
    """Closest (query, match) pairs, one pair per row, with their cosine/SSIM."""
    fig, axes = plt.subplots(len(pairs), 2, figsize=(3.2, 1.6 * len(pairs)), squeeze=False)
    for i, (_, r) in enumerate(pairs.iterrows()):
        for j, key in enumerate(("query", "match")):
            axes[i, j].imshow(load_image(r[key], size))
            axes[i, j].axis("off")
        label = f"cos {r.get('cosine', float('nan')):.3f}"
        if "ssim" in r and pd.notna(r["ssim"]):
            label += f"  ssim {r['ssim']:.3f}"
        axes[i, 0].set_title(label, fontsize=7, loc="left")
    return fig_uri(fig)


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str = ""
) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, lw=1.2, marker="o" if len(x) < 30 else None, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig_uri(fig)


def ci_lines(lines: dict[str, pd.DataFrame], xlabel: str, ylabel: str, title: str) -> str:
    """A line per entry through its rows' (fraction, mean), with the 95% interval (ci_low, ci_high, clipped to the
    metric's [0, 1]) as error bars; x ticks at the fractions drawn, as percentages."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, df in lines.items():
        err = np.vstack(
            [
                (df["mean"] - df["ci_low"].clip(lower=0)).clip(lower=0),
                (df["ci_high"].clip(upper=1) - df["mean"]).clip(lower=0),
            ]
        )
        ax.errorbar(
            df["fraction"], df["mean"], yerr=np.nan_to_num(err), label=name, marker="o", ms=4, lw=1.2, capsize=3
        )
    ticks = sorted({x for df in lines.values() for x in df["fraction"]})
    ax.set_xticks(ticks, [f"{x:.0%}" for x in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig_uri(fig)


def grouped_bars(
    table: pd.DataFrame, err_low: pd.DataFrame | None, err_high: pd.DataFrame | None, ylabel: str, title: str
) -> str:
    """Bars: one group per row index (class), one bar per column (scenario), optional CI error bars."""
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * table.size), 3.4))
    n = len(table.columns)
    width = 0.8 / max(n, 1)
    x = np.arange(len(table.index))
    for i, col in enumerate(table.columns):
        yerr = None
        if err_low is not None and err_high is not None:  # CI drawn within the metric's [0, 1] range
            lo = (table[col] - err_low[col].clip(lower=0)).clip(lower=0).fillna(0)
            hi = (err_high[col].clip(upper=1) - table[col]).clip(lower=0).fillna(0)
            yerr = np.vstack([lo, hi])
        ax.bar(x + i * width - 0.4 + width / 2, table[col].fillna(0), width, yerr=yerr, capsize=2, label=str(col))
    ax.set_xticks(x, table.index)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=min(n, 4), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig_uri(fig)


def stacked_bars(table: pd.DataFrame, ylabel: str, title: str) -> str:
    """Stacked bars: one bar per row index, one stack segment per column."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(table)), 3.4))
    bottom = np.zeros(len(table))
    for col in table.columns:
        ax.bar(table.index.astype(str), table[col], bottom=bottom, label=str(col))
        bottom += table[col].to_numpy(dtype=float)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig_uri(fig)


def confusion_plot(matrices: dict[str, np.ndarray], classes: dict[str, Sequence[str]]) -> str:
    """Row-normalised confusion matrices (summed over seeds), one panel per scenario."""
    names = list(matrices)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        cm = np.asarray(matrices[name], dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.axis("on")
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ticks = list(classes[name])
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_yticks(range(len(ticks)), ticks, fontsize=7)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, int(v), ha="center", va="center", fontsize=6, color="white" if norm[i, j] > 0.5 else "black")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    return fig_uri(fig)


def tsne_plot(df: pd.DataFrame) -> str:
    """t-SNE embedding coloured by class; selected points filled, dropped ones faint."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    selected = df["selected"].astype(bool) if "selected" in df else pd.Series(True, index=df.index)
    candidate = df["candidate"].astype(bool) if "candidate" in df else pd.Series(True, index=df.index)
    for code, g in df.groupby("label"):
        sel, cand = selected.loc[g.index], candidate.loc[g.index]
        if not cand.any():  # a context class: shown, never selected from
            ax.scatter(g["x"], g["y"], s=6, alpha=0.35, label=f"{code} (context)")
            continue
        pts = ax.scatter(g.loc[sel, "x"], g.loc[sel, "y"], s=9, label=f"{code} selected")
        if (cand & ~sel).any():
            ax.scatter(
                g.loc[cand & ~sel, "x"],
                g.loc[cand & ~sel, "y"],
                s=9,
                alpha=0.25,
                color=pts.get_facecolor()[0],
                marker="x",
                label=f"{code} dropped",
            )
    ax.legend(fontsize=6, ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of training images (x = dropped by the selection)", fontsize=9)
    return fig_uri(fig)
