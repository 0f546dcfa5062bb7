"""The run lock: one process at a time works in a run folder.

`RUN/.lock` is locked with `fcntl.flock` (an OS-level lock: the kernel drops it when the holder exits, even by
`kill -9`, so a crash never leaves a stale lock) and holds the holder's PID, host, command and start time, so a
second process can say who is working there. Taking it is re-entrant within one process (`run` calls the
report, which takes it too).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import RetinaugError

LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # lock file -> nesting depth, in this process


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another process (it has not written its details yet)"
    return f"PID {info['pid']} on {info.get('host', '?')} (`retinaug {info.get('command', '?')}`, started {info.get('started', '?')})"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def run_lock(run: str | Path, command: str) -> Iterator[None]:
    """Hold RUN/.lock while the block runs; a RetinaugError naming the holder if another process has it."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK_NAME
    key = str(path.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    handle = open(path, "a+")  # never truncated before the lock is ours: the holder's details stay readable
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetinaugError(
                f"{run} is in use by {_describe(_read(path))}: wait for it to finish, or stop it, then run again"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "argv": sys.argv,
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            handle.truncate(0)
    finally:
        handle.close()  # closing releases the lock


def lock_holder(run: str | Path) -> str | None:
    """Who holds RUN/.lock ('PID 123 on host (...)'), or None when it is free; creates and writes nothing."""
    path = Path(run) / LOCK_NAME
    if not path.is_file() or str(path.resolve()) in _held:
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read(path))
    return None


def run_folder_of(out: str | Path) -> Path | None:
    """The run folder that `out` (a stage folder such as RUN/synthetic) lies in, if it is one: its parent holds
    a lock file or a pipeline config.yaml."""
    parent = Path(out).resolve().parent
    return parent if (parent / LOCK_NAME).is_file() or (parent / "config.yaml").is_file() else None
