"""Fixtures shared by the tests of the duplicate audit (tests/dedup): every test that does
not need the real data gets a private cache folder, and the searches of the two generated
folders are run once per session, in a cache folder of their own (not ``~/.cache/mtbc``)."""

from __future__ import annotations

import pytest

from mtbc_lib import dedup


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    if request.node.get_closest_marker("data") is None:
        monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))


def _search(root, cache):
    with pytest.MonkeyPatch.context() as m:  # session fixtures run before _private_cache
        m.setenv("MTBC_CACHE", str(cache))
        return dedup.find_groups(root, progress=False, workers=1)


@pytest.fixture(scope="session")
def lesions(synthetic_lesions, tmp_path_factory):
    """(folder, find_groups result) of ``synthetic_lesions``: read it, never change it."""
    root = synthetic_lesions
    return root, _search(root, tmp_path_factory.mktemp("lesions_cache"))


@pytest.fixture(scope="session")
def synthetic(synthetic_busi, tmp_path_factory):
    """(folder, find_groups result) of ``synthetic_busi``: read it, never change it."""
    root = synthetic_busi
    return root, _search(root, tmp_path_factory.mktemp("synthetic_cache"))
