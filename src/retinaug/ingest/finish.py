"""The common end of every `prepare` command: split, save, and report what was kept and what was not."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..io import atomic_path, write_json_atomic
from ..manifest import class_counts, save_manifest
from ..split import assign_splits, check_split
from .checks import duplicate_groups, hash_files

REJECTED_COLUMNS = ("row", "path", "reason", "detail")
log = logging.getLogger("retinaug.ingest")


def rejected_frame(rejected: pd.DataFrame | list[dict] | None) -> pd.DataFrame:
    """Normalise skipped items to the rejected.csv columns (row = source-file row number, if any)."""
    frame = pd.DataFrame(rejected if rejected is not None else [])
    for col in REJECTED_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="object")
    frame["row"] = frame["row"].astype("Int64")
    return frame[list(REJECTED_COLUMNS)].sort_values("row", kind="stable", na_position="last").reset_index(drop=True)


def finish_prepare(
    df: pd.DataFrame,
    out: str | Path,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    rejected: pd.DataFrame | list[dict] | None = None,
    root: str | Path | None = None,
    info: dict | None = None,
) -> pd.DataFrame:
    """Split `df` by patient, write `out/manifest.parquet`, `out/rejected.csv`, `out/summary.json`, print a
    summary, and return the saved manifest. `root` is the image root (default: inferred); `info` adds
    fields to summary.json (e.g. the label source)."""
    out = Path(out)
    df = df.copy()
    rej = rejected_frame(rejected)  # written first: it explains an empty or unsplittable dataset
    with atomic_path(out / "rejected.csv") as tmp:
        rej.to_csv(tmp, index=False)
    if "sha256" not in df.columns or df["sha256"].isna().any():
        known = df["sha256"] if "sha256" in df.columns else pd.Series([None] * len(df), index=df.index)
        todo = df.loc[known.isna(), "path"].astype(str).tolist()
        computed = hash_files(todo, "Hashing images")
        df["sha256"] = [h if pd.notna(h) else computed[p] for p, h in zip(df["path"].astype(str), known)]
    df = assign_splits(df, val=val, test=test, seed=seed)
    warnings = df.attrs.get("split_warnings", [])
    save_manifest(df, out, root=root)
    dups = duplicate_groups(df["path"].astype(str).tolist(), df["sha256"].tolist())
    summary = {
        **split_summary(df),
        "rejected": {str(k): int(v) for k, v in rej["reason"].value_counts().items()},
        "rejected_total": len(rej),
        "duplicates": {"groups": len(dups), "extra_files": sum(len(g) - 1 for g in dups), "examples": dups[:20]},
        "split_warnings": warnings,
        "val": val,
        "test": test,
        "seed": seed,
        **(info or {}),
    }
    write_json_atomic(out / "summary.json", summary)
    log_summary(summary, out, rej)
    return df


def split_summary(df: pd.DataFrame) -> dict:
    """Images and patients per split, images per class x split, and the leakage audit (`check_split`) of a split
    manifest: the part of summary.json that the ingest and each fold's split (folds.py) both write."""
    counts = class_counts(df)
    return {
        "rows": len(df),
        "patients": int(df["patient_id"].nunique()),
        "splits": {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")},
        "patients_per_split": {
            s: int(df.loc[df["split"] == s, "patient_id"].nunique()) for s in ("train", "val", "test")
        },
        "counts": {label: {k: int(v) for k, v in row.items()} for label, row in counts.iterrows()},
        "leakage": check_split(df),
    }


def log_summary(summary: dict, out: Path, rejected: pd.DataFrame, examples: int = 5) -> None:
    """Class x split counts, skips by reason (with a few examples), duplicates and split warnings."""
    splits = [s for s in ("train", "val", "test") if summary["splits"].get(s)]
    counts = pd.DataFrame.from_dict(summary["counts"], orient="index").reindex(columns=splits + ["total"], fill_value=0)
    log.info(
        "%d images of %d patients written to %s (images per class x split):\n%s",
        summary["rows"],
        summary["patients"],
        out,
        counts.rename_axis("class").to_string(),
    )
    if summary["rejected"]:
        lines = [f"skipped {summary['rejected_total']} (rejected.csv):"]
        lines += [f"  {reason}: {n}" for reason, n in summary["rejected"].items()]
        for rec in rejected.head(examples).itertuples(index=False):
            where = f"row {rec.row}: " if pd.notna(rec.row) else ""
            lines.append(f"  {where}{rec.path}: {rec.reason} ({rec.detail})")
        if len(rejected) > examples:
            lines.append(f"  ... {len(rejected) - examples} more in {out / 'rejected.csv'}")
        log.info("\n".join(lines))
    else:
        log.info("skipped: none")
    for key, value in info_lines(summary):
        log.info("%s: %s", key, value)
    for w in summary.get("warnings", []) + summary["split_warnings"]:
        log.warning(w)


def info_lines(summary: dict) -> list[tuple[str, str]]:
    d = summary["duplicates"]
    lines = [("exact duplicate files", f"{d['groups']} group(s), {d['extra_files']} extra copies (kept, same split)")]
    if "converted_to_rgb" in summary:
        lines.append(("non-RGB images (converted to RGB when loaded)", str(summary["converted_to_rgb"])))
    if summary.get("high_bit_depth"):
        lines.append(("16-bit / float images (scaled to 8 bits when loaded)", str(summary["high_bit_depth"])))
    if summary.get("multi_frame"):
        lines.append(
            ("multi-frame images (TIFF pages / GIF frames: only the first frame is used)", str(summary["multi_frame"]))
        )
    if "patients_grouping" in summary:
        g = summary["patients_grouping"]
        how = (
            f"grouped by {g['rule']}: {g['files_matched']} file(s) matched, {g['patients_with_several_images']} patient(s) "
            f"with several images"
            if g["files_matched"]
            else "none found in the file names: every image is its own patient"
        )
        if g["files_matched"] and g["files_unmatched"]:
            how += f"; {g['files_unmatched']} unmatched file(s) " + (
                "are their own patients" if g["unmatched_policy"] == "own-patient" else "rejected"
            )
        lines.append(("patients", how))
    lines.append(("leakage audit", "OK" if not summary["leakage"] else f"{len(summary['leakage'])} problem(s)"))
    return lines
