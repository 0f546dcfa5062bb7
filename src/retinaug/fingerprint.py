"""Content fingerprints: the sha256 of every file a later stage reads, kept incremental.

Hashing 5,000 images on every `retinaug run` would cost minutes; trusting sizes and mtimes alone would miss a
rewrite that keeps them (images regenerated with the same names and sizes, an mtime forced back). So each
file's digest is cached with its (size, mtime_ns, ctime_ns, inode) and re-read only when one of them differs:
an unchanged folder costs one `stat` per file. Every write changes at least one of the four: an atomic
replace (how retinaug writes) gives a new inode, and an in-place write moves the ctime, which no user call can
set back (`touch -d`/`os.utime` set mtime and atime only, and themselves move the ctime).

Residual assumption: a file whose size, mtime, ctime and inode are all unchanged has unchanged content. It
fails only for writes that bypass the file system's bookkeeping (editing the block device, a clock moved back
to the second of the earlier write together with a reused inode and the same size).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .io import read_json, sha256_file, sha256_text, write_json_atomic


def file_stamp(st: os.stat_result) -> list[int]:
    """(size, mtime_ns, ctime_ns, inode): what every write changes (see the module docstring), one `stat` to get."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Digests:
    """path -> sha256 of its bytes, cached in a small JSON file by (size, mtime_ns, ctime_ns, inode)."""

    def __init__(self, cache: str | Path | None = None):
        self.cache = Path(cache) if cache is not None else None
        found = read_json(self.cache) if self.cache is not None else None
        self.entries: dict[str, list] = found if isinstance(found, dict) else {}
        self.seen: set[str] = set()
        self.hashed = 0  # files read (not served from the cache) by this instance

    def __call__(self, path: str | Path) -> str | None:
        """The file's sha256, or None when it does not exist."""
        key = os.path.realpath(path)  # one name per file, however it was reached (a linked run folder)
        try:
            st = os.stat(key)
        except FileNotFoundError:
            return None
        stamp = file_stamp(st)
        self.seen.add(key)
        hit = self.entries.get(key)
        if isinstance(hit, list) and hit[:4] == stamp:
            return hit[4]
        digest = sha256_file(key)
        self.entries[key] = [*stamp, digest]
        self.hashed += 1
        return digest

    def save(self) -> None:
        """Write the cache, keeping only the files looked at since it was loaded (removed files drop out)."""
        if self.cache is not None:
            write_json_atomic(self.cache, {k: v for k, v in self.entries.items() if k in self.seen})


def fingerprint(files: Iterable[tuple[str, Path]], digests: Digests) -> str:
    """Hash of (name, content) pairs in the given order; a missing file counts as 'absent'."""
    return sha256_text("\n".join(f"{name}:{digests(path) or 'absent'}" for name, path in files))[:16]


def tree_identity(root: str | Path) -> str:
    """Hash of every file under `root` by name and identity (`file_stamp`, links followed, a link loop read once):
    what a dataset folder held when it was read. Adding, removing, renaming or rewriting any file changes it; an
    unchanged tree costs one `stat` per file."""
    lines: list[str] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: str, rel: str) -> None:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            lines.append(f"{rel} loop")
            return
        seen.add((st.st_dev, st.st_ino))
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            name = f"{rel}{entry.name}"
            try:
                if entry.is_dir():
                    walk(entry.path, name + "/")
                    continue
                lines.append(f"{name} {' '.join(map(str, file_stamp(entry.stat())))}")
            except OSError as exc:  # a broken link, an unreadable entry: ingest reports it; here it is a state
                lines.append(f"{name} {type(exc).__name__}")

    root = os.fspath(root)
    if os.path.isdir(root):
        walk(root, "")
    elif os.path.exists(root):
        lines.append(" ".join(map(str, file_stamp(os.stat(root)))))
    return sha256_text("\n".join(lines))[:16]
