"""Traditional-augmentation rows: `augment(data, AugmentConfig(...), out)`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..cache import apply_transform, open_rgb
from ..classes import CODES, TASKS
from ..errors import RetinaugError
from ..io import atomic_path, sha256_text, write_json_atomic
from ..manifest import half_up, manifest_rows, real_rows, save_manifest, validate_manifest
from ..progress import track
from .config import MAX_RATIO, MORE_TRANSFORMS, SEED_TRANSFORMS, AugmentConfig


def _copies_per_image(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """round(ratio * n) copies spread as evenly as possible; which images get one more is random."""
    total = half_up(ratio * n)
    counts = np.full(n, total // n)
    counts[rng.choice(n, total % n, replace=False)] += 1
    return counts


def _transform_order(rng: np.random.Generator) -> list[str]:
    """Per image: the seed's three transforms in random order, then the others in random order."""
    return [*rng.permutation(SEED_TRANSFORMS), *rng.permutation(MORE_TRANSFORMS)]


def _write_copy(parent: str, transform: str, folder: Path) -> Path:
    """Write the transformed full-resolution image as PNG (for tools that cannot apply transforms)."""
    tag = sha256_text(parent)[:8]  # parents from different folders may share a file name (and long stems are cut)
    stem = os.fsencode(Path(parent).stem)[:160].decode(errors="ignore")
    target = folder / f"{stem}-{tag}_{transform.replace('+', '_')}.png"
    with atomic_path(target) as tmp:
        Image.fromarray(apply_transform(np.asarray(open_rgb(parent)), transform)).save(tmp, format="PNG")
    return target


def augment(data: str | Path | pd.DataFrame, config: AugmentConfig, out: str | Path | None = None) -> pd.DataFrame:
    """Traditional-augmentation rows for the real TRAIN images of `config.classes` of `data` (a prepared folder or
    its rows): round(ratio x real train count) copies per class, each a distinct (parent, transform).

    Writes `out/manifest.parquet` (traditional rows only) and `out/summary.json` when `out` is given.
    With `write_files` the copies are written as PNGs under `out/images/<CLASS>/` and the rows point at
    them (no load-time transform; the applied one is kept in `file_transform`)."""
    ratio, classes, seed, write_files = config.ratio, config.classes, config.seed, config.write_files
    if not 0 < ratio <= MAX_RATIO:
        raise RetinaugError(
            f"ratio {ratio} is not possible: each image has only {MAX_RATIO} distinct flipped/rotated copies "
            f"({', '.join(SEED_TRANSFORMS + MORE_TRANSFORMS)}), so use 0 < ratio <= {MAX_RATIO}"
        )
    if write_files and out is None:
        raise RetinaugError("write_files needs an output folder (out)")
    real = real_rows(manifest_rows(data))
    present = set(real["label"])
    if classes is None:
        classes = tuple(c for c in TASKS["5-class"] if c in present)
    else:
        classes = tuple(classes)
        absent = [c for c in classes if c not in present]
        if absent:
            raise RetinaugError(
                f"no real training images of class(es) {', '.join(absent)} to augment; classes present: {','.join(c for c in CODES if c in present)}"
            )
    if not classes:
        raise RetinaugError("nothing to augment: the data has no real training images of the chosen classes")

    rows, summary = [], {"ratio": ratio, "seed": seed, "classes": {}}
    for code in classes:
        parents = real[real["label"] == code].sort_values("path", kind="stable")
        rng = np.random.default_rng([seed, CODES.index(code)])  # per class: adding a class changes no other
        counts = _copies_per_image(len(parents), ratio, rng)
        used: dict[str, int] = {}
        for (_, parent), n_copies in zip(parents.iterrows(), counts):
            for transform in _transform_order(rng)[:n_copies]:
                row = parent.to_dict()
                row.update(origin="traditional", parent=parent["path"], transform=transform)
                rows.append(row)
                used[transform] = used.get(transform, 0) + 1
        summary["classes"][code] = {"real_train": len(parents), "traditional": int(counts.sum()), "transforms": used}
    df = validate_manifest(pd.DataFrame(rows))
    if out is None:
        return df
    out = Path(out)
    if write_files:
        paths = []
        for code, parent, transform in track(
            list(zip(df["label"], df["parent"], df["transform"])), "writing augmented images", unit="img"
        ):
            paths.append(str(_write_copy(parent, transform, out / "images" / code)))
        df = df.assign(path=paths, file_transform=df["transform"], transform=pd.NA)
        df = validate_manifest(df)
    save_manifest(df, out)
    write_json_atomic(out / "summary.json", summary)
    return df
