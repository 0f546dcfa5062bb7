"""CLI verbs for the data stage: `prepare odir|folder`, `manifest export-csv|concat|info`, `check-split`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from ..errors import RetinaugError
from ..ownership import check_apart, owned_output
from .app import app, console, manifest_app, prepare_app

Out = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Output folder for manifest.parquet, rejected.csv, summary.json (e.g. runs/NAME/data)."
    ),
]
Val = Annotated[float, typer.Option(help="Fraction of patients in the validation split.")]
Test = Annotated[float, typer.Option(help="Fraction of patients in the test split.")]
Seed = Annotated[int, typer.Option(help="Seed of the patient-level split (same seed + data = same split).")]
MinSize = Annotated[int, typer.Option(help="Reject images whose shorter side is below this many pixels.")]
Workers = Annotated[
    int | None, typer.Option(help="Threads that read and check images (default: 4 x CPU cores, at most 16).")
]


@prepare_app.command("odir")
def prepare_odir_cmd(
    root: Annotated[
        Path,
        typer.Argument(
            help="ODIR-5K folder: Kaggle layout (full_df.csv + preprocessed_images/) or challenge layout (annotations .xlsx + 'Training Images/')."
        ),
    ],
    out: Out,
    labels: Annotated[
        Literal["kaggle", "keywords"],
        typer.Option(
            help="Label source: 'kaggle' = patient-level label (Kaggle labels column / N..O flags, as the paper), 'keywords' = per-eye label from the eye's diagnostic keywords."
        ),
    ] = "kaggle",
    allow_multilabel: Annotated[
        bool,
        typer.Option(
            "--allow-multilabel",
            help="Keep images with several findings under their primary class (a specific finding beats O) instead of rejecting them.",
        ),
    ] = False,
    val: Val = 0.15,
    test: Test = 0.15,
    seed: Seed = 0,
    min_size: MinSize = 64,
    workers: Workers = None,
) -> None:
    """Ingest ODIR-5K as downloaded (images stay in place): check every image, label, split by patient.

    Example: retinaug prepare odir ~/data/odir5k --out runs/odir/data --labels keywords
    """
    from ..ingest import prepare_odir

    started = time.perf_counter()
    check_apart(out, root, "--out")
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        prepare_odir(
            root,
            out,
            labels=labels,
            allow_multilabel=allow_multilabel,
            val=val,
            test=test,
            seed=seed,
            min_size=min_size,
            workers=workers,
        )
    console.print(f"done in {time.perf_counter() - started:.1f} s")


@prepare_app.command("folder")
def prepare_folder_cmd(
    root: Annotated[
        Path, typer.Argument(help="Folder with one sub-folder per class: ROOT/<class code or name>/*.jpg|png|...")
    ],
    out: Out,
    map: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="Folder name -> class code, e.g. 'glaucoma=G,cataract=C'. Codes (G) and class names (glaucoma) work without it.",
        ),
    ] = None,
    patient_regex: Annotated[
        str | None,
        typer.Option(
            help="Regex searched in each file stem; its group 'patient' (or first group) is the patient id (a group 'eye' gives the eye), e.g. '^(\\d+)_'. Default: `<patient>_<eye>` names (eye left/right/l/r/od/os, any case) are grouped by patient."
        ),
    ] = None,
    unmatched: Annotated[
        Literal["own-patient", "reject"],
        typer.Option(
            help="Files whose name does not match the patient pattern: each is its own patient, or is rejected (rejected.csv)."
        ),
    ] = "own-patient",
    val: Val = 0.15,
    test: Test = 0.15,
    seed: Seed = 0,
    min_size: MinSize = 64,
    workers: Workers = None,
) -> None:
    """Ingest class folders (images stay in place): check every image, label by folder, group files into patients, split by patient.

    Example: retinaug prepare folder ~/data/fundus --out runs/mine/data --map 'glaucoma=G,normal=N'
    """
    from ..ingest import prepare_folder

    started = time.perf_counter()
    check_apart(out, root, "--out")
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        prepare_folder(
            root,
            out,
            mapping=map,
            patient_regex=patient_regex,
            unmatched=unmatched,
            val=val,
            test=test,
            seed=seed,
            min_size=min_size,
            workers=workers,
        )
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
