"""CLI verbs of the quality engineer's stages: `select`, `augment`, `match`, `audit` (thin wrappers)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

from ..errors import RetinaugError
from ..features import EXTRACTOR_HELP
from ..progress import console
from .app import app

SPLITS_HELP = "only rows of this split: train | val | test | all"


def _validated(model, **values):
    try:
        return model(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RetinaugError(f"invalid option(s): {problems}") from None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _rows(manifest: Path, split: str):
    from ..manifest import load_manifest

    df = load_manifest(manifest)
    if split == "all":
        return df
    if split not in ("train", "val", "test"):
        raise RetinaugError(f"unknown split {split!r}: use train, val, test or all")
    return df[df["split"] == split].reset_index(drop=True)


@app.command()
def select(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) or manifest.parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/selection)."),
    labeler: Optional[Path] = typer.Option(None, "--labeler", help="Trained labeler folder (RUN/labeler): its features are used by default."),
    classes: str = typer.Option("D,N", "--classes", help="Dominant classes to reduce (comma-separated codes)."),
    keep: float = typer.Option(0.5, "--keep", help="Per class: a fraction <= 1 (0.5 = half) or a count > 1 (200)."),
    strategy: str = typer.Option("coverage", "--strategy", help="coverage (spread over the t-SNE map) | core (drop border-line images) | random (control)."),
    extractor: str = typer.Option("auto", "--extractor", help=EXTRACTOR_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of PCA / t-SNE / k-means / random sampling."),
) -> None:
    """Reduce the dominant classes' TRAIN images with a t-SNE map (the seed's step 4).

    Writes manifest.parquet (kept rows), tsne.csv, tsne.png and summary.json.
    Example: retinaug select --data runs/demo/data --labeler runs/demo/labeler --keep 0.5 --out runs/demo/selection
    """
    from ..classes import parse_classes
    from ..manifest import load_manifest
    from ..quality import SelectConfig
    from ..select import select as select_fn

    cfg = _validated(SelectConfig, classes=list(parse_classes(classes)), keep=keep, strategy=strategy, extractor=extractor, seed=seed)
    chosen = select_fn(load_manifest(data), cfg, out, labeler)
    counts = ", ".join(f"{c}: {n}" for c, n in chosen["label"].value_counts().sort_index().items())
    console.print(f"kept {len(chosen)} train images ({counts}) with strategy {cfg.strategy}; map and plot in {out}")


@app.command()
def augment(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) or manifest.parquet."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/augment)."),
    ratio: float = typer.Option(1.0, "--ratio", help="Copies per class as a multiple of its real train count (0.5, 1, 2; at most 7)."),
    classes: str = typer.Option("G,C,A,H,M", "--classes", help="Classes to augment (comma-separated codes or a task name)."),
    seed: int = typer.Option(0, "--seed", help="Seed choosing which images get which flip/rotation."),
    write_files: bool = typer.Option(False, "--write-files", help="Also write the transformed images as PNGs (default: rows only, applied at load time)."),
) -> None:
    """Traditional augmentation: flipped/rotated copies of real train images as manifest rows (origin=traditional).

    Example: retinaug augment --data runs/demo/data --ratio 2 --out runs/demo/augment
    """
    from ..augment import augment as augment_fn
    from ..classes import parse_classes
    from ..manifest import load_manifest

    rows = augment_fn(load_manifest(data), ratio, parse_classes(classes), seed, out, write_files)
    counts = ", ".join(f"{c}: {n}" for c, n in rows["label"].value_counts().sort_index().items())
    console.print(f"wrote {len(rows)} traditional rows ({counts}) to {out}")


@app.command()
def match(
    query: Path = typer.Option(..., "--query", help="Manifest (folder or .parquet) of the images to look up, e.g. RUN/synthetic."),
    reference: Path = typer.Option(..., "--reference", help="Manifest of the images to search, e.g. RUN/data."),
    out: Path = typer.Option(..., "--out", help="Output folder for match.csv and match.png."),
    top_k: int = typer.Option(10, "--top-k", help="Neighbours per query image."),
    extractor: str = typer.Option("auto", "--extractor", help=EXTRACTOR_HELP),
    labeler: Optional[Path] = typer.Option(None, "--labeler", help="Trained labeler folder (for --extractor labeler/auto)."),
    query_split: str = typer.Option("all", "--query-split", help=SPLITS_HELP),
    reference_split: str = typer.Option("all", "--reference-split", help=SPLITS_HELP),
    ssim_size: int = typer.Option(64, "--ssim-size", help="Image side (px) at which SSIM of the top pairs is computed."),
) -> None:
    """Top-k most similar reference images for each query image: cosine of features, then SSIM on those pairs.

    Example: retinaug match --query runs/demo/synthetic --reference runs/demo/data --reference-split train --top-k 5 --out runs/demo/quality
    """
    from ..quality import match as match_fn

    table = match_fn(_rows(query, query_split), _rows(reference, reference_split), top_k, extractor, out, labeler, ssim_size)
    best = table[table["rank"] == 1]
    console.print(
        f"{best['query'].nunique()} queries x top-{table['rank'].max()}; rank-1 cosine median {best['cosine'].median():.4f}, "
        f"max {best['cosine'].max():.4f}; wrote {out / 'match.csv'} and {out / 'match.png'}"
    )


@app.command()
def audit(
    synthetic: Path = typer.Option(..., "--synthetic", help="Synthetic manifest folder (RUN/synthetic)."),
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data): its real train rows are the generator's training images."),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/quality)."),
    labeler: Optional[Path] = typer.Option(None, "--labeler", help="Trained labeler folder: its features are used by default."),
    extractor: str = typer.Option("auto", "--extractor", help=EXTRACTOR_HELP),
    quantile: float = typer.Option(0.99, "--quantile", help="Memorization threshold: this quantile of real test-vs-train nearest-neighbour cosine, per class."),
    accepted_only: bool = typer.Option(False, "--accepted-only", help="Audit only the synthetic images the labeler accepted."),
    top_k: int = typer.Option(5, "--top-k", help="Training neighbours per synthetic image in match.csv."),
) -> None:
    """Audit synthetic images: memorization vs a real test-vs-train baseline, FID/KID, k-NN precision/recall.

    Writes audit.json, memorization.csv, similarity_hist.png, match.csv, match.png.
    Example: retinaug audit --synthetic runs/demo/synthetic --data runs/demo/data --labeler runs/demo/labeler --out runs/demo/quality
    """
    from ..manifest import load_manifest
    from ..quality import AuditConfig
    from ..quality import audit as audit_fn

    cfg = _validated(AuditConfig, extractor=extractor, quantile=quantile, accepted_only=accepted_only, top_k=top_k)
    report = audit_fn(load_manifest(synthetic), load_manifest(data), out, labeler=labeler, config=cfg)
    overall = report["overall"]
    console.print(f"audited {report['n_synthetic']} synthetic images ({report['extractor']} features)")
    for code, res in report["per_class"].items():
        mem = report["memorization"][code]
        console.print(f"  {code}: memorized {mem['n_flagged']}/{res['n_synthetic']} (threshold {mem['threshold']:.4f}), FID {_fmt(res['fid'])}")
    console.print(f"overall: memorization rate {report['memorization']['rate']:.3f}, FID {_fmt(overall['fid'])} (real test vs train: {_fmt(overall['fid_test_vs_train'])}); wrote {out}/audit.json")
