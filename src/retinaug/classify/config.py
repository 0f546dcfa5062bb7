"""Training configuration of the classifier (one pydantic model, nestable in the pipeline's YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..classes import Task
from ..tracking import TRACKER_HELP, Tracker


class TrainConfig(BaseModel):
    """Everything that decides a classifier fit; saved verbatim in model.json so a fit can be repeated."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = Field("resnet18", description="timm model name (vgg19 = the paper's; resnet18, resnet10t for CPU).")
    size: int = Field(64, ge=16, le=1024, description="Square input resolution in pixels.")
    task: Task = Field("5-class", description="Named task (5-class, 7-class, 8-class) or comma-separated class codes.")
    epochs: int = Field(15, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(32, ge=1, description="Images per optimisation step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "onecycle", description="Learning-rate schedule, stepped per batch (onecycle warms up for 20% of steps)."
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    augment: bool = Field(True, description="On-the-fly augmentation: horizontal flip, small rotation, colour jitter.")
    rotation: float = Field(10.0, ge=0, le=180, description="Maximum rotation in degrees when augment is on.")
    imbalance: Literal["none", "class-weights", "oversample"] = Field(
        "none",
        description="Class-imbalance control: none, class-weights (inverse-frequency weighted loss) or "
        "oversample (WeightedRandomSampler drawing every class equally often).",
    )
    patience: int = Field(5, ge=1, description="Stop after this many epochs without a better validation macro-F1.")
    seed: int = Field(0, description="Seed for weights, shuffling, sampling and augmentation.")
    pretrained: Path | None = Field(
        None, description="Local .safetensors file with backbone weights (e.g. ImageNet VGG19); default: from scratch."
    )
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout before the classification layer.")
    head_hidden: int = Field(
        512, ge=8, description="vgg* only: width of the dense layer after global pooling (the seed's Keras head)."
    )
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 autocast where the CPU has bf16 units (AMX/AVX512-BF16) or the GPU supports it, fp16 on older GPUs, else fp32 (no); training and inference."
    )
    cpu: bool = Field(False, description="Force the CPU even when a GPU is available.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = in-process, fully deterministic).")
    tracker: Tracker = Field("none", description=TRACKER_HELP)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        """A timm architecture name (timm's registry only: nothing is downloaded), so a typo fails when the config is
        read, not after a generator has trained for an hour."""
        import difflib

        import timm

        if not timm.is_model(v):
            close = difflib.get_close_matches(v.split(".")[0], timm.list_models(), n=5)
            raise ValueError(f"unknown backbone {v!r}: not a timm model name" + (f" (similar: {', '.join(close)})" if close else ""))
        return v
