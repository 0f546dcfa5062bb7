"""Report section on the t-SNE selection of the dominant classes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..io import read_json
from . import figures
from .html import img, join, p, per_class_table, table


def section_selection(run: Path) -> Markup | None:
    csv = run / "selection" / "tsne.csv"
    png = run / "selection" / "tsne.png"
    if not csv.is_file() and not png.is_file():
        return None
    parts = [
        img(figures.tsne_plot(pd.read_csv(csv)), "t-SNE") if csv.is_file() else img(figures.file_uri(png), "t-SNE")
    ]
    summary = read_json(run / "selection" / "summary.json")
    if isinstance(summary, dict):
        per_class = per_class_table(summary.get("classes") or {})  # kept / dropped per dominant class
        if per_class is not None:
            parts.append(table(per_class.reset_index()))
        flat = {k: v for k, v in summary.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
        if flat:
            parts.append(p(", ".join(f"{k}: {v}" for k, v in flat.items())))
    return join(parts)
