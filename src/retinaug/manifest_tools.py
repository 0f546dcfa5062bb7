"""Manifest <-> CSV conversion and concatenation (replaces the seed's per-class CSV maker and CSV merge).

The CSVs start with the seed's two columns, `filename` (image file name) and `labels` (Kaggle style,
e.g. "['N']"), followed by every manifest column with absolute `path`s, so a CSV can be read back
into a manifest (`read_table`) and exported CSVs can be concatenated like manifests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .classes import CLASSES
from .errors import RetinaugError
from .io import atomic_path, read_csv, safe_join
from .manifest import OPTIONAL, REQUIRED, load_manifest, save_manifest, validate_manifest


def to_csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The seed's `filename,labels` columns, then the manifest's own."""
    out = pd.DataFrame(
        {"filename": [os.path.basename(p) for p in df["path"]], "labels": [f"['{c}']" for c in df["label"]]}
    )
    return pd.concat([out, df.reset_index(drop=True)], axis=1)


def export_csv(df: pd.DataFrame, out: str | Path, per_class: bool = False) -> list[Path]:
    """Write `out/<CODE>.csv` per class (or one `out/manifest.csv`); return the written files."""
    out = Path(out)
    parts = (
        [(code, df[df["label"] == code]) for code in CLASSES if (df["label"] == code).any()]
        if per_class
        else [("manifest", df)]
    )
    written = []
    for name, part in parts:
        target = out / f"{name}.csv"
        with atomic_path(target) as tmp:
            to_csv_frame(part).to_csv(tmp, index=False)
        written.append(target)
    return written


def read_table(path: str | Path) -> pd.DataFrame:
    """A manifest folder / .parquet file, or a CSV with manifest columns (relative paths are resolved
    against the CSV's folder and may not leave it)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return load_manifest(path)
    if not path.is_file():
        raise RetinaugError(f"no such CSV file: {path}")
    text_columns = [*REQUIRED, *(c for c, t in OPTIONAL.items() if t == "string"), "filename", "labels"]
    table = read_csv(path, dtype={c: "string" for c in text_columns}, keep_default_na=False, na_values=[""])
    if "path" not in table.columns:
        raise RetinaugError(f"{path} has no 'path' column; export CSVs with `retinaug manifest export-csv`")
    table["path"] = [p if os.path.isabs(p) else str(safe_join(path.parent, p)) for p in table["path"].astype(str)]
    table = table.drop(columns=[c for c in ("filename", "labels") if c in table.columns])
    return validate_manifest(table)


def concat(inputs: list[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate manifests and/or exported CSVs into one validated manifest saved at `out`."""
    if not inputs:
        raise RetinaugError("give at least one manifest or CSV to concatenate")
    df = pd.concat([read_table(p) for p in inputs], ignore_index=True)
    df = validate_manifest(df)
    save_manifest(df, out)
    return df
