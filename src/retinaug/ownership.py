"""What retinaug owns: it deletes or replaces only files it wrote itself.

Every folder retinaug writes (a run folder, a stage folder, the `--out` of a standalone verb) carries an inventory,
`.owned.json`: the files it wrote there, relative to the folder. A writer opens the inventory before it writes
(`open_since_ns` set) and seals it when it stops, adding every file changed since it opened; a writer killed
mid-way leaves it open, and the next one counts the files changed since then as the killed writer's. A sub-folder
with an inventory of its own (a stage folder in a run folder) is that inventory's business.

Before a writer starts, a folder holding files that no inventory lists — a dataset, a user's notes, a model from
elsewhere — is refused with a message naming them (`claim`): retinaug never deletes them and never writes beside
them, except in a run folder the user passed `--adopt` for, whose own top-level files are then left alone.
Folders written by retinaug before inventories existed are recognised by the file each writer leaves (a stage
record, a model's metadata) and adopted whole, once.

Residual assumption: a file a user drops into a folder while a retinaug writer works there, or after one was
killed and before the next one starts, is taken for that writer's.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import RetinaugError
from .io import read_json, write_error, write_json_atomic

INVENTORY = ".owned.json"
# what a folder written by an earlier retinaug (no inventory) holds, each a set of files found together: a stage
# record, a run's log, a generator (history.json is retinaug's; config.json alone is any model's), a classifier, a
# generation record, a manifest
LEGACY_MARKS = (
    ("stage.json",),
    ("run.log", "config.yaml"),
    ("history.json", "config.json"),
    ("model.json", "model.safetensors"),
    ("generate.json",),
    ("manifest.parquet",),
)
LOCK = ".lock"  # the run lock (lock.py): ours when empty or holding a holder's details
_open: dict[str, list[int]] = {}  # folders this process holds open -> [nesting depth, when it opened them (ns)]


def _our_lock(path: Path) -> bool:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    if not text.strip():
        return True
    data = read_json(path)
    return isinstance(data, dict) and "pid" in data


def _files(folder: Path, limit: int | None = None) -> dict[str, int]:
    """Relative path -> ctime_ns of every file and link under `folder` (links are not followed), skipping
    sub-folders that keep an inventory of their own; the first `limit` found when given (a home folder passed as
    --out is not walked whole to be refused)."""
    found: dict[str, int] = {}

    def add(p: Path) -> None:
        try:
            found[p.relative_to(folder).as_posix()] = os.lstat(p).st_ctime_ns
        except FileNotFoundError:  # gone since the listing (a writer's temporary file renamed into place): not present
            pass

    for root, dirs, names in os.walk(folder):
        if limit is not None and len(found) >= limit:
            break
        here = Path(root)
        for d in [d for d in dirs if (here / d / INVENTORY).is_file() or (here / d).is_symlink()]:
            dirs.remove(d)
            if (here / d).is_symlink():  # a link to a folder is a file of ours (or not), never walked into
                add(here / d)
        for n in names:
            p = here / n
            if n == LOCK and here == folder and not p.is_symlink() and _our_lock(p):
                continue
            add(p)
    return found


def _inventory(folder: Path) -> dict | None:
    data = read_json(folder / INVENTORY)
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def owned(folder: Path, present: dict[str, int] | None = None) -> set[str]:
    """The files of `folder` retinaug wrote: its inventory, plus those changed since an unfinished writer opened it."""
    present = _files(folder) if present is None else present
    inv = _inventory(folder)
    if inv is None:
        return set(present) if is_legacy(folder) else set()
    mine = set(inv["files"]) | {INVENTORY}
    since = inv.get("open_since_ns")
    if isinstance(since, int):
        mine |= {name for name, ctime in present.items() if ctime >= since}
    return mine & set(present)


def is_legacy(folder: Path) -> bool:
    """A folder an earlier retinaug wrote (before inventories): it holds one of the files its writers leave."""
    return not (folder / INVENTORY).exists() and any(
        all((folder / m).is_file() for m in marks) for marks in LEGACY_MARKS
    )


def foreign(folder: str | Path, limit: int | None = None) -> list[str]:
    """Files in `folder` that retinaug did not write (sorted); [] for a missing folder. `limit`: in a folder
    retinaug never wrote, stop after that many."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    never = _inventory(folder) is None and not is_legacy(folder)
    present = _files(folder, limit if never else None)
    return sorted(set(present) - owned(folder, present))


