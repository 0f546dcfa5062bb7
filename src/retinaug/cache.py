"""Decode + resize every image once into a memory-mapped uint8 array shared by all later stages.

The cache is keyed by (image paths with their size and mtime, resolution): a changed file or a different
resolution gives a new cache file, never a stale image. Traditional-augmentation rows reuse their parent's
pixels; their `transform` (e.g. 'hflip', 'rot90', 'vflip+rot270') is applied when the image is read.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from .errors import RetinaugError
from .io import atomic_path, sha256_text, write_json_atomic
from .progress import progress_bar

TRANSFORMS = ("hflip", "vflip", "rot90", "rot180", "rot270")


def apply_transform(img: np.ndarray, transform: str | None) -> np.ndarray:
    """Apply a '+'-joined chain of flips/rotations to an HxWxC array (rotations are counter-clockwise)."""
    if transform is None or transform == "" or (isinstance(transform, float) and np.isnan(transform)):
        return img
    for step in str(transform).split("+"):
        if step == "hflip":
            img = img[:, ::-1]
        elif step == "vflip":
            img = img[::-1]
        elif step in ("rot90", "rot180", "rot270"):
            img = np.rot90(img, k=int(step[3:]) // 90, axes=(0, 1))
        else:
            raise RetinaugError(f"unknown transform {step!r}; known: {', '.join(TRANSFORMS)} (joined with '+')")
    return np.ascontiguousarray(img)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image as RGB, pad to square with black (keeps the round field of view), resize to `size`."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im = ImageOps.pad(im, (size, size), method=Image.Resampling.BICUBIC, color=(0, 0, 0))
        return np.asarray(im, dtype=np.uint8)


class ImageCache:
    """A (N, size, size, 3) uint8 memmap plus a path -> row index."""

    def __init__(self, array: np.ndarray, paths: list[str]):
        self.array = array
        self.paths = paths
        self.index = {p: i for i, p in enumerate(paths)}
        self.size = array.shape[1]

    def get(self, path: str, transform: str | None = None) -> np.ndarray:
        try:
            img = self.array[self.index[os.path.abspath(path)]]
        except KeyError:
            raise RetinaugError(f"image {path} is not in this cache; build the cache from its manifest") from None
        return apply_transform(np.asarray(img), transform)

    def rows(self, df: pd.DataFrame) -> np.ndarray:
        """All images of a manifest (transforms applied), as one (N, size, size, 3) array."""
        transforms = df["transform"] if "transform" in df.columns else [None] * len(df)
        out = np.empty((len(df), self.size, self.size, 3), dtype=np.uint8)
        for i, (p, t) in enumerate(zip(df["path"], transforms)):
            out[i] = self.get(p, None if pd.isna(t) else t)
        return out


def default_cache_dir(df: pd.DataFrame) -> Path:
    if "manifest_dir" in df.attrs:
        return Path(df.attrs["manifest_dir"]) / "cache"
    return Path(os.environ.get("RETINAUG_CACHE_DIR", Path.home() / ".cache" / "retinaug"))


def image_cache(df: pd.DataFrame, size: int, cache_dir: str | Path | None = None, workers: int = 2) -> ImageCache:
    """Return the cache for this manifest's images at `size` px, building it on first use."""
    paths = list(dict.fromkeys(os.path.abspath(p) for p in df["path"]))
    ident = []
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise RetinaugError(f"image file not found: {p}") from None
        ident.append([p, st.st_size, st.st_mtime_ns])
    key = sha256_text(json.dumps([size, ident]))[:16]
    folder = Path(cache_dir) if cache_dir else default_cache_dir(df)
    npy = folder / f"images-{size}px-{key}.npy"
    if not npy.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
            with progress_bar(f"caching images at {size}px", len(paths), "img") as advance:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for i, img in enumerate(pool.map(lambda p: load_image(p, size), paths)):
                        arr[i] = img
                        advance(1)
            arr.flush()
            del arr
        write_json_atomic(npy.with_suffix(".json"), {"size": size, "paths": paths})
    return ImageCache(np.load(npy, mmap_mode="r"), paths)
