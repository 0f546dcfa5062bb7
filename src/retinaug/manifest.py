"""The Manifest: the one table (one row per image) that every stage reads and writes.

On disk it is Parquet; `path` is stored relative to the manifest's *image root*, which is kept in the
Parquet metadata (the manifest's own folder unless the images live elsewhere, e.g. a read-only ODIR copy).
In memory `path` is absolute, so manifests from different folders can be concatenated freely.

A stored root is data from a file, so it is trusted only where it cannot send reads anywhere on the disk: inside
the manifest's folder or the run folder above it (stages sit side by side: RUN/augment -> RUN/data), inside a
folder this user prepared or saved a manifest for (recorded in `image-roots.txt` of the config folder), inside a
folder listed in `$RETINAUG_IMAGE_ROOTS`, or when the caller names it (`load_manifest(image_root=)`). A root outside
them is accepted only when every image under it lies in them anyway (a selection of a trusted dataset's images and
a run's own: their common folder can be "/", which saving never records as trusted). The same holds for each image
file with its symlinks resolved: a link planted in a run that points elsewhere (`G_00001.png -> /etc/shadow`) is
never read, whatever the stored paths say.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .classes import CLASSES
from .errors import ManifestError, RetinaugError
from .io import atomic_path

MANIFEST_NAME = "manifest.parquet"
REQUIRED = ("path", "label", "patient_id", "eye", "split", "origin", "source")
SPLITS = ("train", "val", "test")
ORIGINS = ("real", "synthetic", "traditional")
EYES = ("left", "right", "unknown")


def prob_column(code: str) -> str:
    """The column holding the labeler's probability of class `code` (written by the label stage)."""
    return f"prob_{code}"


# Optional columns and their pandas dtypes; any other extra column is kept as-is.
OPTIONAL: dict[str, str] = {
    "parent": "string",
    "transform": "string",
    "prompt": "string",
    "negative_prompt": "string",
    "seed": "Int64",
    "steps": "Int64",
    "guidance": "Float64",
    "strength": "Float64",
    "generator": "string",
    "pred_label": "string",
    "pred_conf": "Float64",
    "accepted": "boolean",
    "sha256": "string",
    # the labeler's probability of each of its classes (label stage): soft targets of `soft_labels` scenarios
    **{prob_column(code): "Float64" for code in CLASSES},
}
_META_KEY = b"retinaug"
ROOTS_ENV = "RETINAUG_IMAGE_ROOTS"
ROOTS_FILE = "image-roots.txt"


def manifest_file(path: str | Path) -> Path:
    """Accept a run sub-folder (`RUN/data`) or the Parquet file itself."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() or p.suffix != ".parquet" else p


def config_dir() -> Path:
    """`$RETINAUG_CONFIG_DIR`, else `~/.config/retinaug`: this user's own settings (never inside a run folder)."""
    return Path(os.environ.get("RETINAUG_CONFIG_DIR") or Path.home() / ".config" / "retinaug")


def trusted_roots() -> list[str]:
    """Image folders manifests may point into: those this user prepared or saved manifests for, and `$RETINAUG_IMAGE_ROOTS`."""
    listed = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    try:
        listed += (config_dir() / ROOTS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        pass
    return [os.path.normpath(os.path.abspath(r)) for r in listed if r.strip()]


def trust_root(root: str | Path) -> None:
    """Record an image folder the user named (a dataset given to `prepare`, a root a manifest was saved with)."""
    root = os.path.realpath(root)
    if root in trusted_roots():
        return
    folder = config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ROOTS_FILE, "a", encoding="utf-8") as f:  # one short append: atomic between processes
            f.write(root + "\n")
    except OSError as exc:  # not fatal: loading then needs $RETINAUG_IMAGE_ROOTS or image_root=
        import logging

        logging.getLogger("retinaug").warning(
            "could not record %s as a trusted image folder in %s: %s", root, folder, exc
        )


