"""ODIR-5K as downloaded, in either layout, to RUN/data (images stay where they are; never copied).

- Kaggle layout: `full_df.csv` (one row per image, `filename` names the eye image, `labels` like "['N']")
  + `preprocessed_images/`.
- Challenge layout: `ODIR-5K_Training_Annotations(Updated)_V2.xlsx` (one row per patient: Left-/Right-Fundus,
  Left-/Right-Diagnostic Keywords, flags N..O) + `Training Images/`.

Label sources (`OdirConfig.labels`): "kaggle" = the patient-level label (Kaggle's `labels` column; in the challenge
layout the patient's N..O flags), "keywords" = per-eye labels from that eye's diagnostic keywords
(see `keywords.py`). Both layouts support both sources. The patient id is the ODIR ID.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pandas as pd

from ..classes import CODES
from ..errors import RetinaugError
from ..io import read_csv, safe_join
from .checks import screen
from .config import OdirConfig
from .finish import finish_prepare
from .keywords import eye_classes, primary_class, split_keywords

KAGGLE_CSV = "full_df.csv"
KAGGLE_IMAGES = "preprocessed_images"
CHALLENGE_XLSX = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
CHALLENGE_IMAGES = "Training Images"
EYE_RE = re.compile(r"_(left|right)\.[A-Za-z]+$", re.IGNORECASE)
KEYWORDS = {"left": "Left-Diagnostic Keywords", "right": "Right-Diagnostic Keywords"}


def detect_layout(root: Path) -> tuple[str, Path, Path]:
    """('kaggle'|'challenge', annotation file, image folder) for a dataset folder."""
    if (root / KAGGLE_CSV).is_file() and (root / KAGGLE_IMAGES).is_dir():
        return "kaggle", root / KAGGLE_CSV, root / KAGGLE_IMAGES
    xlsx = root / CHALLENGE_XLSX
    if not xlsx.is_file():
        found = sorted(root.glob("*Annotations*.xlsx"))
        xlsx = found[0] if found else xlsx
    if xlsx.is_file() and (root / CHALLENGE_IMAGES).is_dir():
        return "challenge", xlsx, root / CHALLENGE_IMAGES
    raise RetinaugError(
        f"{root} is not an ODIR-5K folder: expected {KAGGLE_CSV} + {KAGGLE_IMAGES}/ (Kaggle layout) or "
        f"{CHALLENGE_XLSX} + '{CHALLENGE_IMAGES}/' (challenge layout)"
    )


def _require(table: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RetinaugError(f"{name} lacks column(s) {', '.join(missing)}; is it the unmodified ODIR file?")


def _text(value: object) -> str:
    return "" if value is None or pd.isna(value) else str(value).strip()


def _kaggle_codes(value: object) -> list[str]:
    """Parse Kaggle's labels cell ("['N']") into class codes; raise ValueError when it is not one."""
    text = _text(value)
    if not text:
        raise ValueError("the labels cell is empty; expected a list of class codes like ['N']")
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"{text!r} is not a list of class codes like ['N']") from None
    if not isinstance(parsed, (str, list, tuple)):
        raise ValueError(f"{text!r} is not a list of class codes like ['N']")
    codes = [parsed] if isinstance(parsed, str) else list(parsed)
    unknown = [c for c in codes if not isinstance(c, str) or c not in CODES]
    if unknown or not codes:
        raise ValueError(f"unknown class code(s) {unknown or codes}; expected a list of {','.join(CODES)}")
    return codes


def _eye_entries_kaggle(csv: Path, labels: str) -> list[dict]:
    """One entry per CSV row; `row` is the line number in the file (header = line 1)."""
    table = read_csv(csv, dtype=str, keep_default_na=False)
    _require(table, ["ID", "filename", *KEYWORDS.values()] + (["labels"] if labels == "kaggle" else []), csv.name)
    if "labels" not in table.columns:
        table["labels"] = ""
    entries = []
    for i, rec in enumerate(table.to_dict("records")):
        filename = _text(rec["filename"])
        match = EYE_RE.search(filename)
        eye = match.group(1).lower() if match else "unknown"
        entry = {"row": i + 2, "filename": filename, "patient_id": _text(rec["ID"]), "eye": eye, "problem": None}
        entry["keywords"] = _text(rec[KEYWORDS[eye]]) if eye in KEYWORDS else ""
        try:
            entry["patient_codes"] = _kaggle_codes(rec["labels"])
        except ValueError as exc:
            entry["patient_codes"], entry["problem"] = [], ("unknown label", str(exc))
        entries.append(entry)
    return entries


def _flag(value: object) -> int | None:
    """A challenge-layout N..O flag cell as 0 or 1 (empty = 0; Excel may store 1 as '1.0'), None for anything else
    ('2', 'yes', 'inf', '1e400')."""
    text = _text(value) or "0"
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0, 1) else None


def _flags(rec: dict, columns: pd.Index, xlsx: Path) -> tuple[list[str], tuple[str, str] | None]:
    """(codes flagged 1, rejection or None) of one patient row; a cell that is not 0/1 is named by file, Excel column
    and value (at most 50 characters of it)."""
    from openpyxl.utils import get_column_letter  # the reader pandas used for this file

    flags = {c: _flag(rec[c]) for c in CODES}
    bad = [
        f"{xlsx.name} column {get_column_letter(columns.get_loc(c) + 1)} (flag {c}) holds {_text(rec[c])[:50]!r}, not 0 or 1"
        for c, v in flags.items()
        if v is None
    ]
    if bad:
        return [], ("unknown label", "; ".join(bad))
    codes = [c for c, v in flags.items() if v == 1]
    return codes, None if codes else ("unknown label", "no N..O flag is set")


