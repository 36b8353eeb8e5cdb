"""The BUSI data: index the raw folder, read any PNG mode, resize and cache the arrays,
and the keep-list file format (the curation rules are in :mod:`mtbc_lib.data.curation`, the folds
in :mod:`mtbc_lib.data.splits`).

Layout expected (the public ``Dataset_BUSI_with_GT``)::

    DATA_DIR/benign/benign (1).png          image
    DATA_DIR/benign/benign (1)_mask.png     its mask
    DATA_DIR/benign/benign (100)_mask_1.png a second lesion of image 100 (also _mask_2, ...)
    DATA_DIR/malignant/...  DATA_DIR/normal/...

Conventions:

- PNGs are decoded by Pillow, or by Wuffs where the optional ``pywuffs`` is installed
  (``pip install mtbc[fast-png]``: 8 and 16-bit files without a tRNS chunk; the speed-up is
  measured in ``benchmarks/bench_dedup.py --decoders``); both give the same pixels.
- images become grey ``uint8`` as Pillow's ``convert("L")`` makes them, i.e. ITU-R 601-2 luma
  ``L = (299 R + 587 G + 114 B) / 1000`` (fixed point, exact for grey pixels R = G = B,
  so the greyscale re-encoded files and the original all-RGB release decode to the same
  values); alpha is ignored; mode "1" gives 0/255.
- a mask pixel is lesion when any colour channel is non-zero (and, for RGBA, alpha is
  non-zero); the ground truth of an image is the union of all its mask files.
- resizing to ``size x size`` (aspect ratio not kept, as in the paper): area averaging
  (Pillow ``BOX``) for images, nearest neighbour for masks, so masks stay binary.

Every problem with the input raises :class:`DataError` with one line naming the file and
saying what was expected; nothing is written (cache) unless everything loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Iterable, NoReturn, Sequence

import numpy as np
from PIL import Image

from mtbc_lib import core
from mtbc_lib.core import CLASSES, atomic_write

__all__ = [
    "DataError", "IMAGE_MODES", "MASK_MODES", "PUBLISHED_KEEP_LIST", "RELEASE_COUNTS",
    "index_busi", "scan_busi", "read_image", "read_mask", "BusiArrays", "load_busi",
    "read_keep_list", "write_keep_list", "cache_path",
]

#: PNG modes accepted for images and for masks (everything the BUSI releases contain).
IMAGE_MODES: tuple[str, ...] = ("1", "L", "RGB", "RGBA")
MASK_MODES: tuple[str, ...] = ("1", "L", "RGB", "RGBA")
#: The published Curated BUSI v1 keep-list (450 images), see resources/README.md.
#: Images per class in the public BUSI release (Al-Dhabyani et al., 2020), 780 in all; the data
#: tests check them against the folder.
RELEASE_COUNTS: dict[str, int] = {"benign": 437, "malignant": 210, "normal": 133}
PUBLISHED_KEEP_LIST: Path = Path(__file__).resolve().parent / "resources" / "mapping_curated_BUSI.csv"
#: Bump when the decoding/resizing changes, so old caches are not reused.
_CACHE_VERSION = 1
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_KEEP_HEADER = "class;id"


class DataError(ValueError):
    """Bad input data: the message is one line naming the file and what was expected."""


# ----------------------------------------------------------------------------- indexing

def _resolve_dir(data_dir) -> Path:
    try:
        return core.data_dir(data_dir)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None


def index_busi(data_dir=None):
    """Index the raw BUSI folder as a table, one row per image.

    Rows are sorted by class (label order) then id. Hidden entries and plain files beside the
    class folders (SOURCE.md) are ignored.

    Args:
        data_dir: the raw BUSI folder holding ``benign/``, ``malignant/`` and ``normal/``; None:
            ``$MTBC_DATA``, else ``../shared/data/BUSI`` beside the repository (:func:`mtbc_lib.core.data_dir`).

    Returns:
        A ``pandas.DataFrame`` with columns ``class`` (str), ``id`` (int), ``label`` (int, index into
        ``CLASSES``), ``name`` (str, e.g. ``"benign (42)"``), ``image`` (Path) and ``masks`` (tuple of
        Paths: ``_mask``, ``_mask_1``, ...).

    Raises:
        DataError: as :func:`scan_busi`.
    """
    import pandas as pd

    return pd.DataFrame(scan_busi(data_dir))


def scan_busi(data_dir=None) -> dict[str, list]:
    """:func:`index_busi`'s columns as lists, without importing pandas.

    Args:
        data_dir: the raw BUSI folder; None: ``$MTBC_DATA``, else ``../shared/data/BUSI`` beside the
            repository.

    Returns:
        A dict of equal-length lists keyed ``class``, ``id``, ``label``, ``name``, ``image`` and
        ``masks`` (the columns of :func:`index_busi`, in its row order).

    Raises:
        DataError: the folder does not exist; a folder other than the three class folders; a class
            folder missing or holding no ``<class> (N).png`` image; a file named neither
            ``<class> (N).png`` nor ``<class> (N)_mask[_K].png``; two images with one id; a mask
            without an image or an image without a mask.
    """
    root = _resolve_dir(data_dir)
    expected = ", ".join(f"{c}/" for c in CLASSES)
    subdirs = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    for name in sorted(subdirs):
        if name not in CLASSES:
            raise DataError(f"{subdirs[name]}: unknown class folder; expected only {expected} "
                            f"in the BUSI data folder {root}")
    rows = []
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        if cls not in subdirs:
            raise DataError(f"{folder}: class folder missing; expected {expected} in {root}")
        img_re = re.compile(rf"{re.escape(cls)} \((\d+)\)\.png")
        mask_re = re.compile(rf"{re.escape(cls)} \((\d+)\)_mask(?:_(\d+))?\.png")
        images: dict[int, Path] = {}
        masks: dict[int, list[tuple[int, Path]]] = {}
        for f in sorted(folder.iterdir()):
            if f.name.startswith("."):
                continue
            if m := img_re.fullmatch(f.name):
                if int(m[1]) in images:
                    raise DataError(f"{f}: same id as {images[int(m[1])].name}; expected one image per id")
                images[int(m[1])] = f
            elif m := mask_re.fullmatch(f.name):
                masks.setdefault(int(m[1]), []).append((int(m[2] or 0), f))
            else:
                raise DataError(f"{f}: unexpected file; expected '{cls} (N).png' or "
                                f"'{cls} (N)_mask[_K].png' in {folder}")
        if not images:
            raise DataError(f"{folder}: class folder holds no '{cls} (N).png' image")
        for i in sorted(set(masks) - set(images)):
            raise DataError(f"{masks[i][0][1]}: mask without an image; expected {folder / f'{cls} ({i}).png'}")
        for i in sorted(images):
            if i not in masks:
                raise DataError(f"{images[i]}: image without a mask; expected {folder / f'{cls} ({i})_mask.png'}")
            rows.append({"class": cls, "id": i, "label": label, "name": f"{cls} ({i})",
                         "image": images[i], "masks": tuple(p for _, p in sorted(masks[i]))})
    return {k: [r[k] for r in rows] for k in ("class", "id", "label", "name", "image", "masks")}


# ----------------------------------------------------------------------------- decoding

def _open_png(path, modes: Sequence[str], what: str) -> tuple[Image.Image, bytes]:
    """A PNG's header (Pillow, not decoded: mode and size) and its bytes; its mode checked."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if data[:8] != _PNG_MAGIC:
        raise DataError(f"{path}: not a PNG file (no PNG signature); expected a PNG {what}")
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any header failure is bad input
        _corrupt(path, what, exc)
    if im.mode not in modes:
        raise DataError(f"{path}: {what} has PNG mode {im.mode!r}; expected one of {', '.join(modes)}")
    return im, data