def _within(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def _local(folder: Path) -> list[str]:
    """Where a manifest in `folder` may keep its images without being trusted: its folder, and the run folder
    above it (one holding config.yaml or data/manifest.parquet: stage folders sit side by side); for a fold's
    stage (RUN/fold-<i>/<stage>) the run folder above the fold too, where the ingested images lie."""

    def is_run(run: Path) -> bool:
        return (run / "config.yaml").is_file() or (run / "data" / MANIFEST_NAME).is_file()

    run = folder.parent
    if not is_run(run):
        return [str(folder)]
    if re.fullmatch(r"fold-\d+", run.name) and is_run(run.parent):
        return [str(folder), str(run), str(run.parent)]
    return [str(folder), str(run)]


def _check_root(root: Path, folder: Path, target: Path) -> None:
    """Refuse a stored image root outside the places a manifest may point to (see the module docstring)."""
    here = _local(folder)
    candidates = {os.path.normpath(root), os.path.realpath(root)}
    if all(_within(c, here) for c in candidates) or any(_within(c, trusted_roots()) for c in candidates):
        return
    raise ManifestError(
        f"{target} stores its images under {root}, outside its own folder and not a dataset folder prepared on this "
        f"machine: refused (a manifest may not send reads anywhere on the disk). If you trust it, add the folder to "
        f"${ROOTS_ENV} (e.g. export {ROOTS_ENV}={root}) or pass image_root=; re-running `retinaug prepare` on "
        "the dataset also records it"
    )


def _outside(paths: Iterable[str], folders: Iterable[str]) -> dict[str, str]:
    """path -> its real file, for the files that symlinks send outside `folders` (the places a manifest may read,
    compared resolved: a link's own path says nothing about where its bytes live)."""
    real_folders = [os.path.realpath(f) for f in folders]
    return {p: real for p in paths if not _within(real := os.path.realpath(p), real_folders)}


def new_manifest(rows: Iterable[dict] | None = None) -> pd.DataFrame:
    """A manifest DataFrame with the required columns (and any extra ones present in `rows`)."""
    df = pd.DataFrame(list(rows or []))
    for col in REQUIRED:
        if col not in df.columns:
            df[col] = pd.Series(dtype="string")
    return _normalise(df)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in REQUIRED:
        df[col] = df[col].astype("string")
    for col, dtype in OPTIONAL.items():
        if col in df.columns:
            df[col] = df[col].astype(dtype)
    order = [c for c in REQUIRED] + [c for c in df.columns if c not in REQUIRED]
    return df[order].reset_index(drop=True)


def _examples(values: Iterable, n: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" ... ({len(values)} in all)" if len(values) > n else "")


def validate_manifest(df: pd.DataFrame, check_files: bool = False) -> pd.DataFrame:
    """Raise ManifestError naming every problem found; return the normalised table when it is valid."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest is missing required column(s): {', '.join(missing)}")
    df = _normalise(df)
    problems: list[str] = []
    for col in REQUIRED:
        empty = df.index[df[col].isna() | (df[col].str.strip() == "")]
        if len(empty):
            problems.append(f"column {col!r} is empty in row(s) {_examples(empty.tolist())}")
    checks = (("label", tuple(CLASSES)), ("split", SPLITS), ("origin", ORIGINS), ("eye", EYES))
    for col, allowed in checks:
        bad = sorted(set(df[col].dropna()) - set(allowed))
        if bad:
            problems.append(f"unknown {col} value(s) {_examples(bad)}; allowed: {', '.join(allowed)}")
    for col in ("pred_label",):
        if col in df.columns:
            bad = sorted(set(df[col].dropna()) - set(CLASSES))
            if bad:
                problems.append(f"unknown class code(s) in {col}: {_examples(bad)}")
    for col in [c for c in map(prob_column, CLASSES) if c in df.columns]:
        bad = df.index[(~df[col].between(0, 1)).fillna(False)]
        if len(bad):
            problems.append(f"{col} must be a probability (0 to 1); not in row(s) {_examples(bad.tolist())}")
    key = df["path"].astype(str) + "|" + (df["transform"].fillna("") if "transform" in df else "")
    dup = df.loc[key.duplicated(keep=False), "path"]
    if len(dup):
        problems.append(f"duplicate path(s) (same image and transform twice): {_examples(sorted(set(dup)))}")
    if check_files:
        absent = [p for p in df["path"].dropna() if not os.path.isfile(p)]
        if absent:
            problems.append(f"image file(s) not found: {_examples(absent)}")
    if problems:
        raise ManifestError("invalid manifest:\n  - " + "\n  - ".join(problems))
    return df


def _resolved_dir(path: str) -> str:
    """`path` absolute with the links of its folders resolved and its own name kept: the form a manifest's paths are
    compared with its (resolved) folder in, so a run reached through a linked folder (macOS /tmp, a linked home)
    still holds its own images; a file link keeps its name (load_manifest checks where it leads)."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _trust_new_images(given: list[str], resolved: list[str], folder: Path) -> None:
    """Record the common folder of the images that no place a manifest in `folder` may read holds yet (those of the
    CSVs given to `manifest concat`), so it loads again. Only theirs: the common folder of every row (a trusted
    dataset plus a run's own images) can be "/". An image whose path lies in the run but whose folder links out of
    it is never trusted by saving (`given`: the caller's paths, `resolved`: the same in `_resolved_dir` form)."""
    local = _local(folder)
    outside = _outside(resolved, [*local, *trusted_roots()])
    new = [r for g, r in zip(given, resolved) if r in outside and not _within(g, local)]
    if new:
        trust_root(os.path.commonpath([os.path.dirname(r) for r in new]))


def save_manifest(df: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Validate and write atomically. Paths are stored relative to `root` (default: the manifest's folder,
    or the images' common folder when they live outside it). A `root` the caller names outside the folder is
    trusted for later loads (the dataset `prepare` was given); a computed one is not (see `_trust_new_images`)."""
    target = manifest_file(path)
    folder = target.parent.resolve()
    df = validate_manifest(df)
    given = [os.path.abspath(p) for p in df["path"]]
    abs_paths = [_resolved_dir(p) for p in given]
    named = root is not None
    if root is None:
        inside = all(p.startswith(str(folder) + os.sep) for p in abs_paths)
        root = folder if inside or not abs_paths else Path(os.path.commonpath([os.path.dirname(p) for p in abs_paths]))
    root = Path(root).resolve()
    rel = []
    for p in abs_paths:
        r = os.path.relpath(p, root)
        if r.startswith(".." + os.sep) or r == "..":
            raise ManifestError(f"image {p} is outside the manifest's image root {root}")
        rel.append(r.replace(os.sep, "/"))
    out = df.copy()
    out.attrs = {}  # how this process read its sources (their folders, links skipped), not part of the table
    out["path"] = pd.array(rel, dtype="string")
    inside = str(root) == str(folder) or str(root).startswith(str(folder) + os.sep)
    if not inside and named:  # the dataset `prepare` was given: later loads may read there
        trust_root(root)
    elif not inside:
        _trust_new_images(given, abs_paths, folder)
    root_meta = {"root": os.path.relpath(root, folder) if inside else str(root)}
    if not inside:  # also relative, so a moved or copied run folder finds its own sibling images (see load_manifest)
        root_meta["root_rel"] = os.path.relpath(root, folder)
    table = pa.Table.from_pandas(out, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = json.dumps({**root_meta, "version": 1}).encode()
    table = table.replace_schema_metadata(meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return target


def load_manifest(
    path: str | Path,
    check_files: bool = False,
    image_root: str | Path | None = None,
    links_out: Literal["refuse", "skip"] = "refuse",
) -> pd.DataFrame:
    """Read and validate a manifest; `path` becomes absolute and must stay inside the image root: the stored one
    where it is trusted (see the module docstring), or `image_root` when the caller names it. A file whose symlinks
    lead outside the manifest's folder, its run folder, that root and the trusted image folders is refused
    (ManifestError), or with `links_out="skip"` left out and listed in `df.attrs["links_out"]` (path -> real file)
    for the caller to count.

    `df.attrs["manifest_dir"]` records where it was read from (later stages put caches beside it)."""
    target = manifest_file(path)
    if not target.is_file():
        raise ManifestError(
            f"no manifest at {target}: run `retinaug prepare ...` first, or point at a folder holding {MANIFEST_NAME}"
        )
    try:
        table = pq.read_table(target)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ManifestError(f"cannot read manifest {target}: {exc}") from None
    try:
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}") or b"{}")
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k, ""), str) for k in ("root", "root_rel")):
        raise ManifestError(f"{target}: its image-root metadata is damaged; save the manifest again")
    folder = target.parent.resolve()
    root = Path(os.path.normpath(folder / meta.get("root", ".")))
    if "root_rel" in meta and (folder / meta["root_rel"]).is_dir():  # relative first: the run folder may have moved
        root = Path(os.path.normpath(folder / meta["root_rel"]))
    if image_root is not None:
        root = Path(image_root).resolve()
    df = table.to_pandas()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"{target}: missing required column(s): {', '.join(missing)}")
    root_s = str(root)
    paths = []
    bad = []
    for i, rel in enumerate(df["path"].astype(str)):
        joined = os.path.normpath(os.path.join(root_s, rel))
        if os.path.isabs(rel) or joined == root_s or not _within(joined, [root_s]):
            bad.append(f"row {i}: {rel!r}")
        paths.append(joined)
    places = [
        os.path.realpath(f) for f in (*_local(folder), *trusted_roots(), *([root_s] if image_root is not None else []))
    ]
    escaped = _outside(paths, places)
    if image_root is None and (bad or not all(_within(p, places) for p in escaped)):  # the stored root sends reads
        _check_root(root, folder, target)  # elsewhere (no place vouches for it): the root is the fault, not links
    if bad:
        raise ManifestError(f"{target}: path(s) escape the image root {root}: {_examples(bad)}")
    df["path"] = paths
    if escaped and links_out == "refuse":
        raise ManifestError(
            f"{target}: image(s) that are symlinks to files outside the run and the trusted image folders, refused unread: "
            f"{_examples([f'{p} -> a file in {os.path.dirname(r)}' for p, r in escaped.items()])}. Replace each link by the "
            f"image itself, or, if you trust that folder, add it to ${ROOTS_ENV}"
        )
    df = validate_manifest(df[~df["path"].isin(list(escaped))] if escaped else df, check_files=check_files)
    df.attrs["manifest_dir"] = str(folder)
    df.attrs["links_out"] = escaped
    return df


def manifest_rows(source: str | Path | pd.DataFrame | None) -> pd.DataFrame | None:
    """A verb's input rows: a prepared folder or its manifest.parquet (loaded and checked), rows already loaded, or
    None for an optional input that is switched off."""
    if source is None or isinstance(source, pd.DataFrame):
        return source
    return load_manifest(source)


def split_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split (train, val, test), or every row (all); a split with no rows is an error that says so."""
    if split == "all":
        return df
    rows = df[df["split"] == split].reset_index(drop=True)
    if not len(rows):
        raise RetinaugError(
            f"no rows in split {split!r} (splits here: {', '.join(sorted(set(df['split']))) or 'none'}); try split all"
        )
    return rows


def real_rows(df: pd.DataFrame, split: str = "train", classes: Iterable[str] | None = None) -> pd.DataFrame:
    """Real images of one split (never synthetic or augmented rows), optionally of some classes: what a model
    may learn from (split 'train') or be scored on ('val', 'test')."""
    rows = df[(df["origin"] == "real") & (df["split"] == split)]
    return rows if classes is None else rows[rows["label"].isin(list(classes))]


def accepted_mask(df: pd.DataFrame) -> pd.Series:
    """Rows the labeler accepted: the one reading of the label stage's `accepted` column that every filter uses, so a
    missing verdict counts as rejected everywhere."""
    return df["accepted"].fillna(False).astype(bool)


def half_up(x: float) -> int:
    """Round half up (2.5 -> 3): how every per-class image count is rounded (numpy's round is half-to-even)."""
    return int(math.floor(x + 0.5))


def class_counts(df: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Images per class (rows) and `by` value (columns), with totals; used in summaries and the report."""
    table = pd.crosstab(df["label"], df[by], margins=True, margins_name="total")
    order = [c for c in CLASSES if c in table.index] + ["total"]
    return table.loc[order]
