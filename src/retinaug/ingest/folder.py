"""Class-folder datasets (`ROOT/<class name or code>/*.jpg`) to RUN/data; images stay where they are.

A folder name is a class code (`G`), a class name from `retinaug.classes.CLASSES` (`glaucoma`), or any
name given in `mapping` (`{"glau": "G"}`); case does not matter.

Patients: both eyes of one person must land in the same split, so by default the common naming
`<patient>_<eye>` (eye = left, right, l, r, od, os; any case; `_` or `-`) is detected in each file stem:
`P12_left.jpg` and `P12_right.jpg` become patient `P12` (eye left / right). `patient_regex` replaces this
rule: it is searched in the stem, and its group named `patient` (or else its first group) is the patient id
(a group named `eye` sets the eye). A file whose stem does not match is its own patient (`unmatched=
"own-patient"`, id = its path under ROOT without the suffix, so `glaucoma/1.jpg` and `normal/1.jpg` are two
patients) or is rejected (`unmatched="reject"`). When no file matches, a warning says that every file is its
own patient and how to pass `patient_regex`.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from ..classes import CLASSES, CODES
from ..errors import RetinaugError
from .checks import IMAGE_SUFFIXES, outside, screen
from .config import FolderConfig, parse_mapping
from .finish import finish_prepare

EYE_NAMING = re.compile(r"^(?P<patient>.+?)[_-](?P<eye>left|right|l|r|od|os)$", re.IGNORECASE)
EYES = {"left": "left", "l": "left", "os": "left", "right": "right", "r": "right", "od": "right"}


def folder_class(name: str, mapping: dict[str, str]) -> str | None:
    """Class code for a folder name, or None when it is not recognised."""
    key = name.strip().lower()
    if key in mapping:
        return mapping[key]
    if key.upper() in CODES:
        return key.upper()
    by_name = {v.lower(): k for k, v in CLASSES.items()}
    return by_name.get(key)


def patient_of(stem: str, regex: re.Pattern) -> tuple[str, str] | None:
    """(patient id, eye) from a file stem, or None when `regex` does not match it."""
    match = regex.search(stem)
    if not match:
        return None
    groups = regex.groupindex
    pid = match.group("patient") if "patient" in groups else match.group(1) if regex.groups else match.group(0)
    eye = EYES.get((match.group("eye") or "").lower(), "unknown") if "eye" in groups else "unknown"
    return (pid, eye) if pid else None


def _is_hidden(file: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(folder).parts)


def _files(folder: Path, root: Path, rejected: list[dict]) -> list[Path]:
    """Every file under a class folder. Symlinked folders are followed while they stay inside ROOT (each real folder
    once); one leaving ROOT is rejected unread, as is a broken link (file symlinks are checked by `screen`)."""
    files, seen, todo = [], set(), [folder]
    while todo:
        current = todo.pop()
        if (real := outside(str(current), str(root))) is not None:
            rejected.append(
                {
                    "path": str(current),
                    "reason": "outside dataset folder",
                    "detail": f"a symlink to {real}, outside {root}: not read",
                }
            )
            continue
        if os.path.realpath(current) in seen:
            continue
        seen.add(os.path.realpath(current))
        for entry in os.scandir(current):
            path = current / entry.name
            if entry.is_dir():
                todo.append(path)
            elif entry.is_file():
                files.append(path)
            elif entry.is_symlink():
                rejected.append(
                    {"path": str(path), "reason": "missing file", "detail": f"a broken symlink to {os.readlink(path)}"}
                )
            else:  # a FIFO, socket or device: reading it could block forever
                rejected.append({"path": str(path), "reason": "not an image file", "detail": "not a regular file"})
    return sorted(files)


def prepare_folder(root: str | Path, config: FolderConfig, out: str | Path) -> pd.DataFrame:
    """Ingest class folders into `out`: every image checked, patients grouped, patient-level split, manifest saved.

    `config` (a FolderConfig): `mapping` names folders that are not class codes or names, `patient_regex` and
    `unmatched` group files into patients, `min_size` and `workers` check the images, `val`, `test` and `seed`
    split the patients. Everything not used is counted in rejected.csv: hidden files, files outside class folders
    or not images, symlinks leaving ROOT, unmatched names (with `unmatched="reject"`), identical files under two
    classes."""
    started = time.perf_counter()
    patient_regex, unmatched, min_size = config.patient_regex, config.unmatched, config.min_size
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise RetinaugError(f"dataset folder {root} does not exist")
    names = parse_mapping(config.mapping)
    regex = re.compile(patient_regex) if patient_regex else EYE_NAMING  # `<patient>_<eye>` naming by default
    folders, rejected = _class_folders(root, names)
    candidates, matched, warnings = _candidates(folders, names, root, regex, unmatched, rejected)
    warnings += _same_names(candidates, root)
    kept, counts = screen(candidates, rejected, root, min_size, config.workers)
    kept = _drop_conflicting(kept, rejected, root)
    grouping = _grouping(kept, matched, len(candidates), patient_regex, unmatched)
    warnings += _grouping_warnings(grouping, len(kept), regex)
    df = pd.DataFrame(kept) if kept else pd.DataFrame(columns=["path"])
    info = {
        "source": str(root),
        "layout": "folder",
        "mapping": {f.name: folder_class(f.name, names) for f in folders},
        "patient_regex": patient_regex,
        "patients_grouping": grouping,
        "min_size": min_size,
        "images_listed": len(candidates),
        **counts,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return finish_prepare(
        df, out, val=config.val, test=config.test, seed=config.seed, rejected=rejected, root=root, info=info
    )


def _class_folders(root: Path, names: dict[str, str]) -> tuple[list[Path], list[dict]]:
    """The class folders in ROOT (every folder must name a class, so a typo is not silently dropped) and the
    rejections of what lies beside them: it is not read, but counted."""
    entries = sorted(root.iterdir())
    folders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    unknown = [p.name for p in folders if folder_class(p.name, names) is None]
    if unknown:
        raise RetinaugError(
            f"folder(s) {', '.join(unknown)} in {root} are not class codes or names; map them with "
            f"--map '{unknown[0]}=CODE' (codes: {','.join(CODES)})"
        )
    if not folders:
        raise RetinaugError(f"{root} has no class folders; expected ROOT/<class name or code>/*.jpg")
    rejected: list[dict] = []
    for entry in entries:
        if entry.name.startswith("."):
            files = sum(1 for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else 1
            rejected.append(
                {
                    "path": str(entry),
                    "reason": "hidden file",
                    "detail": f"hidden {'folder' if entry.is_dir() else 'file'} in ROOT ({files} file(s)), not read",
                }
            )
        elif not entry.is_dir():
            rejected.append(
                {
                    "path": str(entry),
                    "reason": "not in a class folder",
                    "detail": "files directly in ROOT have no class",
                }
            )
    return folders, rejected


def _not_image(file: Path, folder: Path) -> tuple[str, str] | None:
    """(reason, detail) when a file in a class folder is not an image to read: hidden, or not an image suffix."""
    if _is_hidden(file, folder):
        return "hidden file", "name or a parent folder starts with '.'"
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file", f"suffix {file.suffix!r}"
    return None


def _candidates(
    folders: list[Path], names: dict[str, str], root: Path, regex: re.Pattern, unmatched: str, rejected: list[dict]
) -> tuple[list[dict], int, list[str]]:
    """A manifest row per image file, labelled by its folder, with its patient; how many names matched `regex`;
    a warning per class folder without images. Files skipped are added to `rejected` in file order."""
    candidates: list[dict] = []
    warnings: list[str] = []
    matched = 0
    for folder in folders:
        code = folder_class(folder.name, names)
        images = 0
        for file in _files(folder, root, rejected):
            if skip := _not_image(file, folder):
                rejected.append({"path": str(file), "reason": skip[0], "detail": skip[1]})
                continue
            images += 1
            found = patient_of(file.stem, regex)
            if found is None and unmatched == "reject":
                rejected.append(
                    {
                        "path": str(file),
                        "reason": "bad patient id",
                        "detail": f"patient pattern {regex.pattern!r} does not match {file.stem!r} (--unmatched reject)",
                    }
                )
                continue
            matched += found is not None
            pid, eye = found or (file.relative_to(root).with_suffix("").as_posix(), "unknown")
            candidates.append(
                dict(
                    path=str(file),
                    label=code,
                    patient_id=pid,
                    eye=eye,
                    split="train",
                    origin="real",
                    source=f"folder:{root.name}",
                )
            )
        if not images:
            warnings.append(f"class folder {folder.name} ({code}) holds no image files")
    return candidates, matched, warnings


def _same_names(candidates: list[dict], root: Path) -> list[str]:
    """A warning when one file name occurs in several class folders (often numbered files per class)."""
    folders_of: dict[str, set[str]] = defaultdict(set)
    for c in candidates:
        folders_of[Path(c["path"]).name.lower()].add(Path(c["path"]).relative_to(root).parts[0])
    shared = sorted(n for n, f in folders_of.items() if len(f) > 1)
    if not shared:
        return []
    return [
        f"{len(shared)} file name(s) occur in more than one class folder (e.g. {shared[0]} in "
        f"{', '.join(sorted(folders_of[shared[0]]))}): kept as different images, each labelled by its folder"
    ]


def _drop_conflicting(kept: list[dict], rejected: list[dict], root: Path) -> list[dict]:
    """Identical bytes under two classes cannot both be right: every copy is rejected ('conflicting labels')."""
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for row in kept:
        by_hash[row["sha256"]].append(row)
    bad = {h for h, rows in by_hash.items() if len({r["label"] for r in rows}) > 1}
    for h in sorted(bad):
        rows = by_hash[h]
        where = ", ".join(Path(r["path"]).relative_to(root).as_posix() for r in rows)
        for r in rows:
            rejected.append(
                {
                    "path": r["path"],
                    "reason": "conflicting labels",
                    "detail": f"identical files under classes {','.join(sorted({x['label'] for x in rows}))}: {where}",
                }
            )
    return [r for r in kept if r["sha256"] not in bad]


def _grouping(kept: list[dict], matched: int, listed: int, patient_regex: str | None, unmatched: str) -> dict:
    """How patient ids were found, for summary.json and the printed summary."""
    pids = pd.Series([r["patient_id"] for r in kept], dtype="string")
    per_patient = pids.value_counts()
    return {
        "rule": f"--patient-regex {patient_regex!r}"
        if patient_regex
        else "<patient>_<eye> in file names (eye: left/right/l/r/od/os)",
        "files_matched": matched,
        "files_unmatched": listed - matched,
        "unmatched_policy": unmatched,
        "patients": int(per_patient.size),
        "patients_with_several_images": int((per_patient > 1).sum()),
    }


def _grouping_warnings(grouping: dict, kept: int, regex: re.Pattern) -> list[str]:
    """A warning when no file name, or only some, gave a patient id: photos of one person may then be split apart."""
    if grouping["files_matched"] == 0:
        return [
            f"no patient id found in the file names: each of the {kept} images is its own patient, so two photos "
            "of one person can land in train and test; if the names carry a patient id, pass e.g. "
            "--patient-regex '^(\\d+)_' (its first group is the patient id)"
        ]
    if grouping["files_unmatched"]:
        return [
            f"{grouping['files_unmatched']} file name(s) do not match the patient pattern {regex.pattern!r}: each is its own "
            "patient (--unmatched reject drops them instead)"
        ]
    return []
