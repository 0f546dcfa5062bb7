"""Decode + resize every image once into a memory-mapped uint8 array shared by all later stages.

Entries are keyed by (image path, file size, mtime, ctime and inode, resolution, decoder version): a changed
file is decoded again, never served stale (an in-place rewrite that keeps size and mtime still moves the ctime,
see `retinaug.fingerprint`), and each call decodes only the images no earlier call cached (a new chunk file
beside the others). Traditional-augmentation rows reuse their parent's
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
from .fingerprint import file_stamp
from .io import atomic_path, default_cache_dir, sha256_text, write_json_atomic
from .progress import progress_bar

TRANSFORMS = ("hflip", "vflip", "rot90", "rot180", "rot270")
# Bumped whenever `open_rgb` decodes the same file into other pixels, so chunks of an older decoder are not served
# (2: EXIF orientation applied; chunks of version 1 hold portrait photos sideways).
DECODER_VERSION = 2


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


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit and 32-bit integer or float images (PNG/TIFF modes I;16*, I, F) are *scaled* to 0..255
    first: PIL's convert('RGB') clips them, which turns a 16-bit photo almost white. 16-bit modes are divided by
    65535, as are 'I' images whose values fit 16 bits; 'F' images in [0, 1] are multiplied by 255; any other
    range is stretched from its minimum to its maximum."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
            lo, hi = 0.0, 65535.0
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0
        unit = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(np.round(unit * 255).astype(np.uint8), mode="L")
    return im.convert("RGB")  # a copy: the file may be closed after this


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image file as upright 8-bit RGB (EXIF orientation applied, as photo viewers do; see `to_rgb`): the
    one decoder every stage's pixels come from. A file that changed into something undecodable since `prepare`
    checked it is a RetinaugError naming it."""
    try:
        with Image.open(path) as im:
            ImageOps.exif_transpose(im, in_place=True)
            return to_rgb(im)
    except FileNotFoundError:
        raise RetinaugError(f"image file not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # PIL's errors for a damaged file
        raise RetinaugError(
            f"cannot decode image {path} ({type(exc).__name__}: {exc}); re-run `retinaug prepare` to re-check the dataset"
        ) from None


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image as RGB, pad to square with black (keeps the round field of view), resize to `size`."""
    im = ImageOps.pad(open_rgb(path), (size, size), method=Image.Resampling.BICUBIC, color=(0, 0, 0))
    return np.asarray(im, dtype=np.uint8)


class ImageCache:
    """Decoded images of a set of paths: memory-mapped chunk arrays plus a path -> (chunk, row) index."""

    def __init__(self, chunks: list[np.ndarray], index: dict[str, tuple[int, int]], size: int):
        self.chunks = chunks
        self.index = index
        self.size = size

    def __len__(self) -> int:
        return len(self.index)

    def get(self, path: str, transform: str | None = None) -> np.ndarray:
        try:
            chunk, row = self.index[os.path.abspath(path)]
        except KeyError:
            raise RetinaugError(f"image {path} is not in this cache; build the cache from its manifest") from None
        return apply_transform(np.asarray(self.chunks[chunk][row]), transform)

    def rows(self, df: pd.DataFrame) -> np.ndarray:
        """All images of a manifest (transforms applied), as one (N, size, size, 3) array."""
        transforms = df["transform"] if "transform" in df.columns else [None] * len(df)
        out = np.empty((len(df), self.size, self.size, 3), dtype=np.uint8)
        for i, (p, t) in enumerate(zip(df["path"], transforms)):
            out[i] = self.get(p, None if pd.isna(t) else t)
        return out


def _identity(path: str) -> list:
    """The file's (size, mtime, ctime, inode), as the stage fingerprints key a file: size + mtime alone miss a rewrite
    in place that restores the mtime."""
    try:
        return file_stamp(os.stat(path))
    except FileNotFoundError:
        raise RetinaugError(f"image file not found: {path}") from None


# The cache is shared by every run on the machine, so it holds many chunks, and every stage and fit reads its index
# again: per process, each sidecar is parsed once per version and the index is rebuilt only when a chunk came, went
# or changed (issue 31).
_PARSED: dict[Path, tuple[tuple, list]] = {}  # sidecar -> (its stamp, its [path, *identity] rows)
_INDEX: dict[tuple[Path, int], tuple[list, dict]] = {}  # (folder, size) -> (its listing, the index)


def _entries(side: Path, stamp: tuple) -> list:
    """A chunk's [path, *identity] rows (none for another decoder's), parsed again only when its sidecar changed."""
    cached = _PARSED.get(side)
    if cached is None or cached[0] != stamp:
        record = json.loads(side.read_text())
        cached = _PARSED[side] = (stamp, record["paths"] if record.get("decoder") == DECODER_VERSION else [])
    return cached[1]


def _read_index(folder: Path, size: int) -> dict[str, tuple[str, int, list]]:
    """path -> (chunk file, row, file identity) over every chunk of this resolution and `DECODER_VERSION`, newest
    chunk last. The dict is shared by the calls that find the same chunks: read it, do not change it."""
    listing = []
    for side in folder.glob(f"images-{size}px-*.json"):
        try:
            st = side.stat()
        except OSError:
            continue  # removed since the listing
        # a rewrite is an atomic rename (a new inode); a chunk is usable once its array is there too
        listing.append((st.st_mtime_ns, side, st.st_size, st.st_ino, side.with_suffix(".npy").exists()))
    listing.sort()
    cached = _INDEX.get((folder, size))
    if cached is not None and cached[0] == listing:
        return cached[1]
    index: dict[str, tuple[str, int, list]] = {}
    for _, side, *stamp, has_array in listing:
        try:
            entries = _entries(side, tuple(stamp))
        except (OSError, ValueError, KeyError, AttributeError):
            continue  # a chunk being written by another process, or damaged: its images are decoded again
        if has_array:
            npy = str(side.with_suffix(".npy"))
            for row, (path, *ident) in enumerate(entries):
                index[path] = (npy, row, ident)
    _INDEX[(folder, size)] = (listing, index)
    return index


def _write_chunk(folder: Path, size: int, paths: list[str], idents: list[list], workers: int) -> None:
    key = sha256_text(json.dumps([size, DECODER_VERSION, [[p, *i] for p, i in zip(paths, idents)]]))[:16]
    npy = folder / f"images-{size}px-{key}.npy"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(npy) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        with progress_bar(f"caching {len(paths)} images at {size}px", len(paths), "img") as advance:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for i, img in enumerate(pool.map(lambda p: load_image(p, size), paths)):
                    arr[i] = img
                    advance(1)
        arr.flush()
        del arr
    write_json_atomic(
        npy.with_suffix(".json"),
        {"size": size, "decoder": DECODER_VERSION, "paths": [[p, *i] for p, i in zip(paths, idents)]},
    )


def image_cache(df: pd.DataFrame, size: int, cache_dir: str | Path | None = None, workers: int = 2) -> ImageCache:
    """The decoded images of this manifest at `size` px; only images not cached yet are decoded.

    Entries are keyed by (absolute path, file identity, resolution, decoder), so a changed file is decoded again and
    subsets or unions of manifests (train/val/test, real + synthetic) reuse what earlier stages decoded."""
    paths = list(dict.fromkeys(os.path.abspath(p) for p in df["path"]))
    idents = [_identity(p) for p in paths]
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    index = _read_index(folder, size) if folder.is_dir() else {}
    missing = [(p, i) for p, i in zip(paths, idents) if p not in index or index[p][2] != i]
    if missing:
        _write_chunk(folder, size, [p for p, _ in missing], [i for _, i in missing], workers)
        index = _read_index(folder, size)
    files = sorted({index[p][0] for p in paths})
    chunk_of = {f: k for k, f in enumerate(files)}
    chunks = [np.load(f, mmap_mode="r") for f in files]
    return ImageCache(chunks, {p: (chunk_of[index[p][0]], index[p][1]) for p in paths}, size)
