"""Shared fixtures. Markers (`data`, `slow`, `browser`) are registered in pyproject.toml.

The tests mirror the library (``tests/<package>/test_<module>.py``; integration and browser
tests in folders of their own) and are imported by pytest's ``importlib`` mode, so that two
folders may hold modules of one name; helpers shared across folders (``helpers.py``,
``synthetic.py``) are found because this folder is put on ``sys.path`` here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real BUSI folder (``MTBC_DATA`` or ../shared/data/BUSI); skips the test if absent."""
    from mtbc_lib import core

    try:
        return core.data_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"real BUSI data absent: {exc}")


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Save ``array`` (H, W) or (H, W, C) as a PNG, converted to ``mode`` if given."""
    im = Image.fromarray(np.asarray(array))
    if mode is not None and im.mode != mode:
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


@pytest.fixture(scope="session")
def busi(data_dir):
    """The real BUSI release decoded at 128 px (``mtbc_lib.data.load_busi``, cached)."""
    from mtbc_lib import data

    return data.load_busi(data_dir, progress=False)


@pytest.fixture
def make_busi(tmp_path):
    """Factory writing a tiny BUSI-layout folder under tmp_path and returning its path.

    ``make_busi(n_per_class=2, size=(64, 64))`` writes ``n`` images per class: a grey ramp
    plus the image id as the brightness offset, benign/malignant with a rectangular lesion
    mask, normal with an all-zero RGB mask (as in BUSI). ``size`` is (height, width).
    """

    def make(n_per_class: int = 2, size: tuple[int, int] = (64, 64), root: Path | None = None) -> Path:
        root = root or tmp_path / "BUSI"
        h, w = size
        for cls in ("benign", "malignant", "normal"):
            for i in range(1, n_per_class + 1):
                img = (np.add.outer(np.arange(h), np.arange(w)) * 2 + 7 * i) % 256
                write_png(root / cls / f"{cls} ({i}).png", img.astype(np.uint8), "L")
                mask = np.zeros((h, w), np.uint8)
                if cls != "normal":
                    mask[h // 4: h // 2, w // 4: w // 2 + i] = 255
                    write_png(root / cls / f"{cls} ({i})_mask.png", mask, "1")
                else:
                    write_png(root / cls / f"{cls} ({i})_mask.png", np.stack([mask] * 3, -1), "RGB")
        return root

    return make


@pytest.fixture(scope="session")
def synthetic_busi(tmp_path_factory) -> Path:
    """A 10-image BUSI folder with two groups of copies (``synthetic.write_synthetic_busi``),
    written once per session: read it, never change it (copy it first)."""
    from synthetic import write_synthetic_busi

    return write_synthetic_busi(tmp_path_factory.mktemp("synthetic") / "BUSI")


@pytest.fixture(scope="session")
def synthetic_lesions(tmp_path_factory) -> Path:
    """An 8-image BUSI folder with frames of one lesion (``synthetic.write_synthetic_lesions``),
    written once per session: read it, never change it."""
    from synthetic import write_synthetic_lesions

    return write_synthetic_lesions(tmp_path_factory.mktemp("lesions") / "BUSI")
