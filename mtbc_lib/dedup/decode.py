"""The duplicate search's first pass over the PNGs (:mod:`mtbc_lib.dedup.stages` has the
stages after it): a :class:`Workers` pool of processes, shared by every parallel stage;
:func:`decode_all`, which decodes every image once and computes what the search needs
(:func:`prepare`; :mod:`mtbc_lib.dedup.cache` keeps it); and :class:`Images`, the full
images by row."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mtbc_lib.dedup import registration as reg

__all__ = ["RESAMPLE", "Workers", "prepare", "decode_all", "Images"]

#: Resize filters for the SSIM thumbnails (Pillow).
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX,
            "nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}


_SHARED: np.ndarray | None = None  # see Workers.shared


class Workers:
    """A pool of ``n`` processes with one BLAS thread each (the refinements' matrix products
    are tiny: more threads only add waiting), shared by every parallel stage and started on
    first use (a warm run starts none); ``n`` <= 1: everything runs in this process. The
    workers fork, so they inherit the modules imported before and the memory of
    :meth:`shared`."""

    def __init__(self, n: int):
        self.n = n
        self._pool = None

    def shared(self, nbytes: int) -> np.ndarray | None:
        """``nbytes`` of memory this process and the workers share (an anonymous shared
        mapping, inherited when they fork), as a uint8 array that the workers see as
        ``_SHARED``: what they write there needs no copy through a pipe. None when the
        pool has already started."""
        global _SHARED
        if self._pool is not None:
            return None
        import mmap

        _SHARED = np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), np.uint8)
        return _SHARED

    def map(self, func, *iterables, chunksize: int = 8):
        """``map(func, *iterables)``: an iterator of the results in order, as they come. On
        the pool every call is queued at once, so the work goes on while the caller does
        something else; with ``n`` <= 1 each runs when the iterator reaches it."""
        from threadpoolctl import threadpool_limits

        iterables = [list(x) for x in iterables]
        if not iterables[0]:
            return iter(())  # nothing to do: no pool started for it
        if self.n <= 1:
            def serial():
                with threadpool_limits(1):
                    yield from map(func, *iterables)
            return serial()
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            self._pool = ProcessPoolExecutor(max_workers=self.n, mp_context=get_context("fork"),
                                             initializer=threadpool_limits, initargs=(1,))
        return self._pool.map(func, *iterables, chunksize=chunksize)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _SHARED
        _SHARED = None
        if self._pool is not None:  # on an error: the queued work is dropped, not finished
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def prepare(image_path, mask_paths, cfg, slot: tuple[int, int] | None = None) -> dict:
    """Worker: decode one image and its masks, compute everything the search needs. The
    image itself is returned, or written row by row to ``_SHARED`` at ``slot`` (offset,
    bytes) when it has that size."""
    from mtbc_lib.data.busi import read_image, read_mask

    img = read_image(image_path)
    h, w = img.shape
    pil = Image.fromarray(img)
    thumb = np.asarray(pil.resize((cfg.size, cfg.size), RESAMPLE[cfg.resample]))
    small = np.asarray(Image.fromarray(thumb).resize((16, 16), Image.Resampling.BOX), dtype=np.float32)
    f = (cfg.det_pixels / (h * w)) ** 0.5  # small images are enlarged, so blobs look alike
    dh, dw = max(16, round(h * f)), max(16, round(w * f))
    det = np.asarray(pil.resize((dw, dh), Image.Resampling.BOX if f < 1 else Image.Resampling.BILINEAR))
    det_mask = read_mask(mask_paths, (h, w), (dw, dh))
    kp, desc = reg.keypoints(det, cfg.keypoints) if cfg.extended else (np.zeros((0, 3), np.float32),
                                                                        np.zeros((0, reg.DESC * reg.DESC), np.float32))
    out = {"shape": (h, w), "thumb": thumb, "small": small.ravel(), "det": det, "det_mask": det_mask,
           "scale": (dh / h, dw / w), "kp": kp, "desc": desc}
    if slot is None or _SHARED is None or slot[1] != img.size:
        out["image"] = img
    else:
        _SHARED[slot[0]:slot[0] + img.size] = img.ravel()
    return out


def _png_size(path) -> tuple[int, int]:
    """(height, width) from a PNG's header; (0, 0) when it cannot be read (the decoding
    will say why)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # noqa: BLE001 - reported by read_image
        return 0, 0


def decode_all(index, cfg, workers: Workers, progress: bool, meanwhile=None) -> list[dict]:
    """:func:`prepare` of every image (``index``: columns ``image``, ``masks``) on
    ``workers``; the full images come back through memory shared with them, not through
    their pipes (about 250 MB on BUSI). ``meanwhile()``, if given, is called once the work
    is queued: what this process would otherwise do later, alone, runs while they decode."""
    from tqdm import tqdm

    n = len(index["image"])
    sizes = [_png_size(p) for p in index["image"]]
    offsets = np.cumsum([0] + [h * w for h, w in sizes])
    arena = workers.shared(int(offsets[-1]))
    slots = [None if arena is None else (int(o), h * w) for o, (h, w) in zip(offsets, sizes)]
    done = workers.map(prepare, index["image"], index["masks"], [cfg] * n, slots)
    if meanwhile is not None:
        meanwhile()
    prep = list(tqdm(done, total=n, desc="audit: decoding images", unit="img", disable=not progress))
    for p, slot in zip(prep, slots):
        if "image" not in p:
            p["image"] = arena[slot[0]:slot[0] + slot[1]].reshape(p["shape"])
    return prep


class Images:
    """Full-resolution images by row: those decoded with the features, else read on first
    use (a warm run reads only the images of pairs it has not verified before)."""

    def __init__(self, index, prep: list[dict]):
        self._paths = list(index["image"])
        self._have = {k: p.pop("image") for k, p in enumerate(prep) if "image" in p}

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self._have:
            from mtbc_lib.data.busi import read_image

            self._have[k] = read_image(self._paths[k])
        return self._have[k]