def _corrupt(path, what: str, reason) -> NoReturn:
    msg = " ".join(str(reason).split()) or type(reason).__name__
    raise DataError(f"{path}: PNG {what} cannot be decoded, truncated or corrupt ({msg})") from None


#: Whether the optional Wuffs decoder (package ``pywuffs``) is installed.
_HAS_WUFFS = importlib.util.find_spec("pywuffs") is not None


@lru_cache(maxsize=None)
def _decoder(mode: str):
    """A Wuffs PNG decoder (8 and 16-bit PNGs; the same pixels as Pillow) giving 8-bit
    grey (``mode`` "1", "L"), RGB or RGBA (not premultiplied); checksums verified."""
    import pywuffs
    from pywuffs import aux

    cfg = aux.ImageDecoderConfig()
    cfg.enabled_decoders = [pywuffs.ImageDecoderType.PNG]
    cfg.pixel_format = {"RGB": pywuffs.PixelFormat.RGB,
                        "RGBA": pywuffs.PixelFormat.RGBA_NONPREMUL}.get(mode, pywuffs.PixelFormat.Y)
    cfg.quirks = {pywuffs.ImageDecoderQuirks.IGNORE_CHECKSUM: 0}
    return aux.ImageDecoder(cfg)


def _pixels(path, modes: Sequence[str], what: str) -> tuple[np.ndarray, str]:
    """A PNG fully decoded (so truncation and corruption show up here): (H, W) uint8 for
    modes "1" and "L", (H, W, 3 or 4) for RGB(A); and its mode."""
    im, data = _open_png(path, modes, what)
    # Pillow without pywuffs, for bit depths 1, 2 and 4 (most BUSI masks: it unpacks these 5x
    # faster) and for a tRNS chunk (Wuffs would make that colour transparent black; Pillow ignores it)
    if not _HAS_WUFFS or data[24] < 8 or "transparency" in im.info:
        try:
            im.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input
            _corrupt(path, what, exc)
        px = np.array(im)  # a writable copy
        return (px.view(np.uint8) if im.mode == "1" else px), im.mode  # "1": bools holding 0/255
    res = _decoder(im.mode).decode(data)
    if res.error_message:
        _corrupt(path, what, res.error_message)
    px = res.pixbuf
    return (px[..., 0] if px.shape[2] == 1 else px), im.mode


