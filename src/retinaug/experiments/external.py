"""An external test set (`data.external`): a prepared dataset from another source that every fit is also scored on.

Why: a gain on the internal test set, drawn from the same source as the training images, need not carry over to
another camera, clinic or population (Nderitu et al. 2025 saw a synthetic gain vanish on an external set). Every
row of the external set is a test row whatever split its ingest gave it: it is never trained on. Before any fit is
scored on it, the external patients with a near-copy (grey SSIM, `quality.overlap`) of the run's real train or
val images are dropped, both eyes, since a copy of a training image inflates the score (`drop_copies`). Each fit
is scored on the classes of its task the external set has (`evaluate` leaves the other rows out and counts them).

Files: RUN/experiments/external/overlap.csv (every external image with its closest train/val image) and
overlap.json (the counts, and the key of both sets' content that lets a re-run reuse them), the tables of the
aggregated scores beside them, and FIT/external/ (recipe.json, metrics.json) in each fit's folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import pandas as pd

from ..classes import CLASSES
from ..errors import ManifestError, RetinaugError
from ..fields import OVERLAP_THRESHOLD
from ..fingerprint import file_stamp
from ..io import atomic_path, read_json, sha256_text, write_json_atomic
from ..manifest import load_manifest, manifest_file
from .scenarios import Scenario

log = logging.getLogger("retinaug.experiments")

EXTERNAL = "external"  # its folder in the experiments folder and in each fit's
MIN_SHARED = 2  # classes a task must share with the external set: one class alone has no macro score worth pairing


def load_external(path: str | Path) -> pd.DataFrame:
    """The external set at `path` (a prepared dataset folder or its manifest), every row made a test row. A manifest
    with synthetic or augmented rows is refused: those are not a test set (a run's stage folder given by mistake)."""
    if not Path(path).exists():
        raise RetinaugError(
            f"data.external {path} not found: give a dataset folder made by `retinaug prepare folder|odir|phantom` "
            "(or its manifest.parquet)"
        )
    try:
        df = load_manifest(path, check_files=True)
    except ManifestError as exc:  # no manifest there, a damaged one, images outside the trusted folders
        raise RetinaugError(f"data.external {path}: {exc}") from None
    if len(other := df[df["origin"] != "real"]):
        raise RetinaugError(
            f"data.external {path} holds {len(other)} {'/'.join(sorted(set(other['origin'])))} row(s): give a "
            "dataset of real images prepared by `retinaug prepare`, not a run's stage folder"
        )
    if df.empty:
        raise RetinaugError(f"data.external {path} holds no image")
    return df.assign(split="test")


def external_identity(path: str | Path) -> str:
    """The external set as it is now, by file identity (its manifest and every image it names, one `stat` each):
    an input of the experiments stage, so an external set prepared again in place is scored again."""
    target = manifest_file(path)
    files = [str(target), *load_manifest(target)["path"]]
    return sha256_text("\n".join(f"{f} {' '.join(map(str, file_stamp(os.stat(f))))}" for f in files))[:16]


def external_problems(labels: Collection[str], scenarios: Sequence[Scenario], what: str = "data.external") -> list[str]:
    """Why the scenarios cannot be scored on an external set with these labels: a task sharing fewer than
    MIN_SHARED classes with it, or a scenario whose folder would be the external set's."""
    have = ",".join(sorted(set(labels)))
    problems = [
        f"scenario {EXTERNAL}: its folder is where the external set's results go; rename the scenario"
        for sc in scenarios
        if sc.name == EXTERNAL
    ]
    for sc in scenarios:
        shared = [c for c in sc.classes if c in set(labels)]
        if len(shared) < MIN_SHARED:
            problems.append(
                f"scenario {sc.name} (task {','.join(sc.classes)}) shares {','.join(shared) or 'no class'} with "
                f"{what} (classes {have}): scoring it there needs at least {MIN_SHARED} shared classes; give an "
                "external set with more of the task's classes, or drop the scenario"
            )
    return problems


def drop_copies(external: pd.DataFrame, seen: pd.DataFrame, out: Path, content: str) -> pd.DataFrame:
    """The external rows whose patient has no near-copy among `seen` (the run's real train and val images: every
    synthetic image's parent is one of them), by `find_overlap` at its default threshold with the pixels extractor.
    The table and counts go to out/overlap.csv and out/overlap.json (last), and are reused while overlap.json holds
    the same key: `content` (the hash of both sets' images and labels) with these settings."""
    from ..quality.overlap import find_overlap, overlap_summary

    settings = {"threshold": OVERLAP_THRESHOLD, "extractor": "pixels"}
    key = sha256_text(json.dumps({"content": content, **settings}, sort_keys=True))
    record = read_json(out / "overlap.json") or {}
    if record.get("key") == key and (out / "overlap.csv").is_file():
        table = pd.read_csv(out / "overlap.csv", dtype={"a_patient": str})
        log.info("external set: its overlap with the train/val images is unchanged (%s)", out / "overlap.csv")
    else:
        table = find_overlap(external, seen, **settings)
        with atomic_path(out / "overlap.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
    dropped = set(table.loc[table["duplicate"], "a_patient"])
    kept = external[~external["patient_id"].astype(str).isin(dropped)].reset_index(drop=True)
    if record.get("key") != key:
        record = {
            "key": key,
            **settings,
            **overlap_summary(table, len(seen), OVERLAP_THRESHOLD),
            **counts(external, kept),
        }
        write_json_atomic(out / "overlap.json", record)
    log.info(
        "external set: %d images of %d patients; %d are near-copies of the run's train/val images (SSIM >= %s), so "
        "%d patients (%d images) are dropped; %d images of %d patients kept (per class, kept of all: %s)",
        record["n_a"],
        record["n_patients"],
        record["duplicates"],
        OVERLAP_THRESHOLD,
        record["dropped_patients"],
        record["dropped_images"],
        record["kept_images"],
        record["kept_patients"],
        ", ".join(f"{c} {v['kept']}/{v['images']}" for c, v in record["per_class"].items()),
    )
    if kept.empty:
        raise RetinaugError(
            f"every patient of the external set has a near-copy among the run's train/val images "
            f"({out / 'overlap.csv'}): nothing is left to score; give an external set from another source"
        )
    return kept


def counts(external: pd.DataFrame, kept: pd.DataFrame) -> dict:
    """Images and patients of the external set, dropped and kept, in all and per class (CLASSES order)."""
    present = [c for c in CLASSES if c in set(external["label"])]
    per_class = {}
    for code in present:
        n, n_kept = int((external["label"] == code).sum()), int((kept["label"] == code).sum())
        per_class[code] = {"images": n, "dropped": n - n_kept, "kept": n_kept}
    return {
        "n_patients": int(external["patient_id"].nunique()),
        "dropped_images": len(external) - len(kept),
        "dropped_patients": int(external["patient_id"].nunique() - kept["patient_id"].nunique()),
        "kept_images": len(kept),
        "kept_patients": int(kept["patient_id"].nunique()),
        "classes": [c for c in present if per_class[c]["kept"]],
        "per_class": per_class,
    }
