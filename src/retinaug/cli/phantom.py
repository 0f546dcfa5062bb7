"""CLI verb `prepare phantom`: a thin wrapper over `retinaug.phantom.make_phantom`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .app import console, prepare_app


@prepare_app.command("phantom")
def prepare_phantom_cmd(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: images/<CLASS>/<patient>_<eye>.png, manifest.parquet, summary.json (e.g. runs/NAME/data).",
        ),
    ],
    n: Annotated[
        int, typer.Option("--n", help="Number of images (even: n/2 patients x 2 eyes); at least 96 with all 8 classes.")
    ] = 1000,
    size: Annotated[int, typer.Option(help="Image side in pixels (>= 16).")] = 128,
    seed: Annotated[
        int, typer.Option(help="Seed of the images and of the patient-level split (same seed = identical files).")
    ] = 0,
    proportions: Annotated[
        str,
        typer.Option(
            help="Class weights: 'odir' (ODIR-5K's patient counts), 'uniform', or e.g. 'N=2,D=1,G=1' (other classes left out). Every class gets >= 6 patients."
        ),
    ] = "odir",
    val: Annotated[float, typer.Option(help="Fraction of patients in the validation split.")] = 0.15,
    test: Annotated[float, typer.Option(help="Fraction of patients in the test split.")] = 0.15,
) -> None:
    """Render the embedded phantom dataset: procedural colour fundus photos with each class's findings.

    No download needed; deterministic by --seed. Example: retinaug prepare phantom --n 1000 --out runs/demo/data
    """
    from ..phantom import make_phantom

    started = time.perf_counter()
    from ..ownership import owned_output

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        make_phantom(n=n, size=size, seed=seed, out=out, proportions=proportions, val=val, test=test)
    console.print(f"done in {time.perf_counter() - started:.1f} s")
