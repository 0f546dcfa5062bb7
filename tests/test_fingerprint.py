"""Content digests with an incremental cache: unchanged files are not re-read; any rewrite is seen, even one that
keeps the size and sets the mtime back."""

from __future__ import annotations

import os

from retinaug.fingerprint import Digests, fingerprint
from retinaug.io import sha256_file


def test_unchanged_files_are_served_from_the_cache(tmp_path):
    files = []
    for i in range(5):
        f = tmp_path / f"img{i}.png"
        f.write_bytes(bytes([i]) * 100)
        files.append(f)
    first = Digests(tmp_path / ".digests.json")
    value = fingerprint([(f.name, f) for f in files], first)
    assert first.hashed == 5 and first(files[0]) == sha256_file(files[0])
    first.save()
    again = Digests(tmp_path / ".digests.json")
    assert fingerprint([(f.name, f) for f in files], again) == value and again.hashed == 0  # stat only


def test_rewrites_are_detected_whatever_they_keep(tmp_path):
    f = tmp_path / "img.png"
    f.write_bytes(b"a" * 64)
    cache = tmp_path / ".digests.json"
    d = Digests(cache)
    old = d(f)
    d.save()
    # in place, same size, mtime and atime set back: the ctime moved (no user call can set it)
    st = f.stat()
    with open(f, "r+b") as handle:
        handle.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    d = Digests(cache)
    assert d(f) == sha256_file(f) != old and d.hashed == 1
    d.save()
    # an atomic replace with the old bytes' size and mtime: a new inode
    tmp = tmp_path / ".img.tmp"
    tmp.write_bytes(b"c" * 64)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, f)
    d = Digests(cache)
    assert d(f) == sha256_file(f) and d.hashed == 1


def test_missing_files_count_as_absent_and_leave_the_cache(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    d = Digests(tmp_path / ".digests.json")
    both = fingerprint([("a", a), ("b", b)], d)
    d.save()
    b.unlink()
    d = Digests(tmp_path / ".digests.json")
    assert d(b) is None and fingerprint([("a", a), ("b", b)], d) != both
    d.save()
    assert list(Digests(tmp_path / ".digests.json").entries) == [str(a)]  # only the files still looked at
