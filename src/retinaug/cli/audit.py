"""CLI verbs that compare images across sets: `match` (top-k similar images), `check-overlap` (near-copies between
two datasets) and `audit` (memorization, FID/KID, k-NN precision/recall, class fidelity, CAS); thin wrappers over
`retinaug.quality`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import RetinaugError, validated
from ..ownership import owned_output
from .app import EXTRACTOR_HELP, app, console

SPLITS_HELP = "only rows of this split: train | val | test | all"


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
def match(
    query: Path = typer.Option(
        ..., "--query", help="Manifest (folder or .parquet) of the images to look up, e.g. RUN/synthetic."
    ),
    reference: Path = typer.Option(..., "--reference", help="Manifest of the images to search, e.g. RUN/data."),
    out: Path = typer.Option(..., "--out", help="Output folder for match.csv and match.png."),
    top_k: int = typer.Option(10, "--top-k", help="Neighbours per query image."),
    extractor: str = typer.Option("auto", "--extractor", help=EXTRACTOR_HELP),
    labeler: Optional[Path] = typer.Option(
        None, "--labeler", help="Trained labeler folder (for --extractor labeler/auto)."
    ),
    query_split: str = typer.Option("all", "--query-split", help=SPLITS_HELP),
    reference_split: str = typer.Option("all", "--reference-split", help=SPLITS_HELP),
    ssim_size: int = typer.Option(
        64, "--ssim-size", help="Image side (px) at which SSIM of the top pairs is computed."
    ),
) -> None:
    """Top-k most similar reference images for each query image: cosine of features, then SSIM on those pairs.

    Example: retinaug match --query runs/demo/synthetic --reference runs/demo/data --reference-split train --top-k 5 --out runs/demo/quality
    """
    from ..quality import match as match_fn

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        table = match_fn(
            _rows(query, query_split), _rows(reference, reference_split), top_k, extractor, out, labeler, ssim_size
        )
    best = table[table["rank"] == 1]
    console.print(
        f"{best['query'].nunique()} queries x top-{table['rank'].max()}; rank-1 cosine median {best['cosine'].median():.4f}, "
        f"max {best['cosine'].max():.4f}; wrote {out / 'match.csv'} and {out / 'match.png'}"
    )


def _overlap_set(path: Path, split: str):
    """A prepared dataset (manifest folder or .parquet), a run folder (its real TRAIN images) or a trained classifier
    folder (the real images it learnt from)."""
    from ..classify.models import TRAIN_ROWS
    from ..manifest import load_manifest, manifest_file

    if not manifest_file(path).is_file():
        if (path / TRAIN_ROWS).is_file():
            return load_manifest(path / TRAIN_ROWS)
        if manifest_file(path / "data").is_file():
            df = load_manifest(path / "data")
            return df[(df["split"] == "train") & (df["origin"] == "real")].reset_index(drop=True)
    return _rows(path, split)


@app.command("check-overlap")
def check_overlap(
    a: Path = typer.Argument(
        ..., metavar="A", help="A prepared dataset (RUN/data, a .parquet manifest), e.g. an external test set."
    ),
    b: Path = typer.Argument(
        ...,
        metavar="B",
        help="The dataset to compare with: a manifest, a run folder (its real train images) or a trained classifier folder (its training images).",
    ),
    out: Path = typer.Option(
        Path("overlap"), "--out", help="Output folder for overlap.csv, overlap.png, overlap.json."
    ),
    threshold: Optional[float] = typer.Option(
        None,
        "--threshold",
        help="Grey-level SSIM (at --ssim-size px) from which two images are near-copies. \\[default: 0.97]",
    ),
    top_k: int = typer.Option(3, "--top-k", help="Candidates per image (by feature cosine) whose SSIM is computed."),
    extractor: str = typer.Option(
        "pixels",
        "--extractor",
        help="Features of the candidate search: 'pixels' (default; finds resized copies), 'labeler', 'imagenet[:<timm backbone>]', or a local CLIP or labeler folder.",
    ),
    labeler: Optional[Path] = typer.Option(None, "--labeler", help="Trained labeler folder (for --extractor labeler)."),
    split_a: str = typer.Option("all", "--split-a", help="Rows of A: " + SPLITS_HELP),
    split_b: str = typer.Option("all", "--split-b", help="Rows of B (manifests only): " + SPLITS_HELP),
    ssim_size: int = typer.Option(64, "--ssim-size", help="Image side (px) at which SSIM is computed."),
) -> None:
    """Near-duplicate images between two datasets (resized, re-encoded or renamed copies included): feature cosine
    finds candidates, SSIM decides. Exit 1 when any pair reaches --threshold.

    Writes overlap.csv (each image of A with its closest image of B), overlap.png (the closest pairs), overlap.json.
    Example: retinaug check-overlap runs/ext/data runs/odir --out runs/ext/overlap
    """
    from ..quality.overlap import THRESHOLD
    from ..quality.overlap import check_overlap as check_fn

    threshold = THRESHOLD if threshold is None else threshold
    with owned_output(out, "--out"):
        table, summary = check_fn(
            _overlap_set(a, split_a), _overlap_set(b, split_b), out, threshold, top_k, extractor, labeler, ssim_size
        )
    if summary["duplicates"]:
        first = table.iloc[0]
        console.print(
            f"{summary['duplicates']} of the {summary['n_a']} images of {a} ({summary['a_patients']} patients) are near-copies "
            f"of images of {b} (SSIM >= {threshold}), e.g. {first['a_path']} ~ {first['b_path']} (SSIM {first['ssim']:.3f}); "
            f"wrote {out / 'overlap.csv'} and {out / 'overlap.png'}",
            highlight=False,
        )
        raise typer.Exit(1)
    closest = (
        ""
        if summary["ssim_max_below_threshold"] is None
        else f" (closest pair: SSIM {summary['ssim_max_below_threshold']:.3f})"
    )
    console.print(
        f"no near-copies: none of the {summary['n_a']} images of {a} reaches SSIM {threshold} with the {summary['n_b']} of {b}{closest}; wrote {out}",
        highlight=False,
    )


def _recipe(path: Path | None):
    """CAS's classifier recipe: a pipeline YAML (e.g. RUN/config.yaml: its experiments.train) or a YAML of
    TrainConfig fields; none: `retinaug train`'s defaults (recipe auto)."""
    from ..config import load_config
    from ..io import read_yaml
    from .classify import train_config

    if path is not None and "experiments" in read_yaml(path):
        return load_config(path).experiments.train
    return train_config(path, {})