def _eye_entries_challenge(xlsx: Path) -> list[dict]:
    """Two entries (left, right) per patient row; `row` is the Excel row number (header = row 1)."""
    try:
        table = pd.read_excel(xlsx, dtype=str, engine="openpyxl").fillna("")
    except Exception as exc:  # openpyxl raises zipfile, XML and value errors for damaged workbooks
        raise RetinaugError(
            f"cannot read {xlsx} as an Excel workbook ({type(exc).__name__}: {exc}); is it damaged?"
        ) from None
    _require(table, ["ID", "Left-Fundus", "Right-Fundus", *KEYWORDS.values(), *CODES], xlsx.name)
    entries = []
    for i, rec in enumerate(table.to_dict("records")):
        codes, problem = _flags(rec, table.columns, xlsx)
        for eye in ("left", "right"):
            entries.append(
                {
                    "row": i + 2,
                    "filename": _text(rec[f"{eye.title()}-Fundus"]),
                    "patient_id": _text(rec["ID"]),
                    "eye": eye,
                    "keywords": _text(rec[KEYWORDS[eye]]),
                    "patient_codes": codes,
                    "problem": problem,
                }
            )
    return entries


def _label(entry: dict, labels: str) -> tuple[list[str], tuple[str, str] | None]:
    """(class codes, rejection) for one eye image under the chosen label source."""
    if entry["problem"] and labels == "kaggle":
        return [], entry["problem"]
    eye_codes = eye_classes(entry["keywords"])
    if split_keywords(entry["keywords"]) and not eye_codes:
        return [], ("non-fundus", f"only non-fundus keywords: {entry['keywords']!r}")
    if labels == "kaggle":
        return entry["patient_codes"], None
    if entry["eye"] == "unknown":
        return [], ("bad row", f"cannot tell the eye from filename {entry['filename']!r} (need *_left.* / *_right.*)")
    if not eye_codes:
        return [], ("bad row", f"no diagnostic keywords for the {entry['eye']} eye")
    return eye_codes, None


def _check_entry(
    e: dict, images: Path, labels: str, allow_multilabel: bool, seen: dict[str, int]
) -> tuple[str, list[str], tuple[str, str] | None]:
    """(image path, class codes, rejection or None) for one annotation entry, before the image checks."""
    if not e["filename"]:
        return "", [], ("bad row", f"empty filename for the {e['eye']} eye")
    if not e["patient_id"]:
        return e["filename"], [], ("bad row", "empty ID")
    try:
        path = str(safe_join(images, e["filename"]))
    except RetinaugError as exc:
        return e["filename"], [], ("unsafe path", str(exc))
    if path in seen:
        return path, [], ("duplicate row", f"same image as row {seen[path]}")
    codes, reject = _label(e, labels)
    if reject is None and len(codes) > 1 and not allow_multilabel:
        reject = ("multi-label", f"classes {','.join(codes)}; use --allow-multilabel to keep the primary one")
    return path, codes, reject


def prepare_odir(root: str | Path, config: OdirConfig, out: str | Path) -> pd.DataFrame:
    """Ingest an ODIR-5K folder (either layout) into `out`: checked images, labels, patient split.

    `config` (an OdirConfig): `labels` is the label source, `min_size` and `workers` check the images, `val`,
    `test` and `seed` split the patients. Multi-finding images (two or more classes) are rejected ('multi-label')
    unless `allow_multilabel`, which keeps them with the primary class (`keywords.primary_class`) and all codes in
    `findings`."""
    started = time.perf_counter()
    labels, allow_multilabel, min_size = config.labels, config.allow_multilabel, config.min_size
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise RetinaugError(f"dataset folder {root} does not exist")
    layout, annotations, images = detect_layout(root)
    entries = _eye_entries_kaggle(annotations, labels) if layout == "kaggle" else _eye_entries_challenge(annotations)
    rejected: list[dict] = []
    candidates: list[dict] = []
    seen: dict[str, int] = {}
    for e in entries:
        path, codes, reject = _check_entry(e, images, labels, allow_multilabel, seen)
        if reject is not None:
            rejected.append({"row": e["row"], "path": path, "reason": reject[0], "detail": reject[1]})
            continue
        seen[path] = e["row"]
        candidates.append(
            {
                "path": path,
                "label": primary_class(codes),
                "patient_id": e["patient_id"],
                "eye": e["eye"],
                "split": "train",
                "origin": "real",
                "source": "odir",
                "findings": ",".join(codes),
                "keywords": e["keywords"],
                "row": e["row"],
            }
        )
    kept, counts = screen(candidates, rejected, root, min_size, config.workers)
    df = pd.DataFrame(kept).rename(columns={"row": "source_row"}) if kept else pd.DataFrame(columns=["path"])
    info = {
        "source": str(root),
        "layout": layout,
        "labels": labels,
        "allow_multilabel": allow_multilabel,
        "min_size": min_size,
        "annotation_rows": len({e["row"] for e in entries}),
        "images_listed": len(entries),
        **counts,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return finish_prepare(
        df, out, val=config.val, test=config.test, seed=config.seed, rejected=rejected, root=root, info=info
    )
