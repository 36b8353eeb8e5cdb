"""Tests of mtbc_lib.data.curation: the published keep-list, the audit's keep-one list given by
the caller, a keep-list file, and bad curations. Real-data checks behind @pytest.mark.data."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from mtbc_lib import data
from mtbc_lib.data.busi import DataError
from mtbc_lib.data.curation import curate
from mtbc_lib.data.splits import cv_splits


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    """Keep tiny-data caches out of the user's cache (real-data tests use the real one)."""
    if request.node.get_closest_marker("data") is None:
        monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- indexing


def test_published_keep_list_is_the_published_file():
    raw = data.PUBLISHED_KEEP_LIST.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == "4aa2096b4b8ef34d3dc03ddcd513f059020601ef89f2dc06741214f1e197f848"
    keep = data.read_keep_list(data.PUBLISHED_KEEP_LIST)
    assert len(keep) == 450
    counts = {c: sum(1 for k, _ in keep if k == c) for c in ("benign", "malignant", "normal")}
    assert counts == {"benign": 222, "malignant": 164, "normal": 64}
    assert ("benign", 20) in keep and ("benign", 42) not in keep


def test_write_keep_list_reproduces_published_bytes(tmp_path):
    keep = data.read_keep_list(data.PUBLISHED_KEEP_LIST)
    out = tmp_path / "sub" / "curated.csv"
    data.write_keep_list(sorted(keep, reverse=True), out)
    assert out.read_bytes() == data.PUBLISHED_KEEP_LIST.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["curated.csv"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert data.read_keep_list(out) == keep


def test_keep_list_small_roundtrip_and_lf_input(tmp_path):
    p = tmp_path / "k.csv"
    data.write_keep_list([("normal", 3), ("benign", 10), ("benign", 2)], p)
    assert p.read_bytes() == b"class;id\r\nbenign;2\r\nbenign;10\r\nnormal;3"
    lf = tmp_path / "lf.csv"
    lf.write_text("class;id\nmalignant;5\n")
    assert data.read_keep_list(lf) == {("malignant", 5)}


@pytest.mark.parametrize("text,needle", [
    ("", "empty"),
    ("klass;id\r\nbenign;1", "header"),
    ("class;id\r\nbenign;1\r\ncyst;2", "line 3"),
    ("class;id\r\nbenign;x", "line 2"),
])
def test_read_keep_list_bad_input(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=needle) as info:
        data.read_keep_list(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_write_keep_list_rejects_unknown_class(tmp_path):
    with pytest.raises(ValueError, match="cyst"):
        data.write_keep_list([("cyst", 1)], tmp_path / "k.csv")
    assert not (tmp_path / "k.csv").exists()


def test_curate_none_path_and_unknown(make_busi, tmp_path):
    a = data.load_busi(make_busi(n_per_class=2), size=16, progress=False, workers=1)
    assert curate(a, "none").names == a.names
    keep = tmp_path / "keep.csv"
    data.write_keep_list([("benign", 2), ("normal", 1)], keep)
    c = curate(a, keep)
    assert c.names == ["benign (2)", "normal (1)"] and list(c.labels) == [0, 2]
    with pytest.raises(ValueError, match="paper, keep-one, none"):
        curate(a, "papr")
    # the paper's list names images the tiny folder lacks
    with pytest.raises(DataError, match="not in the loaded data"):
        curate(a, "paper")


# ----------------------------------------------------------------------------- folds

@pytest.mark.data
def test_real_curate_paper_and_folds(busi):
    cur = curate(busi, "paper")
    assert len(cur) == 450 and np.bincount(cur.labels).tolist() == [222, 164, 64]
    splits = cv_splits(cur.labels)
    assert sorted(len(s.test) for s in splits) == [112, 112, 113, 113]
    assert sorted(np.concatenate([s.test for s in splits]).tolist()) == list(range(450))


@pytest.mark.data
@pytest.mark.slow
def test_real_curate_keep_one(busi, data_dir):
    from mtbc_lib import dedup

    with pytest.raises(ValueError, match="curation 'keep-one': needs the duplicate audit's keep-list"):
        curate(busi, "keep-one")
    cur = curate(busi, "keep-one", dedup.keep_list(data_dir, "keep-one"))
    assert 450 < len(cur) < 780
    assert set(np.unique(cur.labels)) == {0, 1, 2}