@app.command()
def audit(
    synthetic: Path = typer.Option(
        ..., "--synthetic", help="Synthetic manifest folder (RUN/synthetic, or RUN/label for the labelled one)."
    ),
    data: Path = typer.Option(
        ..., "--data", help="Prepared data folder (RUN/data): its real train rows are the generator's training images."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (e.g. RUN/quality)."),
    labeler: Optional[Path] = typer.Option(
        None, "--labeler", help="Trained labeler folder: its features are used by default, and class fidelity needs it."
    ),
    extractor: str = typer.Option("auto", "--extractor", help=EXTRACTOR_HELP),
    quantile: float = typer.Option(
        0.99,
        "--quantile",
        help="Memorization threshold: this quantile of real test-vs-train nearest-neighbour cosine, per class.",
    ),
    accepted_only: bool = typer.Option(
        False,
        "--accepted-only",
        help="Audit only the synthetic images the labeler accepted (class fidelity and CAS still use all).",
    ),
    top_k: int = typer.Option(5, "--top-k", help="Training neighbours per synthetic image in match.csv."),
    class_fidelity: bool = typer.Option(
        True, "--class-fidelity/--no-class-fidelity", help="Class fidelity (needs --labeler or a labelled manifest)."
    ),
    cas: bool = typer.Option(
        True,
        "--cas/--no-cas",
        help="CAS: train the recipe on synthetic images only and on real train images (two fits).",
    ),
    recipe: Optional[Path] = typer.Option(
        None,
        "--recipe",
        help="CAS classifier recipe: a pipeline YAML (RUN/config.yaml: its experiments.train) or a YAML of train settings; default: `retinaug train`'s defaults.",
    ),
    cas_n_boot: int = typer.Option(
        200, "--cas-n-boot", help="Patient-bootstrap resamples for the CAS intervals (0: none)."
    ),
) -> None:
    """Audit synthetic images: memorization vs a real test-vs-train baseline (img2img parents apart), FID/KID,
    k-NN precision/recall, class fidelity and CAS (Classification Accuracy Score).

    Writes audit.json, memorization.csv, similarity_hist.png, match.csv, match.png, class_samples.png,
    class_fidelity.csv and cas/ (the two CAS classifiers).
    Example: retinaug audit --synthetic runs/demo/synthetic --data runs/demo/data --labeler runs/demo/labeler --recipe runs/demo/config.yaml --out runs/demo/quality
    """
    from ..manifest import load_manifest
    from ..quality import AuditConfig
    from ..quality import audit as audit_fn

    cfg = validated(
        AuditConfig,
        dict(
            extractor=extractor,
            quantile=quantile,
            accepted_only=accepted_only,
            top_k=top_k,
            class_fidelity=class_fidelity,
            cas=cas,
            cas_n_boot=cas_n_boot,
        ),
        "option(s)",
        options=True,
    )
    train_cfg = _recipe(recipe) if cas else None
    with owned_output(out, "--out"):
        report = audit_fn(
            load_manifest(synthetic), load_manifest(data), out, labeler=labeler, config=cfg, cas_recipe=train_cfg
        )
    overall = report["overall"]
    console.print(f"audited {report['n_synthetic']} synthetic images ({report['extractor']} features)")
    for code, res in report["per_class"].items():
        mem = report["memorization"][code]
        parents = f", parent copies {mem['n_parent_copies']}/{mem['n_img2img']}" if mem["n_img2img"] else ""
        console.print(
            f"  {code}: memorized {mem['n_flagged']}/{res['n_synthetic']} (threshold {mem['threshold']:.4f}){parents}, FID {_fmt(res['fid'])}"
        )
    console.print(
        f"overall: memorization rate {report['memorization']['rate']:.3f}, FID {_fmt(overall['fid'])} (real test vs train: {_fmt(overall['fid_test_vs_train'])})"
    )
    fidelity = report["class_fidelity"]
    if "per_class" in fidelity:
        cells = ", ".join(f"{c} {_fmt(r['fidelity'])}" for c, r in fidelity["per_class"].items())
        console.print(
            f"class fidelity (1.0 = as recognisable as real test images): {cells}; macro {_fmt(fidelity['macro_fidelity'])}"
        )
    result = report["cas"]
    if "synthetic" in result:
        console.print(
            f"CAS macro-F1 {_fmt(result['synthetic']['macro_f1'])} vs real-trained {_fmt(result['real']['macro_f1'])} "
            f"(ratio {_fmt(result['f1_ratio'])}) on {result['n_test']} real test images"
        )
    elif "reason" in result:
        console.print(f"CAS not computed: {result['reason']}")
    console.print(f"wrote {out}/audit.json")
