"""CLI verb `prepare phantom`: a thin wrapper over `retinaug.phantom.make_phantom`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..phantom.config import PhantomConfig
from .app import console, prepare_app
from .settings import settings


@prepare_app.command("phantom")
@settings(PhantomConfig, ("n", "size", "seed", "proportions", "val", "test"), example="proportions=uniform")
def prepare_phantom_cmd(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: images/<CLASS>/<patient>_<eye>.png, manifest.parquet, summary.json (e.g. runs/NAME/data).",
        ),
    ],
    config: PhantomConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Render the embedded phantom dataset: procedural colour fundus photos with each class's findings.

    No download needed; deterministic by --seed. Example: retinaug prepare phantom --n 1000 --out runs/demo/data
    """
    from ..ownership import owned_output
    from ..phantom import make_phantom

    started = time.perf_counter()
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        make_phantom(config, out)
    console.print(f"done in {time.perf_counter() - started:.1f} s")
