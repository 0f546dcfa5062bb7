"""Classifier stage: train (fit), evaluate with patient-bootstrap CIs, label synthetic images."""

from .config import RowUse, TrainConfig
from .evaluate import evaluate
from .label import label
from .metrics import compute_metrics
from .models import Classifier, embed, load_classifier, predict
from .train import fit, train, warm_start

__all__ = [
    "Classifier",
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
