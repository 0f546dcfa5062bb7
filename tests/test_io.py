"""Atomic writes and safe path joining."""

import pytest

from retinaug.errors import RetinaugError
from retinaug.io import atomic_path, safe_join, write_json_atomic


def test_atomic_path_leaves_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("finished work")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("killed")
    assert target.read_text() == "finished work"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_write_json_atomic_roundtrip(tmp_path):
    import json

    write_json_atomic(tmp_path / "a" / "b.json", {"x": 1})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b.jpg", "/etc/passwd", "..\\..\\x.jpg", ""])
def test_safe_join_refuses_escaping_names(tmp_path, name):
    with pytest.raises(RetinaugError):
        safe_join(tmp_path, name)


def test_safe_join_accepts_inner_names(tmp_path):
    assert safe_join(tmp_path, "sub/../img.jpg") == tmp_path.resolve() / "img.jpg"
