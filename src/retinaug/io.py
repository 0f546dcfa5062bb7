"""Atomic file writes and content hashing: a killed run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json_atomic(target: str | Path, obj: Any) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """The parsed JSON file, or None when it is missing or unreadable (a record not written yet, a killed write)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def json_dict(path: str | Path) -> dict:
    """`read_json` for files that hold an object: {} when the file is missing, unreadable or holds something else."""
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def read_yaml(path: str | Path) -> dict:
    """A YAML file holding a mapping; a missing file, invalid YAML or another type is a clear error."""
    import yaml

    from .errors import RetinaugError

    path = Path(path)
    if not path.is_file():
        raise RetinaugError(f"config file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RetinaugError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RetinaugError(f"config file {path} must hold a mapping of option: value")
    return raw


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used for exact-duplicate detection and stage input hashes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def safe_join(root: str | Path, name: str) -> Path:
    """Join an untrusted relative `name` (from a CSV or manifest) onto `root`; refuse anything escaping it."""
    from .errors import RetinaugError

    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise RetinaugError(f"path {name!r} must be relative to {root}")
    root_n = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(root_n, name.replace("\\", "/")))
    if joined != root_n and not joined.startswith(root_n + os.sep):
        raise RetinaugError(f"path {name!r} escapes its data folder {root_n}")
    return Path(joined)

