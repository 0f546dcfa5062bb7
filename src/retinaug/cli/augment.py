"""CLI verbs that shape training sets: `select` (t-SNE reduction of the dominant classes) and `augment`
(traditional flip/rotation rows); thin wrappers over `retinaug.select` and `retinaug.augment`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..augment import AugmentConfig
from ..ownership import owned_output
from ..select import SelectConfig
from .app import app, console
from .settings import settings


@app.command()
@settings(SelectConfig, ("classes", "keep", "strategy", "extractor", "seed"), example="perplexity=20")
def select(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) or manifest.parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/selection)."),
    labeler: Optional[Path] = typer.Option(
        None, "--labeler", help="Trained labeler folder (RUN/labeler): its features are used by default."
    ),
    config: SelectConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Reduce the dominant classes' TRAIN images with a t-SNE map (the seed's step 4).

    Writes manifest.parquet (kept rows), tsne.csv, tsne.png and summary.json.
    Example: retinaug select --data runs/demo/data --labeler runs/demo/labeler --keep 0.5 --out runs/demo/selection
    """
    from ..select import select as select_fn

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        chosen = select_fn(data, config, out, labeler)
    counts = ", ".join(f"{c}: {n}" for c, n in chosen["label"].value_counts().sort_index().items())
    console.print(f"kept {len(chosen)} train images ({counts}) with strategy {config.strategy}; map and plot in {out}")


@app.command()
@settings(AugmentConfig, ("ratio", "classes", "seed", "write_files"), defaults={"classes": "G,C,A,H,M"})
def augment(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) or manifest.parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/augment)."),
    config: AugmentConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Traditional augmentation: flipped/rotated copies of real train images as manifest rows (origin=traditional).

    Example: retinaug augment --data runs/demo/data --ratio 2 --out runs/demo/augment
    """
    from ..augment import augment as augment_fn

    with owned_output(out, "--out"):
        rows = augment_fn(data, config, out)
    counts = ", ".join(f"{c}: {n}" for c, n in rows["label"].value_counts().sort_index().items())
    console.print(f"wrote {len(rows)} traditional rows ({counts}) to {out}")
