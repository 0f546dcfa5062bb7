"""Small HTML builders shared by the report's sections (tables, embedded images, paragraphs) and readers of the
run folder's files that several sections use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from markupsafe import Markup, escape

from ..classes import CLASSES


def table(df: pd.DataFrame, index: bool = False, floatfmt: str = "{:.3f}") -> Markup:
    df = df.copy()
    df.columns.name = None
    for col in df.columns:  # whole-number floats (counts) print without decimals
        v = pd.to_numeric(df[col], errors="coerce")
        if df[col].dtype.kind == "f" and v.notna().all() and (v == v.round()).all():
            df[col] = v.astype("Int64")
    return Markup(df.to_html(index=index, border=0, classes="tbl", na_rep="", float_format=floatfmt.format))


def img(uri: str, alt: str, width: str = "") -> Markup:
    style = f' style="max-width:{width}"' if width else ""
    return Markup(f'<img src="{uri}" alt="{escape(alt)}"{style}>')


def p(text: str) -> Markup:
    return Markup(f"<p>{escape(text)}</p>")


def h3(text: str) -> Markup:
    return Markup(f"<h3>{escape(text)}</h3>")


def join(parts: list) -> Markup:
    return Markup("").join(parts)


def flat_numbers(obj: dict, prefix: str = "") -> dict[str, float]:
    """Nested dict of numbers -> {'a.b': value} (lists and strings skipped)."""
    out: dict[str, float] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_numbers(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def per_class_table(obj: dict) -> pd.DataFrame | None:
    """A {class: {metric: value}} block anywhere in `obj` (top level or under 'per_class') as a table."""
    for block in (obj.get("per_class"), obj):
        if isinstance(block, dict):
            rows = {k: v for k, v in block.items() if k in CLASSES and isinstance(v, dict)}
            if rows:
                return pd.DataFrame(rows).T.rename_axis("class")
    return None


def summary_csv(run: Path) -> pd.DataFrame | None:
    from ..folds import results_dir

    path = results_dir(run) / "summary.csv"
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None
