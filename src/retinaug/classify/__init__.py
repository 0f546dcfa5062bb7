"""Classifier stage: train (fit), evaluate with patient-bootstrap CIs, label synthetic images."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".config": ("EvaluateConfig", "LabelConfig", "RowUse", "TrainConfig"),
    ".evaluate": ("evaluate",),
    ".label": ("label",),
    ".metrics": ("compute_metrics",),
    ".models": ("Classifier", "embed", "load_classifier", "predict"),
    ".train": ("fit", "train", "warm_start"),
}
lazy_exports(__name__, _EXPORTS)
__all__ = [
    "Classifier",
    "EvaluateConfig",
    "LabelConfig",
    "RowUse",
    "TrainConfig",
    "compute_metrics",
    "embed",
    "evaluate",
    "fit",
    "label",
    "load_classifier",
    "predict",
    "train",
    "warm_start",
]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import EvaluateConfig, LabelConfig, RowUse, TrainConfig
    from .evaluate import evaluate
    from .label import label
    from .metrics import compute_metrics
    from .models import Classifier, embed, load_classifier, predict
    from .train import fit, train, warm_start
