"""Pixels for the classifier: images from the shared cache (row transforms applied), batched augmentation,
the imbalance-aware DataLoader, the epoch's replacement of real rows by synthetic ones, and the hash of a set of
rows by what a model sees (what decides whether a trained model is still current)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from ..cache import image_cache
from ..errors import RetinaugError
from ..io import sha256_text
from .config import TrainConfig

log = logging.getLogger("retinaug.classify")


def load_images(df: pd.DataFrame, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 pixels of `df`'s rows, in order, with each row's transform applied."""
    if not len(df):
        return np.empty((0, size, size, 3), dtype=np.uint8)
    return image_cache(df, size).rows(df)


class Augment:
    """Label-preserving fundus augmentation of a whole uint8 NCHW batch, each image with its own draw (a left eye
    mirrored looks like a right eye): a random square crop (area >= crop_scale, resized back; off at 1), a horizontal
    flip, a rotation within +-rotation degrees, as one bilinear affine resampling (black outside the image, like the
    fundus background), then brightness, contrast and saturation jitter (saturation half as strong; off at 0).
    Batched, so it costs a few tensor operations per batch on the batch's device instead of a torchvision pipeline per
    image; its draws come from its own generator, seeded by the fit's seed. Returns floats in [0, 255]."""

    SALT = 31  # keeps these draws apart from the seed's other draws (weights, shuffling, replacement)

    def __init__(self, config: TrainConfig, seed: int):
        self.crop_scale, self.rotation, self.jitter = config.crop_scale, config.rotation, config.color_jitter
        self.generator = torch.Generator().manual_seed(seed * 1000 + self.SALT)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator, dtype=torch.float64)

    def draw(self, n: int) -> dict[str, torch.Tensor]:
        """Each image's parameters: flip (bool), angle (degrees), zoom (crop side / image side), shift (crop centre,
        in [-1, 1] image coordinates) and brightness, contrast, saturation factors."""
        params = {
            "flip": torch.rand(n, generator=self.generator) < 0.5,
            "angle": self._uniform(n, -self.rotation, self.rotation),
            "zoom": self._uniform(n, self.crop_scale, 1.0).sqrt(),
        }
        params["shift"] = (1 - params["zoom"]).unsqueeze(1) * self._uniform(2 * n, -1.0, 1.0).view(n, 2)
        j = self.jitter
        for name, k in (("brightness", j), ("contrast", j), ("saturation", j / 2)):
            params[name] = self._uniform(n, 1 - k, 1 + k)
        return params

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.draw(len(x)))

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        out = x.float()
        if self.rotation or self.crop_scale < 1:
            out = self._warp(out, params)
        else:  # flips alone move pixels exactly
            out = torch.where(params["flip"].to(x.device).view(-1, 1, 1, 1), out.flip(3), out)
        return self._jitter(out, params) if self.jitter else out

    @staticmethod
    def _warp(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Output pixel u samples the input at shift + zoom * R(angle) * F u (F mirrors x when flipped)."""
        angle, zoom, shift = torch.deg2rad(params["angle"]), params["zoom"], params["shift"]
        cos, sin = angle.cos() * zoom, angle.sin() * zoom
        mirror = 1.0 - 2.0 * params["flip"].double()
        theta = torch.stack(
            [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def _jitter(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """torchvision's ColorJitter arithmetic (contrast about the image's mean grey, saturation against its grey),
        per image, in a fixed order."""
        b, c, s = (params[k].to(x.device, x.dtype).view(-1, 1, 1, 1) for k in ("brightness", "contrast", "saturation"))
        x.mul_(b).clamp_(0, 255)  # in place: x is this batch's own copy, and a new 4-D temporary costs more than the op
        mean = v2.functional.rgb_to_grayscale(x).mean(dim=(2, 3), keepdim=True)
        x.sub_(mean).mul_(c).add_(mean).clamp_(0, 255)
        grey = v2.functional.rgb_to_grayscale(x)
        return x.sub_(grey).mul_(s).add_(grey).clamp_(0, 255)


class TrainingRows(Dataset):
    """A fit's training set of uint8 CHW images held in memory (small at classifier resolutions). Position i shows
    row `shown[i]` (row `positions[i]`, unless the epoch's replacement drew a synthetic row for it), and items are
    (image, row): the loop augments the batch and looks up the row's label, target and loss weight. `labels` are the
    positions' own labels, which the oversampler and the class weights count."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, positions: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
        self.labels = torch.tensor(np.asarray(labels)[positions], dtype=torch.long)
        self.shown = np.asarray(positions)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.shown[i])
        return self.images[row], row


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
        parent = (
            df["parent"].astype("string")
            if "parent" in df.columns
            else pd.Series(pd.NA, index=df.index, dtype="string")
        )
        groups: dict[tuple[str, str], list[int]] = {}  # who a synthetic row stands in for -> those rows
        for row in np.flatnonzero(synthetic):
            key = ("class", df.at[row, "label"]) if pd.isna(parent[row]) else ("parent", os.path.normpath(parent[row]))
            groups.setdefault(key, []).append(int(row))
        number = {key: i for i, key in enumerate(groups)}
        own = df.loc[self.positions, ["path", "label", "origin"]].itertuples(index=False)
        group = np.array(
            [
                number.get(("parent", os.path.normpath(path)), number.get(("class", label), -1))
                if kind == "real"
                else -1
                for path, label, kind in own
            ],
            dtype=np.int64,
        )
        # the last: group -1, no stand-in
        sizes = np.array([len(rows) for rows in groups.values()] + [0], dtype=np.int64)
        self.count, self.start = sizes[group], (np.cumsum(sizes) - sizes)[group]
        self.pool = np.array([row for rows in groups.values() for row in rows], dtype=np.int64)
        shown = int(sizes[np.unique(group[group >= 0])].sum())
        if synthetic.any() and not shown:
            raise RetinaugError(
                f"synthetic_use replace: none of the {int(synthetic.sum())} synthetic rows can stand in for a real train row "
                "(none is an img2img child of one, none is a parentless row of their classes); were the real images moved "
                "since the synthetic ones were generated from them? Regenerate them, or use synthetic_use mix"
            )
        if synthetic.sum() > shown:
            log.warning(
                "synthetic_use replace: %d of %d synthetic row(s) are never shown (their img2img parent is not a "
                "real train row of this fit)",
                int(synthetic.sum()) - shown,
                int(synthetic.sum()),
            )

    def draw(self, epoch: int) -> np.ndarray:
        """The row each position shows in `epoch`: its own, or with probability alpha one of its stand-ins."""
        rng = np.random.default_rng([self.seed, epoch, self.SALT])
        swap = (rng.random(len(self.positions)) < self.alpha) & (self.count > 0)
        pick = rng.integers(np.maximum(self.count, 1))  # uniform over each position's stand-ins
        shown = self.positions.copy()
        shown[swap] = self.pool[self.start[swap] + pick[swap]]
        return shown


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0-255) NCHW batch -> float, ImageNet-normalised, channels_last (faster convolutions on CPU and GPU)."""
    x = x.float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn's 'balanced' weights (n / (k * count), k the classes present); classes absent from the data get
    weight 0 (sklearn refuses a listed class that never occurs)."""
    present = np.unique(labels)
    w = np.zeros(n_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=labels)
    return w


def rows_hash(df: pd.DataFrame, digest: Callable[[str], str | None], target: str = "label") -> str:
    """Hash of a set of rows by what a model sees: each image's content (`digest`: path -> sha256, e.g. a cached
    `fingerprint.Digests`), its load-time transform and its label (or another `target` column); the row order
    does not count."""
    transforms = df["transform"].fillna("").astype(str) if "transform" in df.columns else [""] * len(df)
    lines = (f"{digest(p)}|{t}|{lab}" for p, t, lab in zip(df["path"], transforms, df[target]))
    return sha256_text("\n".join(sorted(lines)))


def train_loader(
    dataset: TrainingRows, batch_size: int, imbalance: str, n_classes: int, seed: int, num_workers: int = 0
) -> DataLoader:
    """Shuffled loader; with imbalance='oversample' a WeightedRandomSampler draws every class equally often.
    A seeded generator makes the order (and worker seeds) reproducible."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if imbalance == "oversample":
        labels = dataset.labels.numpy()
        per_image = class_weights(labels, n_classes)[labels]
        sampler = WeightedRandomSampler(
            per_image.tolist(), num_samples=len(labels), replacement=True, generator=generator
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        drop_last=len(dataset) > batch_size,
    )