def _listing(names: list[str], k: int = 4) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def check_foreign(folder: Path, what: str, adopt: bool = False) -> None:
    """Refuse a folder holding files retinaug did not write (`adopt`, now or when the folder was first claimed:
    allowed, left alone)."""
    if adopt or (_inventory(folder) or {}).get("adopted"):
        return
    if folder.exists() and not folder.is_dir():
        raise RetinaugError(f"{what} {folder} is a file, not a folder: choose another output folder")
    others = foreign(folder, limit=1000)
    if others:
        count = f"{len(others)}+" if len(others) >= 1000 else str(len(others))
        raise RetinaugError(
            f"{what} {folder} holds {count} file(s) retinaug did not write ({_listing(others)}); retinaug never "
            "deletes or writes beside files it does not own: move them out, or choose a new or empty folder"
        )


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def claim(folder: Path, what: str = "output folder", adopt: bool = False) -> None:
    """Open `folder`'s inventory for writing (creating the folder), after refusing foreign files (see module doc).
    Re-entrant within a process."""
    folder = Path(folder)
    key = _key(folder)
    if key in _open:
        _open[key][0] += 1
        return
    check_foreign(folder, what, adopt)
    keep = sorted(owned(folder) - {INVENTORY}) if folder.is_dir() else []
    adopted = adopt or bool((_inventory(folder) or {}).get("adopted"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # named as the folder asked for, not the parent that refused
        raise write_error(folder, exc) from None
    since = time.time_ns()
    write_json_atomic(
        folder / INVENTORY, {"files": keep, "open_since_ns": since, **({"adopted": True} if adopted else {})}
    )
    _open[_key(folder)] = [1, since]


def seal(folder: Path) -> None:
    """Close the inventory: what it listed and still exists, plus every file changed since it was opened."""
    folder = Path(folder)
    key = _key(folder)
    depth, since = _open.get(key, [1, None])
    if depth > 1:
        _open[key][0] -= 1
        return
    _open.pop(key, None)
    if folder.is_dir():
        present = _files(folder)
        mine = owned(folder, present) | {n for n, ctime in present.items() if since is not None and ctime >= since}
        inv = _inventory(folder) or {}
        write_json_atomic(
            folder / INVENTORY,
            {
                "files": sorted(mine - {INVENTORY}),
                "open_since_ns": None,
                **({"adopted": True} if inv.get("adopted") else {}),
            },
        )


@contextlib.contextmanager
def owned_output(folder: str | Path, what: str = "output folder", adopt: bool = False) -> Iterator[Path]:
    """`claim` for the block's duration, sealed however it ends (a kill -9 leaves it open; see module doc). A folder
    it created is removed again when the block fails before writing anything into it."""
    folder = Path(folder)
    created = not folder.exists()
    claim(folder, what, adopt)
    finished = False
    try:
        yield folder
        finished = True
    finally:
        seal(folder)
        if not finished and created and [p.name for p in folder.iterdir()] == [INVENTORY]:  # refused before writing
            (folder / INVENTORY).unlink()
            folder.rmdir()


def clean(folder: Path) -> None:
    """Delete what retinaug wrote in `folder` (links themselves, never their targets) and the sub-folders that
    leaves empty; foreign files stay (`claim` refuses them before anything is written)."""
    if not folder.is_dir():
        return
    present = _files(folder)
    for name in sorted(owned(folder, present) - {INVENTORY}):
        os.unlink(folder / name)
    for root, dirs, _ in sorted(os.walk(folder, topdown=False), key=lambda t: -len(t[0])):
        for d in dirs:
            p = Path(root) / d
            if not p.is_symlink() and p.is_dir() and not any(p.iterdir()):
                p.rmdir()


def check_apart(out: Path, data: Path, what: str = "the run folder") -> None:
    """Refuse an output folder inside the dataset it reads (a later ingest would read it as data) or holding it."""
    real, d = Path(os.path.realpath(out)), Path(os.path.realpath(data))
    if real == d or real.is_relative_to(d):
        raise RetinaugError(
            f"{what} {out} lies inside the dataset {data}: put it elsewhere (e.g. runs/NAME), or a later "
            "ingest would read retinaug's own files as data"
        )
    if d.is_relative_to(real):
        raise RetinaugError(
            f"the dataset {data} lies inside {what} {out}, which holds only what retinaug writes: put "
            "the output elsewhere (e.g. runs/NAME) or move the dataset out"
        )


def check_run_folder(run: Path, stage_folders: Iterable[Path], datasets: Iterable[Path], adopt: bool = False) -> None:
    """What `retinaug run` checks before anything starts: `run` is new, empty or a retinaug run folder (or `adopt`
    was given), no stage folder holds foreign files, and no dataset lies inside the run folder or holds it."""
    for data in datasets:
        check_apart(run, Path(data))
    check_foreign(run, "--out" + (" (the current folder: was --out empty?)" if str(run) == "." else ""), adopt)
    for folder in stage_folders:
        check_foreign(folder, "stage folder")


__all__ = [
    "INVENTORY",
    "check_apart",
    "check_foreign",
    "check_run_folder",
    "claim",
    "clean",
    "foreign",
    "owned",
    "owned_output",
    "seal",
]
