"""The phantom dataset itself: patients per class, the seeded plan of patients and splits, and `make_phantom`, which
renders the images and hands them to the ingest stage's `finish_prepare` like any dataset."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..classes import CODES
from ..errors import RetinaugError
from ..io import atomic_path
from ..manifest import new_manifest
from ..progress import progress_bar
from .config import PhantomConfig, Proportions
from .render import EYES, render_fundus

# Patients per class in ODIR-5K (the default proportions).
ODIR_COUNTS: dict[str, int] = {"N": 2786, "D": 1566, "O": 674, "C": 260, "A": 241, "G": 236, "M": 229, "H": 121}
MIN_PATIENTS = 6  # per class: enough for >= 1 patient of every class in train, val and test


def parse_proportions(spec: Proportions | Mapping[str, float]) -> dict[str, float]:
    """'odir' (default), 'uniform', or 'N=2,D=1,G=1' (classes left out are not generated) -> weights."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "odir")):
        return {c: float(v) for c, v in ODIR_COUNTS.items()}
    if isinstance(spec, str) and spec.strip().lower() == "uniform":
        return {c: 1.0 for c in CODES}
    if isinstance(spec, str):
        items = {}
        for part in spec.split(","):
            code, sep, value = part.partition("=")
            try:
                items[code.strip().upper()] = float(value)
            except ValueError:
                raise RetinaugError(
                    f"bad proportion {part.strip()!r}: write CLASS=weight, e.g. 'N=2,D=1,G=1'"
                ) from None
            if not sep:
                raise RetinaugError(f"bad proportion {part.strip()!r}: write CLASS=weight, e.g. 'N=2,D=1,G=1'")
        spec = items
    weights = {str(c).upper(): float(w) for c, w in spec.items()}
    unknown = sorted(set(weights) - set(CODES))
    if unknown:
        raise RetinaugError(f"unknown class code(s) in proportions: {', '.join(unknown)}; valid: {','.join(CODES)}")
    if any(not math.isfinite(w) or w < 0 for w in weights.values()):
        raise RetinaugError("proportions must be finite and >= 0")
    weights = {c: weights[c] for c in CODES if weights.get(c, 0) > 0}
    if len(weights) < 2:
        raise RetinaugError("proportions must give a positive weight to at least two classes")
    return weights


def phantom_counts(
    n: int, proportions: str | Mapping[str, float] | None = None, min_patients: int = MIN_PATIENTS
) -> dict[str, int]:
    """Patients per class for `n` images (n/2 patients): proportional to the weights, every class at least
    `min_patients` (classes below it are fixed there and the rest re-shared), largest remainder rounding."""
    weights = parse_proportions(proportions)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n % 2:
        raise RetinaugError(f"--n must be an even number of images (two eyes per patient), got {n!r}")
    patients = n // 2
    need = min_patients * len(weights)
    if patients < need:
        raise RetinaugError(
            f"--n {n} is too small: {len(weights)} classes x {min_patients} patients x 2 eyes need n >= {2 * need}"
        )
    fixed: dict[str, int] = {}
    while True:
        free = [c for c in weights if c not in fixed]
        left = patients - sum(fixed.values())
        total = sum(weights[c] for c in free)
        quota = {c: left * weights[c] / total for c in free}
        low = [c for c in free if quota[c] < min_patients]
        if not low:
            break
        fixed.update({c: min_patients for c in low})
    counts = {**fixed, **{c: int(math.floor(q)) for c, q in quota.items()}}
    by_remainder = sorted(free, key=lambda c: (-(quota[c] - math.floor(quota[c])), CODES.index(c)))
    for c in by_remainder[: patients - sum(counts.values())]:
        counts[c] += 1
    return {c: counts[c] for c in CODES if c in counts}


def plan_phantom(
    n: int, proportions: str | Mapping[str, float] | None = None, seed: int = 0, val: float = 0.15, test: float = 0.15
) -> pd.DataFrame:
    """One row per patient that `make_phantom` would render (label, patient_id, split), without rendering: cheap,
    so a pipeline config can be checked before its data exists. Classes are dealt to patients by a seeded shuffle."""
    from ..split import assign_splits

    counts = phantom_counts(n, proportions)
    deal = np.random.default_rng([seed, 0, 0, 1])  # 4 words: never equal to an image's (seed, patient, stream)
    labels = deal.permutation(np.repeat(list(counts), list(counts.values())))
    pids = [f"ph{i:05d}" for i in range(len(labels))]
    return assign_splits(pd.DataFrame({"label": labels, "patient_id": pids}), val=val, test=test, seed=seed)


def _write_png(img: np.ndarray, path: Path) -> str:
    """Write atomically; return the SHA-256 of the bytes (saves the ingest stage re-reading every file)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # 4x faster than the default, ~12% larger
    data = buf.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def make_phantom(config: PhantomConfig, out: str | Path) -> pd.DataFrame:
    """Render `config.n` phantom images (n/2 patients x 2 eyes) of `config.size` px into
    `out/images/<CLASS>/<patient>_<eye>.png` in the classes' `proportions`, split by patient (`val`, `test`, `seed`;
    the seed also draws the images) and save `out/manifest.parquet` + summary; return the manifest.

    Patient `i` is `ph{i:05d}`; classes are dealt to patients by a seeded shuffle. Extra manifest columns:
    `severity` (0..1, 0 for N) and `findings` (';'-joined)."""
    from ..ingest import finish_prepare

    n, size, seed, proportions = config.n, config.size, config.seed, config.proportions
    plan = plan_phantom(n, proportions, seed, config.val, config.test)  # fails fast on an impossible size or split
    labels, pids, counts = plan["label"].to_numpy(), plan["patient_id"].tolist(), phantom_counts(n, proportions)

    out = Path(out)
    images = (out / "images").resolve()
    rows = []
    with progress_bar("Rendering phantom", total=2 * len(labels), unit="img") as advance:
        for i, (pid, label) in enumerate(zip(pids, labels)):
            for eye in EYES:
                img, info = render_fundus(str(label), i, eye, size=size, seed=seed)
                path = images / str(label) / f"{pid}_{eye}.png"
                digest = _write_png(img, path)
                rows.append(
                    dict(
                        path=str(path),
                        label=str(label),
                        patient_id=pid,
                        eye=eye,
                        split="train",
                        origin="real",
                        source="phantom",
                        sha256=digest,
                        **info,
                    )
                )
                advance(1)
    written = {r["path"] for r in rows}
    stale = [p for p in images.glob("*/ph*_*.png") if str(p) not in written]
    for p in stale:  # images of an earlier phantom run with other settings: not ours any more
        p.unlink()
    info = {"phantom": {"n": n, "size": size, "seed": seed, "patients_per_class": counts, "stale_removed": len(stale)}}
    return finish_prepare(new_manifest(rows), out, val=config.val, test=config.test, seed=seed, rejected=[], info=info)
