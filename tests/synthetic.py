"""Generated BUSI-layout folders with known duplicates, shared by the tests of the audit,
the curation, the explorer, the command line and the scan-level splits (the fixtures
``synthetic_busi`` and ``synthetic_lesions`` of conftest.py write each once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi


def _scan(seed: int, h: int = 150, w: int = 190):
    """A fake ultrasound frame: smooth random texture, speckle, depth ramp, dark lesion."""
    rng = np.random.default_rng(seed)
    img = 110 + 420 * ndi.gaussian_filter(rng.normal(size=(h, w)), 4) + 10 * rng.normal(size=(h, w))
    img += np.linspace(50, -50, h)[:, None]
    yy, xx = np.mgrid[:h, :w]
    lesion = ((yy - h * 0.55) / (h * 0.14)) ** 2 + ((xx - w * 0.45) / (w * 0.16)) ** 2 < 1
    img[lesion] *= 0.35
    return np.clip(img, 0, 255).astype(np.uint8), lesion


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if a.dtype == bool:
        return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.NEAREST))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BILINEAR))


def _save(root: Path, cls: str, i: int, img: np.ndarray, mask: np.ndarray) -> None:
    d = root / cls
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(d / f"{cls} ({i}).png")
    if cls == "normal":
        Image.fromarray(np.zeros(img.shape + (3,), np.uint8)).save(d / f"{cls} ({i})_mask.png")
    else:
        Image.fromarray(mask).convert("1").save(d / f"{cls} ({i})_mask.png")


def write_synthetic_busi(root) -> Path:
    """A 10-image BUSI-layout folder with two duplicate groups:

    - group A (label conflict): benign 1 (a 190x150 scan), benign 2 (a crop of it),
      malignant 1 (the whole scan rescaled x1.2), malignant 2 (a crop rescaled x0.8);
    - group B (labels agree): normal 3 (a scan) and normal 4 (a crop of it);
    - benign 3, malignant 3, normal 1, normal 2: unrelated scans.
    """
    root = Path(root)
    a, la = _scan(1)
    _save(root, "benign", 1, a, la)
    _save(root, "benign", 2, a[12:140, 30:185], la[12:140, 30:185])
    _save(root, "malignant", 1, _resize(a, (228, 180)), _resize(la, (228, 180)))
    _save(root, "malignant", 2, _resize(a[20:145, 10:170], (128, 100)), _resize(la[20:145, 10:170], (128, 100)))
    for k, (cls, i) in enumerate([("benign", 3), ("malignant", 3), ("normal", 1), ("normal", 2)]):
        s, ls = _scan(10 + k)
        _save(root, cls, i, s, ls)
    s, ls = _scan(30)
    _save(root, "normal", 3, s, ls)
    _save(root, "normal", 4, s[15:, :150], ls[15:, :150])
    return root


def _frame(seed: int, dy: float = 0.0, dx: float = 0.0, angle: float = 0.0, speckle: int = 0,
           h: int = 150, w: int = 190):
    """One frame of a fake lesion: the tissue field of ``seed`` (with its dark lesion)
    shifted by (dy, dx) px and rotated by ``angle`` degrees, fresh speckle ``speckle``."""
    rng = np.random.default_rng(seed)
    big_h, big_w = h + 60, w + 60
    field = 420 * ndi.gaussian_filter(rng.normal(size=(big_h, big_w)), 4)
    yy, xx = np.mgrid[:big_h, :big_w]
    lesion = ((yy - big_h * 0.55) / (h * 0.14)) ** 2 + ((xx - big_w * 0.47) / (w * 0.16)) ** 2 < 1
    field = np.where(lesion, (field + 110) * 0.35 - 110, field)
    field = ndi.shift(ndi.rotate(field, angle, reshape=False, order=1, mode="reflect"), (dy, dx), order=1,
                      mode="reflect")
    lesion = ndi.shift(ndi.rotate(lesion.astype(float), angle, reshape=False, order=1), (dy, dx), order=1) > 0.5
    crop = (slice(30, 30 + h), slice(30, 30 + w))
    noise = np.random.default_rng(1000 + speckle).normal(size=(h, w))
    img = 110 + field[crop] + 12 * noise + np.linspace(50, -50, h)[:, None]
    return np.clip(img, 0, 255).astype(np.uint8), lesion[crop]


def write_synthetic_lesions(root) -> Path:
    """An 8-image BUSI-layout folder for the lesion relation:

    - benign 1 and benign 2: two frames of one lesion (shifted by 7/-10 px, rotated 2.5
      degrees, other speckle); benign 3: a crop of benign 2 (a copy: same scan);
    - malignant 1: a third frame of that lesion under another label (not the same lesion:
      the relation asks for one class);
    - benign 4, malignant 2, malignant 3, normal 1: other lesions at the same place.
    """
    root = Path(root)
    a, la = _frame(41, speckle=1)
    _save(root, "benign", 1, a, la)
    b, lb = _frame(41, 7, -10, 2.5, speckle=2)
    _save(root, "benign", 2, b, lb)
    _save(root, "benign", 3, b[10:, 15:], lb[10:, 15:])
    c, lc = _frame(41, -6, 8, -2, speckle=3)
    _save(root, "malignant", 1, c, lc)
    for k, (cls, i) in enumerate([("benign", 4), ("malignant", 2), ("normal", 1), ("malignant", 3)]):
        s, ls = _frame(50 + k, speckle=10 + k)
        _save(root, cls, i, s, ls)
    return root
