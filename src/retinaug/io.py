"""Atomic file writes and content hashing: a killed run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RetinaugError
from .utf8 import utf8_text

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_WRITE_ERRORS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a parent of it is a file, not a folder",
    errno.EFBIG: "file too large (a limit of the file system or of `ulimit -f`)",
}


if TYPE_CHECKING:
    from matplotlib.figure import Figure


def default_cache_dir() -> Path:
    """`$RETINAUG_CACHE_DIR`, else `~/.cache/retinaug`: one content-keyed cache for every run and stage."""
    return Path(os.environ.get("RETINAUG_CACHE_DIR") or Path.home() / ".cache" / "retinaug")


def write_error(path: str | Path, exc: OSError) -> OSError | RetinaugError:
    """A clear RetinaugError for the usual reasons a write fails (read-only or full disk, long name); else `exc`."""
    reason = _WRITE_ERRORS.get(exc.errno)
    if reason is None:
        return exc
    hint = "choose an output folder you can write to (--out)"
    if exc.errno == errno.ENAMETOOLONG:
        hint = f"a file name may have at most {NAME_MAX} bytes; use shorter names"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space or choose another output folder (--out)"
    elif exc.errno == errno.EFBIG:
        hint = "raise the limit or choose an output folder on another file system (--out)"
    return RetinaugError(f"cannot write {path}: {reason}; {hint}")


@contextlib.contextmanager
def writing_weights(target: str | Path) -> Iterator[None]:
    """Around code that writes safetensors weights to `target` (a file, or a model folder diffusers fills): safetensors
    reports a failed write (a full disk) as SafetensorError, not OSError, which becomes the one-line error of every other
    failed write here; other SafetensorErrors (bugs) pass unchanged."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        # its only trace of the OSError: "No space left ... (os error 28)"
        code = re.search(r"\(os error (\d+)\)", str(exc))
        err = write_error(target, OSError(int(code[1]), str(exc))) if code else None
        if not isinstance(err, RetinaugError):
            raise
        raise err from None


def make_dirs(folder: str | Path) -> Path:
    """`mkdir -p` whose failures (read-only parent, over-long name) are clear errors."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from None
    return folder


def _temp_file(target: Path) -> Path:
    """Create an empty, new temporary file beside `target` with mode 0666 & ~umask (as `open()` would: mkstemp's
    0600 would make every output private whatever the user's umask). Its name stays within NAME_MAX bytes."""
    suffix = ".tmp" + target.suffix
    room = NAME_MAX - len(suffix.encode()) - 10  # '.' + name + '.' + 8 random characters
    name = os.fsencode(target.name)[: max(room, 1)].decode(errors="ignore")
    for _ in range(100):
        tmp = target.parent / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise write_error(target, exc) from None
    raise FileExistsError(f"no free temporary name beside {target}")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.
    A read-only folder, a full disk or a name too long for the file system is a RetinaugError saying so."""
    target = Path(target)
    make_dirs(target.parent)
    if len(os.fsencode(target.name)) > NAME_MAX:
        raise write_error(target, OSError(errno.ENAMETOOLONG, "File name too long"))
    tmp_path = _temp_file(target)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise write_error(target, exc) from None
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
    """A YAML file holding a mapping; a missing file, invalid YAML, a repeated key, an alias, bytes that are not UTF-8
    (see `retinaug.strict_yaml`) or another type is a clear error."""
    from .strict_yaml import parse_yaml  # here, not above: the CLI starts without PyYAML (see strict_yaml)

    path = Path(path)
    if not path.is_file():
        raise RetinaugError(f"config file {path} not found")
    raw = parse_yaml(path.read_bytes(), f"config file {path}") or {}
    if not isinstance(raw, dict):
        raise RetinaugError(f"config file {path} must hold a mapping of option: value")
    return raw


def load_json(path: str | Path, what: str = "file", fix: str = "") -> Any:
    """A JSON file that must be there (model metadata, a generation record): a missing or damaged one is a
    RetinaugError naming it, where it breaks, and `fix` (`read_json` is the lenient reader of optional records)."""
    path = Path(path)
    fix = f"; {fix}" if fix else ""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetinaugError(f"{what} {path} not found{fix}") from None
    except UnicodeDecodeError as exc:
        raise RetinaugError(f"{what} {path} is damaged (byte {exc.start} is not UTF-8 text){fix}") from None
    except json.JSONDecodeError as exc:
        raise RetinaugError(
            f"{what} {path} is damaged: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}){fix}"
        ) from None


def read_csv(path: str | Path, **kwargs):
    """`pandas.read_csv` (UTF-8, a BOM allowed) whose usual failures are RetinaugErrors naming the file and line:
    an empty file, bytes that are not UTF-8, a row with more fields than the header (which pandas would otherwise
    read silently shifted when it is the first row)."""
    import pandas as pd

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RetinaugError(f"CSV file {path} not found") from None
    if not data.strip():
        raise RetinaugError(f"CSV file {path} is empty ({len(data)} bytes, no header line)")
    text = utf8_text(data, str(path), "utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    for row in reader:
        if len(row) > len(header):
            raise RetinaugError(
                f"{path} line {reader.line_num}: {len(row)} fields where the header has {len(header)}; "
                "quote values that contain commas, or fix the row"
            )
    try:
        return pd.read_csv(io.StringIO(text), index_col=False, **kwargs)
    except pd.errors.ParserError as exc:  # e.g. an unclosed quote
        raise RetinaugError(f"{path} cannot be read as CSV: {str(exc).strip()}") from None


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
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise RetinaugError(f"path {name!r} must be relative to {root}")
    root_n = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(root_n, name.replace("\\", "/")))
    if joined != root_n and not joined.startswith(root_n + os.sep):
        raise RetinaugError(f"path {name!r} escapes its data folder {root_n}")
    return Path(joined)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """A matplotlib figure written atomically as an image (the format from the suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return Path(path)