def read_image(path) -> np.ndarray:
    """Read a PNG image as grey ``(H, W) uint8``.

    RGB and RGBA pixels become their luma as Pillow's ``convert("L")`` computes it (alpha ignored);
    mode "1" gives 0/255 (see the module docstring).

    Args:
        path: the PNG file (str or path-like); modes :data:`IMAGE_MODES`.

    Returns:
        The grey image, ``(H, W) uint8``.

    Raises:
        DataError: the file cannot be read, is not a PNG, has a mode outside :data:`IMAGE_MODES`,
            or is truncated or corrupt.
    """
    px, _ = _pixels(path, IMAGE_MODES, "image")
    if px.ndim == 2:
        return px
    rgb = px[..., :3].astype(np.uint32)  # Pillow's convert("L"), in its fixed point
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """The source index of each of ``n_out`` samples of ``n_in`` by Pillow's NEAREST resize
    (its running sum of the step, which rounds exact halves down or up as Pillow does)."""
    step = n_in / n_out
    return np.add.accumulate(np.r_[step * 0.5, np.full(n_out - 1, step)]).astype(np.intp)


def read_mask(paths, shape: tuple[int, int] | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read the union of one or more mask PNGs as ``(H, W) bool``.

    A pixel is lesion when any colour channel is non-zero (for RGBA, and alpha is non-zero).

    Args:
        paths: one mask file, or a sequence of them (all of one size); modes :data:`MASK_MODES`.
        shape: ``(H, W)`` the masks must have (their image's); None: not checked.
        size: ``(width, height)`` to sample the union at by nearest pixel (the pixels of Pillow's
            NEAREST resize, taken before the channels are combined); None: the files' own size.

    Returns:
        The union of the masks, ``(H, W) bool`` (``(height, width)`` of ``size`` when given).

    Raises:
        DataError: no path given; a file cannot be read, is not a PNG, has a mode outside
            :data:`MASK_MODES` or is truncated or corrupt; a mask's size differs from ``shape`` or
            from the first mask's.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise DataError("read_mask: no mask file given; expected at least one path")
    out = first = None
    for p in paths:
        px, mode = _pixels(p, MASK_MODES, "mask")
        h, w = px.shape[:2]
        if shape is not None and (h, w) != tuple(shape):
            raise DataError(f"{p}: mask is {w}x{h} px but its image is {shape[1]}x{shape[0]}; "
                            "expected the same size")
        if first is None:
            first = (h, w)
        elif (h, w) != first:
            raise DataError(f"{p}: mask is {w}x{h} px but {paths[0].name} is "
                            f"{first[1]}x{first[0]}; expected masks of one image to have the same size")
        if size is not None:
            px = px[_nearest(h, size[1])][:, _nearest(w, size[0])]
        if px.ndim == 3:  # any channel set (.any(axis=2) is 20x slower); RGBA: transparent = background
            px = ((px[..., 0] | px[..., 1] | px[..., 2]) > 0) & ((px[..., 3] > 0) if mode == "RGBA" else True)
        out = px > 0 if out is None else out | (px > 0)
    return out


def _load_one(image: Path, masks: tuple[Path, ...], size: int):
    """Worker: decode, check and resize one image and its masks.
    Returns (image (S,S) uint8, mask (S,S) bool, original (H, W))."""
    img = read_image(image)
    img_s = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))
    return img_s, read_mask(masks, img.shape, (size, size)), img.shape


