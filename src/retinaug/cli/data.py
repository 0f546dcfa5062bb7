"""CLI verbs for the data stage: `prepare odir|folder`, `manifest export-csv|concat|info`, `check-split`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import RetinaugError
from ..ingest.config import FolderConfig, OdirConfig
from ..ownership import check_apart, owned_output
from .app import app, console, manifest_app, prepare_app
from .settings import settings

Out = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Output folder for manifest.parquet, rejected.csv, summary.json (e.g. runs/NAME/data)."
    ),
]


@prepare_app.command("odir")
@settings(
    OdirConfig,
    ("labels", "allow_multilabel", "val", "test", "seed", "min_size", "workers"),
    example="labels=keywords",
)
def prepare_odir_cmd(
    root: Annotated[
        Path,
        typer.Argument(
            help="ODIR-5K folder: Kaggle layout (full_df.csv + preprocessed_images/) or challenge layout (annotations .xlsx + 'Training Images/')."
        ),
    ],
    out: Out,
    config: OdirConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Ingest ODIR-5K as downloaded (images stay in place): check every image, label, split by patient.

    Example: retinaug prepare odir ~/data/odir5k --out runs/odir/data --labels keywords
    """
    from ..ingest import prepare_odir

    started = time.perf_counter()
    check_apart(out, root, "--out")
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        prepare_odir(root, config, out)
    console.print(f"done in {time.perf_counter() - started:.1f} s")


@prepare_app.command("folder")
@settings(
    FolderConfig,
    ("mapping", "patient_regex", "unmatched", "val", "test", "seed", "min_size", "workers"),
    flags={"mapping": "--map"},
    example="unmatched=reject",
)
def prepare_folder_cmd(
    root: Annotated[
        Path, typer.Argument(help="Folder with one sub-folder per class: ROOT/<class code or name>/*.jpg|png|...")
    ],
    out: Out,
    config: FolderConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Ingest class folders (images stay in place): check every image, label by folder, group files into patients, split by patient.

    Example: retinaug prepare folder ~/data/fundus --out runs/mine/data --map 'glaucoma=G,normal=N'
    """
    from ..ingest import prepare_folder

    started = time.perf_counter()
    check_apart(out, root, "--out")
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        prepare_folder(root, config, out)
    console.print(f"done in {time.perf_counter() - started:.1f} s")


@app.command("check-split")
def check_split_cmd(
    data: Annotated[Path, typer.Argument(help="A manifest folder (RUN/data) or .parquet file.")],
    show: Annotated[int, typer.Option(help="Print at most this many violations.")] = 50,
) -> None:
    """Leakage audit: fail (exit 1) when a patient or identical image bytes appear in two splits."""
    from ..manifest import load_manifest
    from ..split import check_split

    df = load_manifest(data)
    problems = check_split(df)
    if problems:
        lines = "\n  - ".join(problems[:show]) + (
            f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        )
        raise RetinaugError(f"{len(problems)} leakage problem(s) in {data}:\n  - {lines}")
    sizes = ", ".join(f"{s} {int((df['split'] == s).sum())}" for s in ("train", "val", "test"))
    console.print(
        f"OK: {len(df)} images of {df['patient_id'].nunique()} patients ({sizes}); no patient and no identical image in two splits"
    )


@manifest_app.command("export-csv")
def export_csv_cmd(
    data: Annotated[Path, typer.Argument(help="A manifest folder (RUN/data) or .parquet file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the CSV files.")],
    per_class: Annotated[
        bool, typer.Option("--per-class", help="One CSV per class (<CODE>.csv) instead of one manifest.csv.")
    ] = False,
) -> None:
    """Write CSVs with the seed's `filename,labels` columns plus all manifest columns."""
    from ..manifest import load_manifest
    from ..manifest_tools import export_csv

    for path in export_csv(load_manifest(data), out, per_class=per_class):
        console.print(f"wrote {path}")


@manifest_app.command("concat")
def concat_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Manifest folders, .parquet files or exported CSVs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder (or .parquet file) for the combined manifest.")],
) -> None:
    """Concatenate manifests and/or exported CSVs into one validated manifest."""
    from ..manifest_tools import concat

    df = concat(inputs, out)
    console.print(f"wrote {len(df)} rows to {out}")


@manifest_app.command("info")
def info_cmd(data: Annotated[Path, typer.Argument(help="A manifest folder (RUN/data) or .parquet file.")]) -> None:
    """Print images per class x split, patients per split, and origins."""
    from rich.table import Table

    from ..manifest import class_counts, load_manifest

    df = load_manifest(data)
    counts = class_counts(df)
    table = Table(title=f"{len(df)} images, {df['patient_id'].nunique()} patients: {data}")
    table.add_column("class")
    for col in counts.columns:
        table.add_column(str(col), justify="right")
    for label, row in counts.iterrows():
        table.add_row(str(label), *(str(v) for v in row))
    console.print(table)
    patients = {s: df.loc[df["split"] == s, "patient_id"].nunique() for s in ("train", "val", "test")}
    console.print("patients: " + ", ".join(f"{s} {n}" for s, n in patients.items()))
    console.print("origin: " + ", ".join(f"{k} {v}" for k, v in df["origin"].value_counts().items()))
