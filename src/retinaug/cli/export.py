"""CLI verb `export`: a run's images as a Hugging Face imagefolder dataset with a dataset card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..export import ExportConfig
from .app import app
from .settings import settings


@app.command("export")
@settings(ExportConfig, ("what", "accepted_only", "copy_images"), flags={"copy_images": "--copy"})
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/NAME).", file_okay=False)],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Dataset folder to write (new, empty, or an earlier export, which is replaced)."
        ),
    ],
    config: ExportConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Write a run's images in the Hugging Face `imagefolder` layout: OUT/<split>/<class>/<file>, per-split
    metadata.parquet and one metadata.csv (file_name, label, split, origin and every provenance column), and a
    README.md dataset card (how the images were made, counts per class, the run's fidelity/CAS/FID/memorization).
    An image that is a symlink to a file outside the run and the trusted image folders is skipped and counted, never
    exported; the export holds no symlink.

    Example: retinaug export runs/demo --out exports/demo-synthetic --accepted-only
    """
    from ..export import export_run

    export_run(run, config, out)
