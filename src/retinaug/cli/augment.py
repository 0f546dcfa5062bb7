"""CLI verbs that shape training sets: `select` (t-SNE reduction of the dominant classes) and `augment`
(traditional flip/rotation rows); thin wrappers over `retinaug.select` and `retinaug.augment`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import validated
from ..ownership import owned_output
from .app import EXTRACTOR_HELP, app, console


@app.command()
def select(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) or manifest.parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/selection)."),
    labeler: Optional[Path] = typer.Option(
        None, "--labeler", help="Trained labeler folder (RUN/labeler): its features are used by default."
    ),
    classes: str = typer.Option("D,N", "--classes", help="Dominant classes to reduce (comma-separated codes)."),
    keep: float = typer.Option(0.5, "--keep", help="Per class: a fraction <= 1 (0.5 = half) or a count > 1 (200)."),
    strategy: str = typer.Option(
        "coverage",
        "--strategy",
        help="coverage (spread over the t-SNE map) | core (drop border-line images) | random (control).",
    ),
    extractor: str = typer.Option("auto", "--extractor", help=EXTRACTOR_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of PCA / t-SNE / k-means / random sampling."),
) -> None:
    """Reduce the dominant classes' TRAIN images with a t-SNE map (the seed's step 4).

    Writes manifest.parquet (kept rows), tsne.csv, tsne.png and summary.json.
    Example: retinaug select --data runs/demo/data --labeler runs/demo/labeler --keep 0.5 --out runs/demo/selection
    """
    from ..manifest import load_manifest
    from ..select import SelectConfig
    from ..select import select as select_fn

    cfg = validated(
        SelectConfig,
        dict(classes=classes, keep=keep, strategy=strategy, extractor=extractor, seed=seed),
        "option(s)",
        options=True,
    )
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        chosen = select_fn(load_manifest(data), cfg, out, labeler)
    counts = ", ".join(f"{c}: {n}" for c, n in chosen["label"].value_counts().sort_index().items())
    console.print(f"kept {len(chosen)} train images ({counts}) with strategy {cfg.strategy}; map and plot in {out}")


@app.command()
def augment(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) or manifest.parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/augment)."),
    ratio: float = typer.Option(
        1.0, "--ratio", help="Copies per class as a multiple of its real train count (0.5, 1, 2; at most 7)."
    ),
    classes: str = typer.Option(
        "G,C,A,H,M", "--classes", help="Classes to augment (comma-separated codes or a task name)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed choosing which images get which flip/rotation."),
    write_files: bool = typer.Option(
        False,
        "--write-files",
        help="Also write the transformed images as PNGs (default: rows only, applied at load time).",
    ),
) -> None:
    """Traditional augmentation: flipped/rotated copies of real train images as manifest rows (origin=traditional).

    Example: retinaug augment --data runs/demo/data --ratio 2 --out runs/demo/augment
    """
    from ..augment import augment as augment_fn
    from ..classes import parse_classes
    from ..manifest import load_manifest

    with owned_output(out, "--out"):
        rows = augment_fn(load_manifest(data), ratio, parse_classes(classes), seed, out, write_files)
    counts = ", ".join(f"{c}: {n}" for c, n in rows["label"].value_counts().sort_index().items())
    console.print(f"wrote {len(rows)} traditional rows ({counts}) to {out}")
