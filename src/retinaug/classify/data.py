"""Pixels for the classifier: images from the shared cache (row transforms applied), on-the-fly augmentation,
and the imbalance-aware DataLoader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from ..cache import image_cache
from .config import TrainConfig


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
