"""mtbc_lib.core.atomic_write: the one way every result file is written."""

from __future__ import annotations

import os

import pytest

from mtbc_lib.core import atomic_write


def test_atomic_write_replaces_the_file_with_the_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    assert atomic_write(path, lambda p: p.write_text("a,b\n")) == path
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "a,b\n" and path.stat().st_mode & 0o777 == 0o666 & ~umask
    atomic_write(path, lambda p: p.write_text("c,d\n"))
    assert path.read_text() == "c,d\n"
    assert [p.name for p in path.parent.iterdir()] == ["table.csv"]  # no temporary file left


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")

    def half_then_fail(p):
        p.write_text('{"dsc": 0.')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