# ----------------------------------------------------------------------------- arrays

@dataclass
class BusiArrays:
    """The dataset as arrays, one entry per image (N images, S = size).

    Attributes:
        images: ``(N, S, S) uint8`` grey images.
        masks: ``(N, S, S) bool``, the union of each image's mask files.
        labels: ``(N,) int64``, index into ``CLASSES``.
        classes: ``(N,) str`` class names.
        ids: ``(N,) int64``, the N in ``"<class> (N).png"``.
        names: list of N ``"<class> (N)"`` strings.
        orig_sizes: ``(N, 2) int64``, the original ``(height, width)`` in pixels.

    Raises:
        ValueError: on construction, when a field's length differs from ``len(labels)``.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    ids: np.ndarray
    names: list[str]
    orig_sizes: np.ndarray

    def __post_init__(self):
        n = len(self.labels)
        for f in fields(self):
            if len(getattr(self, f.name)) != n:
                raise ValueError(f"BusiArrays.{f.name} has {len(getattr(self, f.name))} entries; expected {n}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def keys(self) -> list[tuple[str, int]]:
        """The keep-list key of each image.

        Returns:
            A list of N ``(class, id)`` pairs (str, int), in row order.
        """
        return [(str(c), int(i)) for c, i in zip(self.classes, self.ids)]

    def subset(self, idx) -> "BusiArrays":
        """A copy holding the rows ``idx``.

        Args:
            idx: integer indices, or a boolean mask of length N.

        Returns:
            A new :class:`BusiArrays` with the selected rows, in the order of ``idx``.

        Raises:
            ValueError: ``idx`` is a boolean mask whose shape is not ``(N,)``.
        """
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"subset: boolean mask has shape {idx.shape}; expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        return BusiArrays(images=self.images[idx], masks=self.masks[idx], labels=self.labels[idx],
                          classes=self.classes[idx], ids=self.ids[idx],
                          names=[self.names[i] for i in idx], orig_sizes=self.orig_sizes[idx])


def _cache_key(index, size: int) -> str:
    """Digest of the decoding settings and every file's name, size and mtime."""
    h = hashlib.sha256(f"busi-v{_CACHE_VERSION};size={size};box;nearest;luma\n".encode())
    for img, masks in zip(index["image"], index["masks"]):
        for p in (img, *masks):
            st = p.stat()
            h.update(f"{p.parent.name}/{p.name};{st.st_size};{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _save_npz(path: Path, arrays: BusiArrays) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as fh:  # np.savez would append .npz to the temporary path
            np.savez(fh, images=arrays.images, masks=arrays.masks, labels=arrays.labels,
                     classes=arrays.classes.astype(str), ids=arrays.ids,
                     names=np.asarray(arrays.names, dtype=str), orig_sizes=arrays.orig_sizes)

    atomic_write(path, write)


def _load_npz(path: Path) -> BusiArrays | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return BusiArrays(images=z["images"], masks=z["masks"], labels=z["labels"],
                              classes=z["classes"], ids=z["ids"], names=[str(s) for s in z["names"]],
                              orig_sizes=z["orig_sizes"])
    except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt, not fatal
        warnings.warn(f"ignoring unreadable cache file {path} ({exc}); rebuilding it", stacklevel=3)
        return None


def cache_path(data_dir=None, size: int = 128, index=None) -> Path:
    """The cache file :func:`load_busi` uses for this data folder and size.

    The name holds the size and a digest of the decoding settings and of every file's name, size and
    mtime; the folder is ``core.cache_dir()``.

    Args:
        data_dir: the raw BUSI folder; None: the default (:func:`mtbc_lib.core.data_dir`). Unused
            when ``index`` is given.
        size: side of the square arrays in pixels.
        index: the folder's :func:`index_busi` table; None: indexed here.

    Returns:
        The path of the ``.npz`` cache file (it may not exist yet).

    Raises:
        DataError: as :func:`index_busi`, when the folder is indexed here.
    """
    index = index_busi(data_dir) if index is None else index
    return core.cache_dir() / f"busi_{size}px_{_cache_key(index, size)}.npz"


def _decode_all(index, size: int, workers: int, progress: bool) -> list:
    """:func:`_load_one` of every row of ``index``, in order, on ``workers`` processes (in
    this process when <= 1), with a text bar (also readable in the static book)."""
    from tqdm import tqdm

    args = (list(index["image"]), list(index["masks"]), [size] * len(index))
    bar = dict(total=len(index), desc=f"decoding BUSI PNGs ({size}px)", unit="img", disable=not progress)
    if (workers or 0) <= 1 or len(index) <= 1:
        return list(tqdm((_load_one(*a) for a in zip(*args)), **bar))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            return list(tqdm(pool.map(_load_one, *args, chunksize=8), **bar))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def load_busi(data_dir=None, size: int = 128, cache: bool = True, progress: bool = True,
              workers: int = 2) -> BusiArrays:
    """Load all BUSI images and masks resized to ``size x size``, in :func:`index_busi` order.

    Images are resized by area averaging, masks by nearest neighbour (see the module docstring).
    Decoded arrays are cached as an ``.npz`` in ``core.cache_dir()`` (:func:`cache_path`: keyed by
    size and a digest of the files' names, sizes and mtimes, written atomically), so a second call
    reads no PNG; an unreadable cache file is warned about and rebuilt. Nothing is written unless
    every file loaded.

    Args:
        data_dir: the raw BUSI folder; None: the default (:func:`mtbc_lib.core.data_dir`).
        size: side of the square arrays in pixels (a positive integer).
        cache: whether to read and write the cache file.
        progress: whether to show a text progress bar while decoding.
        workers: processes decoding in parallel; 0 or 1: decode in this process.

    Returns:
        The dataset as :class:`BusiArrays` (``images`` ``(N, size, size) uint8``, ``masks``
        ``(N, size, size) bool``).

    Raises:
        ValueError: ``size`` is not a positive integer.
        DataError: any problem with the folder or a file (see :func:`scan_busi`, :func:`read_image`,
            :func:`read_mask`).
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"load_busi: size={size!r}; expected a positive integer (e.g. 128)")
    index = index_busi(data_dir)
    path = cache_path(size=size, index=index) if cache else None
    if path is not None and path.exists():
        arrays = _load_npz(path)
        if arrays is not None and arrays.images.shape[1:] == (size, size) and arrays.names == list(index["name"]):
            return arrays

    results = _decode_all(index, size, workers, progress)
    arrays = BusiArrays(
        images=np.stack([r[0] for r in results]).astype(np.uint8),
        masks=np.stack([r[1] for r in results]).astype(bool),
        labels=index["label"].to_numpy(np.int64),
        classes=index["class"].to_numpy(str),
        ids=index["id"].to_numpy(np.int64),
        names=list(index["name"]),
        orig_sizes=np.asarray([r[2] for r in results], dtype=np.int64).reshape(len(results), 2),
    )
    if path is not None:
        _save_npz(path, arrays)
    return arrays


# ----------------------------------------------------------------------------- curation

def read_keep_list(path) -> set[tuple[str, int]]:
    """Read a ``class;id`` keep-list (the published Curated BUSI format).

    The file is UTF-8 (a BOM is allowed), starts with the header ``class;id``; blank lines are skipped.

    Args:
        path: the keep-list file (str or path-like).

    Returns:
        The set of ``(class, id)`` pairs it lists.

    Raises:
        DataError: the file cannot be read, is not UTF-8, is empty or has another header, or a
            line is not ``class;id`` with a class of ``CLASSES`` and a non-negative integer id.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read keep-list ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: keep-list is not UTF-8 text; expected lines 'class;id'") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != _KEEP_HEADER:
        raise DataError(f"{path}: keep-list header is {lines[0][:40]!r} ; expected '{_KEEP_HEADER}'"
                        if lines else f"{path}: keep-list is empty; expected header '{_KEEP_HEADER}'")
    pairs: set[tuple[str, int]] = set()
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.strip().split(";")
        if len(parts) != 2 or parts[0] not in CLASSES or not parts[1].isdigit():
            raise DataError(f"{path}: line {no} is {line[:40]!r}; expected 'class;id' with class in "
                            f"{', '.join(CLASSES)} and a positive integer id")
        pairs.add((parts[0], int(parts[1])))
    return pairs


def write_keep_list(pairs: Iterable[tuple[str, int]], path) -> None:
    """Write pairs as a keep-list in the published format, atomically.

    Header ``class;id``, rows sorted by class (label order) then id, duplicates dropped, CRLF line
    endings, no newline after the last line. Writing the published list's pairs reproduces that file
    byte for byte.

    Args:
        pairs: ``(class, id)`` pairs: class in ``CLASSES``, id an integer >= 0.
        path: the file to write (str or path-like); its folder is created if missing.

    Returns:
        None.

    Raises:
        ValueError: a pair whose class is not in ``CLASSES`` or whose id is not an integer >= 0.
    """
    path = Path(path)
    clean = set()
    for c, i in pairs:
        if c not in CLASSES or int(i) != i or int(i) < 0:
            raise ValueError(f"write_keep_list: pair ({c!r}, {i!r}); expected (class in {CLASSES}, id >= 0)")
        clean.add((str(c), int(i)))
    rows = sorted(clean, key=lambda p: (CLASSES.index(p[0]), p[1]))
    data = "\r\n".join([_KEEP_HEADER] + [f"{c};{i}" for c, i in rows]).encode()
    atomic_write(path, lambda p: p.write_bytes(data))
