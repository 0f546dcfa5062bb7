"""timm backbones, safetensors checkpoints (never pickle), and the loaded Classifier with predict/embed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.layers import ClassifierHead
from torch import nn

from ..errors import RetinaugError
from ..hardware import autocast, resolve_precision
from ..io import atomic_path, load_json, sha256_file, write_json_atomic, writing_weights
from ..manifest import REQUIRED, new_manifest, save_manifest
from .config import TrainConfig
from .data import load_images, normalise
from .weights import PICKLE_SUFFIXES, init_file, resolve_pretrained

log = logging.getLogger("retinaug.classify")
WEIGHTS = "model.safetensors"
META = "model.json"
TRAIN_ROWS = "train_rows.parquet"  # the real images it learnt from: `evaluate` checks a test set against them


def create_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """A timm backbone with a `num_classes` head. vgg* gets the seed's Keras head (global average pooling ->
    dense + ReLU -> dropout -> linear) instead of timm's 4096-wide 7x7 ConvMlp, which is huge and assumes 224 px."""
    try:
        model = timm.create_model(config.backbone, pretrained=False, num_classes=num_classes, drop_rate=config.dropout)
    except RuntimeError as exc:
        raise RetinaugError(
            f"unknown backbone {config.backbone!r} ({exc}); use a timm model name such as resnet18"
        ) from None
    if config.backbone.startswith("vgg"):
        channels = model.pre_logits.fc1.in_channels
        model.pre_logits = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, config.head_hidden, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        )
        model.num_features = model.head_hidden_size = config.head_hidden
        model.head = ClassifierHead(config.head_hidden, num_classes, pool_type="avg")
    if config.init == "all-classes":
        raise RetinaugError(
            "init: all-classes needs the whole train split: use train(), or warm_start() and pass its path as init"
        )
    if isinstance(config.init, Path):
        load_backbone_weights(model, init_file(config.init), reinit_head=True)
    elif config.pretrained:
        path = resolve_pretrained(config.pretrained, config.backbone)
        load_backbone_weights(model, path)
        # which file `pretrained` turned out to be (imagenet: the HF cache's or a package's): save_classifier records it
        model.pretrained_weights = {"spec": str(config.pretrained), "file": str(path), "sha256": sha256_file(path)}
    return model


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a weights file, refusing pickle formats (they can run code) and corrupt files with a clear message."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise RetinaugError(
            f"{path} looks like a pickle checkpoint ({path.suffix}); pickles can execute code and are refused. "
            "Convert it to .safetensors (safetensors.torch.save_file) and pass that file."
        )
    if not path.is_file():
        raise RetinaugError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RetinaugError(
            f"{path} is not a valid safetensors file ({exc}); it may be corrupt or a renamed pickle"
        ) from None


def load_backbone_weights(model: nn.Module, path: Path, reinit_head: bool = False) -> None:
    """Initialise from local (e.g. ImageNet) weights; tensors whose shape differs (the new head) stay random.
    `reinit_head`: the classification layer stays at initialisation even when its shape fits (fine-tuning a
    classifier of other classes, or of the same codes in another task: its class rows mean nothing here)."""
    state = read_safetensors(path)
    own = model.state_dict()
    head = head_keys(model) if reinit_head else set()
    usable = {k: v for k, v in state.items() if k in own and k not in head and own[k].shape == v.shape}
    if not usable:
        raise RetinaugError(f"no tensor in {path} matches backbone {type(model).__name__}: wrong weights file?")
    model.load_state_dict(usable, strict=False)
    skipped = len(own) - len(usable)
    what = "init" if reinit_head else "pretrained"
    log.info(
        "%s: loaded %d tensors from %s; %d left at initialisation (head / mismatched)", what, len(usable), path, skipped
    )


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the final classification layer (timm's `get_classifier()`)."""
    head = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {f"{prefix}.{k}" for k in head.state_dict()}


def save_classifier(model: nn.Module, meta: dict, out: Path, train_df: pd.DataFrame | None = None) -> None:
    """Write model.safetensors then model.json (with the weights' SHA-256, checked on load, and the pretrained file
    the fit started from), both atomically, and the real training images as a manifest (train_rows.parquet)."""
    out.mkdir(parents=True, exist_ok=True)
    if train_df is not None:
        real = train_df[train_df["origin"] == "real"].drop_duplicates("path")
        save_manifest(new_manifest(real[list(REQUIRED)].to_dict("records")), out / TRAIN_ROWS)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp, writing_weights(out / WEIGHTS):
        save_file(state, str(tmp))
    meta = {**meta, "weights_sha256": sha256_file(out / WEIGHTS)}
    if hasattr(model, "pretrained_weights"):
        meta["pretrained_weights"] = model.pretrained_weights
    write_json_atomic(out / META, meta)


@dataclass
class Classifier:
    """A trained classifier in eval mode with what is needed to feed it (classes, size, normalisation)."""

    model: nn.Module
    classes: tuple[str, ...]
    size: int
    meta: dict
    device: torch.device = torch.device("cpu")
    precision: str = "no"  # resolved autocast precision of inference (the training config's, on this device)
    folder: Path | None = None  # where it was loaded from

    @property
    def tta(self) -> bool:
        """Whether it was trained to be used with test-time augmentation (its config's `tta`)."""
        return bool(self.meta["config"].get("tta", False))

    def _norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.meta["mean"], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.meta["std"], device=self.device).view(1, 3, 1, 1)
        return mean, std


