"""Check every image once (inside the dataset folder, exists, non-empty, decodable, big enough, RGB) and hash it.

One read per file: the bytes are hashed (sha256, for duplicate and leakage checks) and decoded from
memory. Files are independent, so a thread pool overlaps disk reads and PIL decoding (which releases the GIL).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from ..io import sha256_file
from ..progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def default_workers() -> int:
    return min(16, (os.cpu_count() or 2) * 4)


@dataclass(frozen=True)
class ImageCheck:
    """Outcome for one file: `reason` is None when the image is usable."""

    path: str
    reason: str | None = None
    detail: str = ""
    sha256: str | None = None
    width: int = 0
    height: int = 0
    mode: str = ""
    frames: int = 1

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def converted(self) -> bool:
        """Non-RGB images are kept; loaders convert them to RGB (`retinaug.cache.to_rgb`)."""
        return self.ok and self.mode != "RGB"

    @property
    def high_bit_depth(self) -> bool:
        """16-bit, 32-bit or float pixels: scaled (not clipped) to 8 bits when loaded."""
        return self.ok and (self.mode.startswith("I;16") or self.mode in ("I", "F"))

    @property
    def multi_frame(self) -> bool:
        """A multi-page TIFF or animated GIF: only its first frame is ever loaded (the other frames are not images of
        the dataset)."""
        return self.ok and self.frames > 1


def outside(path: str, root: str) -> str | None:
    """Where `path` really points (symlinks resolved) when that is outside the folder `root`, else None."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return None if real == base or real.startswith(base.rstrip(os.sep) + os.sep) else real


def check_image(path: str, min_size: int = 64, root: str | None = None) -> ImageCheck:
    """Run all checks on one file; never raises for a bad image (the reason says what is wrong). With `root`,
    a file that is (or lies under) a symlink pointing out of the dataset folder is refused unread."""
    if root is not None and (real := outside(path, root)) is not None:
        return ImageCheck(path, "outside dataset folder", f"a symlink to {real}, outside {root}")
    if not os.path.isfile(path):
        return ImageCheck(path, "missing file", "no such file")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return ImageCheck(path, "empty file", "0 bytes")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # structure check; the image must be reopened after verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # full decode: catches truncated pixel data that verify() misses
            frames = getattr(im, "n_frames", 1)
            ImageOps.exif_transpose(im, in_place=True)  # the size as loaded (`retinaug.cache.open_rgb`): upright
            width, height, mode = im.width, im.height, im.mode
    except Exception as exc:  # PIL raises many types for broken files
        return ImageCheck(path, "undecodable", f"{type(exc).__name__}: {exc}", digest)
    if min(width, height) < min_size:
        return ImageCheck(
            path, "too small", f"{width}x{height} < --min-size {min_size}", digest, width, height, mode, frames
        )
    return ImageCheck(path, None, "", digest, width, height, mode, frames)


def check_images(
    paths: list[str], min_size: int = 64, workers: int | None = None, root: str | None = None
) -> list[ImageCheck]:
    """Check many files in parallel (results in input order) with a progress bar."""
    with (
        progress_bar("Checking images", len(paths), "img") as advance,
        ThreadPoolExecutor(workers or default_workers()) as pool,
    ):
        results = []
        for result in pool.map(lambda p: check_image(p, min_size, root), paths):
            results.append(result)
            advance(1)
    return results


def hash_files(paths: Iterable[str], description: str = "Hashing", workers: int | None = None) -> dict[str, str | None]:
    """sha256 of each file (None when it cannot be read), in parallel."""
    paths = list(paths)

    def one(p: str) -> str | None:
        try:
            return sha256_file(p)
        except OSError:
            return None

    with (
        progress_bar(description, len(paths), "file") as advance,
        ThreadPoolExecutor(workers or default_workers()) as pool,
    ):
        out = {}
        for p, h in zip(paths, pool.map(one, paths)):
            out[p] = h
            advance(1)
    return out


def duplicate_groups(paths: list[str], hashes: list[str | None]) -> list[list[str]]:
    """Groups (size >= 2) of files with identical bytes, largest first."""
    by_hash: dict[str, list[str]] = {}
    for p, h in zip(paths, hashes):
        if h is not None:
            by_hash.setdefault(h, []).append(p)
    groups = [sorted(set(g)) for g in by_hash.values() if len(set(g)) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def screen(
    candidates: list[dict], rejected: list[dict], root: str | Path, min_size: int = 64, workers: int | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Check each candidate row's image once (it must really lie inside the dataset folder `root`); failures go to
    `rejected` (with the source row number). Returns the kept rows (with `sha256`) and the counts of kept images
    converted at load time: non-RGB (`converted_to_rgb`), among them 16-bit/float ones (`high_bit_depth`), and
    multi-frame files of which only the first frame is used (`multi_frame`)."""
    results = check_images([c["path"] for c in candidates], min_size, workers, str(root))
    kept, counts = [], {"converted_to_rgb": 0, "high_bit_depth": 0, "multi_frame": 0}
    for cand, res in zip(candidates, results):
        if res.ok:
            kept.append({**cand, "sha256": res.sha256})
            counts["converted_to_rgb"] += res.converted
            counts["high_bit_depth"] += res.high_bit_depth
            counts["multi_frame"] += res.multi_frame
        else:
            rejected.append({"row": cand.get("row"), "path": cand["path"], "reason": res.reason, "detail": res.detail})
    return kept, counts
