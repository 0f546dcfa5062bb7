"""Pixels for the classifier: images from the shared cache (row transforms applied), on-the-fly augmentation,
the imbalance-aware DataLoader, and the epoch's replacement of real rows by synthetic ones."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from ..cache import image_cache
from ..errors import RetinaugError
from .config import TrainConfig

log = logging.getLogger("retinaug.classify")


def load_images(df: pd.DataFrame, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 pixels of `df`'s rows, in order, with each row's transform applied."""
    if not len(df):
        return np.empty((0, size, size, 3), dtype=np.uint8)
    return image_cache(df, size).rows(df)


def augmentation(config: TrainConfig) -> v2.Transform:
    """Label-preserving fundus augmentation on uint8 CHW tensors (a left eye mirrored looks like a right eye):
    a random square crop (area >= crop_scale, resized back to `size`; off at 1), flip, rotation, and brightness/
    contrast/saturation jitter (off at 0)."""
    steps: list[v2.Transform] = []
    if config.crop_scale < 1:  # square crops keep the round field of view round
        steps.append(v2.RandomResizedCrop(config.size, scale=(config.crop_scale, 1.0), ratio=(1.0, 1.0), antialias=True))
    steps += [v2.RandomHorizontalFlip(), v2.RandomRotation(config.rotation)]
    if config.color_jitter > 0:  # no hue: 3x the cost of the rest
        j = config.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j / 2))
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """uint8 CHW images held in memory (small at classifier resolutions) + integer labels."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, transform: v2.Transform | None = None):
        self.images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


class TrainingRows(ImageDataset):
    """A fit's training set. Position i shows row `shown[i]` (row `positions[i]`, unless the epoch's replacement drew
    a synthetic row for it), and items are (image, row): the loop looks up the row's label, target and loss weight.
    `labels` are the positions' own labels, which the oversampler and the class weights count."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, positions: np.ndarray, transform: v2.Transform | None = None):
        super().__init__(pixels, np.asarray(labels)[positions], transform)
        self.shown = np.asarray(positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.shown[i])
        x = self.images[row]
        return (self.transform(x) if self.transform else x), row


class Replacement:
    """DA-Fusion's use of synthetic images (Trabucco et al., ICLR 2024): each epoch, each real row with synthetic
    stand-ins is shown as one of them instead, with probability `alpha`, the stand-in drawn uniformly, so the epoch
    keeps its length and the real rows' share. A real row's stand-ins are its synthetic children (rows whose `parent`
    is its path: img2img); a real row without children takes the parentless synthetic rows of its class (txt2img).
    Positions are the non-synthetic rows (real and traditional; traditional rows are never replaced). The draw
    depends on the seed and the epoch only."""

    SALT = 28  # keeps this draw apart from the other draws of the seed (weights, shuffling)

    def __init__(self, df: pd.DataFrame, alpha: float, seed: int):
        df = df.reset_index(drop=True)
        self.alpha, self.seed = alpha, seed
        synthetic = (df["origin"] == "synthetic").to_numpy()
        self.positions = np.flatnonzero(~synthetic)
        parent = df["parent"].astype("string") if "parent" in df.columns else pd.Series(pd.NA, index=df.index, dtype="string")
        groups: dict[tuple[str, str], list[int]] = {}  # who a synthetic row stands in for -> those rows
        for row in np.flatnonzero(synthetic):
            key = ("class", df.at[row, "label"]) if pd.isna(parent[row]) else ("parent", os.path.normpath(parent[row]))
            groups.setdefault(key, []).append(int(row))
        number = {key: i for i, key in enumerate(groups)}
        own = df.loc[self.positions, ["path", "label", "origin"]].itertuples(index=False)
        group = np.array([number.get(("parent", os.path.normpath(path)), number.get(("class", label), -1)) if kind == "real" else -1
                          for path, label, kind in own], dtype=np.int64)
        sizes = np.array([len(rows) for rows in groups.values()] + [0], dtype=np.int64)  # the last: group -1, no stand-in
        self.count, self.start = sizes[group], (np.cumsum(sizes) - sizes)[group]
        self.pool = np.array([row for rows in groups.values() for row in rows], dtype=np.int64)
        shown = int(sizes[np.unique(group[group >= 0])].sum())
        if synthetic.any() and not shown:
            raise RetinaugError(
                f"synthetic_use replace: none of the {int(synthetic.sum())} synthetic rows can stand in for a real train row "
                "(none is an img2img child of one, none is a parentless row of their classes); were the real images moved "
                "since the synthetic ones were generated from them? Regenerate them, or use synthetic_use mix")
        if synthetic.sum() > shown:
            log.warning("synthetic_use replace: %d of %d synthetic row(s) are never shown (their img2img parent is not a "
                        "real train row of this fit)", int(synthetic.sum()) - shown, int(synthetic.sum()))

    def draw(self, epoch: int) -> np.ndarray:
        """The row each position shows in `epoch`: its own, or with probability alpha one of its stand-ins."""
        rng = np.random.default_rng([self.seed, epoch, self.SALT])
        swap = (rng.random(len(self.positions)) < self.alpha) & (self.count > 0)
        pick = rng.integers(np.maximum(self.count, 1))  # uniform over each position's stand-ins
        shown = self.positions.copy()
        shown[swap] = self.pool[self.start[swap] + pick[swap]]
        return shown


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW batch -> float, ImageNet-normalised, channels_last (faster convolutions on CPU and GPU)."""
    x = x.float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ('balanced': n / (k * count)); classes absent from the data get weight 0."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def train_loader(
    dataset: ImageDataset, batch_size: int, imbalance: str, n_classes: int, seed: int, num_workers: int = 0
) -> DataLoader:
    """Shuffled loader; with imbalance='oversample' a WeightedRandomSampler draws every class equally often.
    A seeded generator makes the order (and worker seeds) reproducible."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if imbalance == "oversample":
        labels = dataset.labels.numpy()
        per_image = class_weights(labels, n_classes)[labels]
        sampler = WeightedRandomSampler(per_image.tolist(), num_samples=len(labels), replacement=True, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        drop_last=len(dataset) > batch_size,
    )