def load_classifier(model_dir: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load RUN/labeler (model.json + model.safetensors). Refuses pickles, files whose checksum differs from
    model.json (tampered or corrupt) and weights whose tensors do not fit the recorded architecture."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        if model_dir.suffix.lower() in PICKLE_SUFFIXES:
            read_safetensors(model_dir)  # raises the pickle message
        model_dir = model_dir.parent
    meta_file, weights = model_dir / META, model_dir / WEIGHTS
    if not meta_file.is_file() or not weights.is_file():
        raise RetinaugError(
            f"{model_dir} is not a trained classifier: expected {META} and {WEIGHTS} (run `retinaug train`)"
        )
    meta = load_json(meta_file, "classifier metadata", "retrain with `retinaug train`")
    lacking = [k for k in ("config", "classes", "size", "mean", "std") if not isinstance(meta, dict) or k not in meta]
    if lacking:
        raise RetinaugError(f"{meta_file} is damaged: it lacks {', '.join(lacking)}; retrain with `retinaug train`")
    recorded = meta.get("weights_sha256")
    if recorded and sha256_file(weights) != recorded:
        raise RetinaugError(
            f"{weights} does not match the checksum recorded in {meta_file}: the file was modified or corrupted; retrain"
        )
    state = read_safetensors(weights)
    try:
        config = TrainConfig.model_validate({**meta["config"], "pretrained": None, "init": "scratch"})
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise RetinaugError(f"{meta_file} is damaged: its config is not a classifier config ({exc}); retrain") from None
    model = create_model(config, len(meta["classes"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise RetinaugError(
            f"{weights} does not fit backbone {config.backbone} with {len(meta['classes'])} classes: {' '.join(first)}"
        ) from None
    dev = torch.device(device)
    model = model.to(dev).to(memory_format=torch.channels_last).eval()
    return Classifier(
        model,
        tuple(meta["classes"]),
        int(meta["size"]),
        meta,
        dev,
        resolve_precision(config.mixed_precision, dev, config.size),
        model_dir,
    )


def _as_classifier(clf: Classifier | str | Path) -> Classifier:
    return clf if isinstance(clf, Classifier) else load_classifier(clf)


def class_probs(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Softmax probabilities (float32); with `tta` the mean over each image and its horizontal mirror (a mirrored
    left eye looks like a right eye, so the mirror is an equally valid view)."""
    probs = model(x).float().softmax(dim=1)
    if tta:
        probs = (probs + model(x.flip(3)).float().softmax(dim=1)) / 2
    return probs


@torch.inference_mode()
def _batches(clf: Classifier, df: pd.DataFrame, batch_size: int, features: bool, tta: bool = False) -> np.ndarray:
    pixels = torch.from_numpy(load_images(df, clf.size)).permute(0, 3, 1, 2)
    mean, std = clf._norm()
    outs = []
    for start in range(0, len(pixels), batch_size):
        x = normalise(pixels[start : start + batch_size].to(clf.device), mean, std)
        with autocast(clf.precision, clf.device):
            if features:
                y = clf.model.forward_head(clf.model.forward_features(x), pre_logits=True)
            else:
                y = class_probs(clf.model, x, tta)
        outs.append(y.float().cpu().numpy())
    if not outs:
        return np.zeros((0, len(clf.classes) if not features else clf.model.num_features), dtype=np.float32)
    return np.concatenate(outs)


def predict(
    clf: Classifier | str | Path, df: pd.DataFrame, batch_size: int = 64, tta: bool | None = None
) -> np.ndarray:
    """Class probabilities (N, n_classes), columns in `clf.classes` order. `tta`: average each image with its mirror
    (default: as the model was trained to be used, its config's `tta`)."""
    clf = _as_classifier(clf)
    return _batches(clf, df, batch_size, features=False, tta=clf.tta if tta is None else tta)


def embed(clf: Classifier | str | Path, df: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """Penultimate-layer features (N, D): what t-SNE selection and the memorization audit compare."""
    return _batches(_as_classifier(clf), df, batch_size, features=True)
