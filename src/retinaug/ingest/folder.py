"""Class-folder datasets (`ROOT/<class name or code>/*.jpg`) to RUN/data; images stay where they are.

A folder name is a class code (`G`), a class name from `retinaug.classes.CLASSES` (`glaucoma`), or any
name given in `mapping` (`{"glau": "G"}`); case does not matter. Without an id in the file name every
image is its own patient (patient id = file stem); `patient_regex` (searched in the stem) takes the
patient id from its group named `patient` or else its first group, so `P12_left.jpg` and `P12_right.jpg`
share patient `P12` and land in the same split. The eye is unknown.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd

from ..classes import CLASSES, CODES
from ..errors import RetinaugError
from .checks import IMAGE_SUFFIXES, screen
from .finish import finish_prepare


def parse_mapping(spec: str | dict[str, str] | None) -> dict[str, str]:
    """'glaucoma=G,cataract=C' (or a dict) -> {'glaucoma': 'G', ...} with validated codes."""
    if not spec:
        return {}
    pairs = spec.items() if isinstance(spec, dict) else [p.split("=", 1) for p in spec.split(",") if p.strip()]
    mapping = {}
    for pair in pairs:
        if len(pair) != 2 or not pair[0].strip():
            raise RetinaugError(f"bad --map entry {'='.join(pair)!r}: write FOLDER=CODE, e.g. 'glaucoma=G,cataract=C'")
        name, code = pair[0].strip().lower(), pair[1].strip().upper()
        if code not in CODES:
            raise RetinaugError(f"--map {name}={code}: unknown class code; valid codes: {','.join(CODES)}")
        mapping[name] = code
    return mapping


def folder_class(name: str, mapping: dict[str, str]) -> str | None:
    """Class code for a folder name, or None when it is not recognised."""
    key = name.strip().lower()
    if key in mapping:
        return mapping[key]
    if key.upper() in CODES:
        return key.upper()
    by_name = {v.lower(): k for k, v in CLASSES.items()}
    return by_name.get(key)


def _patient(stem: str, regex: re.Pattern | None) -> str | None:
    if regex is None:
        return stem
    match = regex.search(stem)
    if not match:
        return None
    if "patient" in regex.groupindex:
        return match.group("patient")
    return match.group(1) if regex.groups else match.group(0)


def prepare_folder(
    root: str | Path,
    out: str | Path,
    mapping: str | dict[str, str] | None = None,
    patient_regex: str | None = None,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    min_size: int = 64,
    workers: int | None = None,
) -> pd.DataFrame:
    """Ingest class folders into `out`: every image checked, patient-level split, manifest saved."""
    started = time.perf_counter()
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise RetinaugError(f"dataset folder {root} does not exist")
    names = parse_mapping(mapping)
    try:
        regex = re.compile(patient_regex) if patient_regex else None
    except re.error as exc:
        raise RetinaugError(f"--patient-regex {patient_regex!r} is not a valid regular expression: {exc}") from None
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if folder_class(p.name, names) is None]
    if unknown:
        raise RetinaugError(
            f"folder(s) {', '.join(unknown)} in {root} are not class codes or names; map them with "
            f"--map '{unknown[0]}=CODE' (codes: {','.join(CODES)})"
        )
    if not folders:
        raise RetinaugError(f"{root} has no class folders; expected ROOT/<class name or code>/*.jpg")
    candidates: list[dict] = []
    rejected: list[dict] = []
    for folder in folders:
        code = folder_class(folder.name, names)
        for file in sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                rejected.append({"path": str(file), "reason": "not an image file", "detail": f"suffix {file.suffix!r}"})
                continue
            pid = _patient(file.stem, regex)
            if pid is None:
                rejected.append({"path": str(file), "reason": "bad patient id", "detail": f"--patient-regex did not match {file.stem!r}"})
                continue
            candidates.append(
                dict(path=str(file), label=code, patient_id=pid, eye="unknown", split="train", origin="real", source=f"folder:{root.name}")
            )
    kept, converted = screen(candidates, rejected, min_size, workers)
    df = pd.DataFrame(kept) if kept else pd.DataFrame(columns=["path"])
    info = {
        "source": str(root),
        "layout": "folder",
        "mapping": {f.name: folder_class(f.name, names) for f in folders},
        "patient_regex": patient_regex,
        "min_size": min_size,
        "images_listed": len(candidates),
        "converted_to_rgb": converted,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return finish_prepare(df, out, val=val, test=test, seed=seed, rejected=rejected, root=root, info=info)
