"""CLI verbs that compare images across sets: `match` (top-k similar images), `check-overlap` (near-copies between
two datasets) and `audit` (memorization, FID/KID, k-NN precision/recall, class fidelity, CAS); thin wrappers over
`retinaug.quality`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..ownership import owned_output
from ..quality.config import AuditConfig, MatchConfig, OverlapConfig
from .app import app, console
from .classify import TRAIN_DEFAULTS, TrainConfig, classifier_section
from .settings import settings


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


@app.command()
@settings(MatchConfig, ("top_k", "extractor", "query_split", "reference_split", "ssim_size"))
def match(
    query: Path = typer.Option(
        ..., "--query", help="Manifest (folder or .parquet) of the images to look up, e.g. RUN/synthetic."
    ),
    reference: Path = typer.Option(..., "--reference", help="Manifest of the images to search, e.g. RUN/data."),
    out: Path = typer.Option(..., "--out", help="Output folder for match.csv and match.png."),
    labeler: Optional[Path] = typer.Option(
        None, "--labeler", help="Trained labeler folder (for --extractor labeler/auto)."
    ),
    config: MatchConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Top-k most similar reference images for each query image: cosine of features, then SSIM on those pairs.

    Example: retinaug match --query runs/demo/synthetic --reference runs/demo/data --reference-split train --top-k 5 --out runs/demo/quality
    """
    from ..quality import match as match_fn

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        table = match_fn(query, reference, config, out, labeler)
    best = table[table["rank"] == 1]
    console.print(
        f"{best['query'].nunique()} queries x top-{table['rank'].max()}; rank-1 cosine median {best['cosine'].median():.4f}, "
        f"max {best['cosine'].max():.4f}; wrote {out / 'match.csv'} and {out / 'match.png'}"
    )


def _overlap_set(path: Path):
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
    return load_manifest(path)


@app.command("check-overlap")
@settings(OverlapConfig, ("threshold", "top_k", "extractor", "split_a", "split_b", "ssim_size"))
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
    labeler: Optional[Path] = typer.Option(None, "--labeler", help="Trained labeler folder (for --extractor labeler)."),
    config: OverlapConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Near-duplicate images between two datasets (resized, re-encoded or renamed copies included): feature cosine
    finds candidates, SSIM decides. Exit 1 when any pair reaches --threshold.

    Writes overlap.csv (each image of A with its closest image of B), overlap.png (the closest pairs), overlap.json.
    Example: retinaug check-overlap runs/ext/data runs/odir --out runs/ext/overlap
    """
    from ..quality.overlap import check_overlap as check_fn

    threshold = config.threshold
    with owned_output(out, "--out"):
        table, summary = check_fn(_overlap_set(a), _overlap_set(b), config, out, labeler)
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


def _recipe(path: Path):
    """CAS's classifier recipe from a file: a pipeline YAML (e.g. RUN/config.yaml: its experiments.train) or a YAML
    of TrainConfig fields (recipe auto unless it says otherwise)."""
    from ..config import load_config, load_model
    from ..io import read_yaml

    if "experiments" in read_yaml(path):
        return load_config(path).experiments.train
    return load_model(TrainConfig, path, defaults=TRAIN_DEFAULTS, read=classifier_section)


@app.command()
@settings(
    AuditConfig,
    ("extractor", "quantile", "accepted_only", "top_k", "class_fidelity", "cas", "cas_n_boot"),
    defaults={"cas_recipe": TRAIN_DEFAULTS},
    example="cas_recipe.epochs=5",
)
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
    recipe: Optional[Path] = typer.Option(
        None,
        "--recipe",
        help="CAS classifier recipe from a file: a pipeline YAML (RUN/config.yaml: its experiments.train) or a YAML of train settings; it replaces cas_recipe. Default: `retinaug train`'s defaults.",
    ),
    config: AuditConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Audit synthetic images: memorization vs a real test-vs-train baseline (img2img parents apart), FID/KID,
    k-NN precision/recall, class fidelity and CAS (Classification Accuracy Score).

    Writes audit.json, memorization.csv, similarity_hist.png, match.csv, match.png, class_samples.png,
    class_fidelity.csv and cas/ (the two CAS classifiers).
    Example: retinaug audit --synthetic runs/demo/synthetic --data runs/demo/data --labeler runs/demo/labeler --recipe runs/demo/config.yaml --out runs/demo/quality
    """
    from ..quality import audit as audit_fn

    if recipe is not None:
        config = config.model_copy(update={"cas_recipe": _recipe(recipe)})
    with owned_output(out, "--out"):
        report = audit_fn(synthetic, data, config, out, labeler=labeler)
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
