"""The duplicate search's stages (:func:`mtbc_lib.dedup.find_groups` runs them in order).

1. :func:`decode_all`: a pool of processes decodes every PNG once and computes, per image,
   its SSIM thumbnail, a 16x16 thumbnail, and up to ``keypoints`` scale-space blobs
   (difference of Gaussians on a copy rescaled to ``det_pixels`` pixels) with a band-pass
   8x8 descriptor each (about 25 kB an image; :mod:`mtbc_lib.dedup_cache` keeps them).
2. :func:`plain_candidates`: pairs whose 16x16 thumbnails, less the mean thumbnail of the
   folder, correlate >= ``candidate_corr`` (all pairs when there are at most
   ``all_pairs_below`` of them); each is verified with the full SSIM at the setting. On
   BUSI every pair with SSIM >= 0.7 correlates >= 0.90, so the filter has a wide margin
   below the threshold; benchmarks/bench_dedup.py checks it against all pairs.
3. :func:`keypoint_pairs`: every descriptor is matched to its ``neighbours`` nearest
   descriptors of other images; pairs with >= ``min_inliers`` matches that agree on one
   similarity transform (scale + translation) are aligned (least squares, then a
   Lucas-Kanade refinement with a separate scale per axis) and verified with SSIM on the
   aligned overlap (:func:`aligned_thumbs`). The matching computes the upper triangle of
   the similarity matrix in blocks and sorts only the matches above ``min_desc_corr``.
4. :func:`complete_groups`: every pair inside a same-scan group is scored (transforms
   composed along the group's edges), with the IoU of the two masks.
5. :func:`lesion_scores`: every scored pair outside one same-scan group, on the detection
   copies (no full image needed): the pair's transform refined on blurred copies, then
   SSIM of the overlap at ``lesion_size`` px.

Stages 1, 3 and 5 run on one :class:`Workers` pool (3 and 5: the Lucas-Kanade refinements,
:func:`refine_many`), one BLAS thread per process. ``cfg`` is a :class:`mtbc_lib.dedup.DedupConfig`;
the geometry is :mod:`mtbc_lib.registration`'s.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mtbc_lib import registration as reg

__all__ = ["RESAMPLE", "Workers", "prepare", "aligned_thumbs", "decode_all", "plain_candidates", "keypoint_pairs",
           "components", "numbered_components", "ssim_of", "Images", "complete_groups", "lesion_scores", "refine_many"]

#: Resize filters for the SSIM thumbnails (Pillow).
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX,
            "nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}


class Workers:
    """A pool of ``n`` processes with one BLAS thread each (the refinements' matrix products
    are tiny: more threads only add waiting), shared by every parallel stage and started on
    first use (a warm run starts none); ``n`` <= 1: everything runs in this process. The
    modules the workers need are imported before they fork, so that each inherits them
    rather than importing them itself (scipy.ndimage: about 0.35 s a process)."""

    def __init__(self, n: int):
        self.n = n
        self._pool = None

    def map(self, func, *iterables, chunksize: int = 8):
        """``map(func, *iterables)`` in order, lazily (results as they come)."""
        from threadpoolctl import threadpool_limits

        if self.n <= 1:
            with threadpool_limits(1):
                yield from map(func, *iterables)
            return
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            import scipy.ndimage  # noqa: F401  (see class doc)

            self._pool = ProcessPoolExecutor(max_workers=self.n, initializer=threadpool_limits, initargs=(1,))
        yield from self._pool.map(func, *iterables, chunksize=chunksize)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:  # on an error: the queued work is dropped, not finished
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def prepare(image_path, mask_paths, cfg) -> dict:
    """Worker: decode one image and its masks, compute everything the search needs."""
    from mtbc_lib.data import DataError, read_image, read_mask

    img = read_image(image_path)
    mask = read_mask(mask_paths)
    if mask.shape != img.shape:
        raise DataError(f"{mask_paths[0]}: mask is {mask.shape[1]}x{mask.shape[0]} px but its image is "
                        f"{img.shape[1]}x{img.shape[0]}; expected the same size")
    h, w = img.shape
    pil = Image.fromarray(img)
    thumb = np.asarray(pil.resize((cfg.size, cfg.size), RESAMPLE[cfg.resample]))
    small = np.asarray(Image.fromarray(thumb).resize((16, 16), Image.Resampling.BOX), dtype=np.float32)
    f = (cfg.det_pixels / (h * w)) ** 0.5  # small images are enlarged, so blobs look alike
    dh, dw = max(16, round(h * f)), max(16, round(w * f))
    det = np.asarray(pil.resize((dw, dh), Image.Resampling.BOX if f < 1 else Image.Resampling.BILINEAR),
                     dtype=np.float32)
    det_mask = np.asarray(Image.fromarray(mask).resize((dw, dh), Image.Resampling.NEAREST))
    kp, desc = reg.keypoints(det, cfg.keypoints) if cfg.extended else (np.zeros((0, 3), np.float32),
                                                                        np.zeros((0, reg.DESC * reg.DESC), np.float32))
    return {"image": img, "shape": (h, w), "thumb": thumb, "small": small.ravel(), "det": det, "det_mask": det_mask,
            "scale": (dh / h, dw / w), "kp": kp, "desc": desc}


def aligned_thumbs(img_i, img_j, p, cfg, size: int | None = None):
    """The common field of view of images i and j (transform p, j -> i) cut out of each
    and resized to SSIM thumbnails (``size``, default ``cfg.size``), and the share of the
    smaller image it covers; None when they hardly overlap."""
    boxes = reg.overlap_boxes(img_i.shape, img_j.shape, p)
    if boxes is None:
        return None
    f = RESAMPLE[cfg.resample]
    size = size or cfg.size
    ti = np.asarray(Image.fromarray(img_i).resize((size, size), f, box=boxes[0]))
    tj = np.asarray(Image.fromarray(img_j).resize((size, size), f, box=boxes[1]))
    bi, bj = boxes
    cover = (bi[2] - bi[0]) * (bi[3] - bi[1]) / min(img_i.size, img_j.size * p[0] * p[1])
    return ti, tj, float(min(cover, 1.0))


def decode_all(index, cfg, workers: Workers, progress: bool) -> list[dict]:
    from tqdm import tqdm

    n = len(index)
    done = workers.map(prepare, index["image"], index["masks"], [cfg] * n)
    return list(tqdm(done, total=n, desc="audit: decoding images", unit="img", disable=not progress))


def plain_candidates(small: np.ndarray, cfg):
    """(i, j) pairs, i < j, worth a full SSIM (see module doc)."""
    n = len(small)
    i, j = np.triu_indices(n, 1)
    if len(i) <= cfg.all_pairs_below:
        return i, j
    x = small - small.mean(axis=0, keepdims=True)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    corr = x @ x.T
    keep = corr[i, j] >= cfg.candidate_corr
    return i[keep], j[keep]


def keypoint_pairs(prep: list[dict], cfg) -> list[tuple[int, int, int, tuple]]:
    """Image pairs (i < j) with >= min_inliers keypoint matches agreeing on one
    similarity transform: (i, j, inliers, transform j -> i in detection pixels)."""
    kp = np.concatenate([p["kp"] for p in prep])
    desc = np.ascontiguousarray(np.concatenate([p["desc"] for p in prep]), dtype=np.float32)
    owner = np.concatenate([np.full(len(p["kp"]), k) for k, p in enumerate(prep)])
    n = len(desc)
    k = min(cfg.neighbours, n - 1)
    if n < 2 or k < 1:
        return []
    # every descriptor pair correlating >= min_desc_corr, from the upper triangle of the
    # similarity matrix only (it is symmetric), block by block; descriptors of one image
    # (owner is sorted) do not match
    rs, cs, vs = [], [], []
    for a in range(0, n, 2048):
        sim = desc[a:a + 2048] @ desc[a:].T
        b = np.searchsorted(owner, owner[min(n, a + 2048) - 1], "right") - a
        sim[:, :b][owner[a:a + 2048, None] >= owner[None, a:a + b]] = -2.0  # same image or lower triangle
        hit = np.flatnonzero(sim.ravel() >= cfg.min_desc_corr)
        r, c = np.divmod(hit, sim.shape[1])
        rs.append(r + a)
        cs.append(c + a)
        vs.append(sim.ravel()[hit])
    r, c, v = np.concatenate(rs), np.concatenate(cs), np.concatenate(vs)
    r, c, v = np.r_[r, c], np.r_[c, r], np.r_[v, v]  # both directions
    # each descriptor keeps its k nearest (the torch.topk of earlier versions, then the cut):
    # the k best of those above the cut
    order = np.lexsort((c, -v, r))
    r, c = r[order], c[order]
    keep = np.arange(len(r)) - np.searchsorted(r, r) < k
    rows, cols = [r[keep]], [c[keep]]
    a_, b_ = np.concatenate(rows), np.concatenate(cols)
    swap = owner[a_] > owner[b_]
    a_[swap], b_[swap] = b_[swap], a_[swap]
    key = np.unique(a_.astype(np.int64) * n + b_)
    a_, b_ = key // n, key % n
    pair = owner[a_].astype(np.int64) * len(prep) + owner[b_]
    order = np.argsort(pair, kind="stable")
    a_, b_, pair = a_[order], b_[order], pair[order]
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    ends = np.r_[starts[1:], len(pair)]
    out = []
    for s, e in zip(starts, ends):
        if e - s < cfg.min_inliers:
            continue
        ia, ib = a_[s:e], b_[s:e]
        n_in, fit = reg.fit_similarity(kp[ia, :2], kp[ib, :2], np.log(kp[ia, 2] / kp[ib, 2]))
        if n_in >= cfg.min_inliers:
            sc, ty, tx = fit
            out.append((int(owner[ia[0]]), int(owner[ib[0]]), n_in, (sc, sc, ty, tx)))
    return out


def components(n: int, i, j) -> np.ndarray:
    """Connected-component label (0..) of each of ``n`` nodes, given the edges (i, j)."""
    parent = np.arange(n)

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in zip(i, j):
        parent[root(a)] = root(b)
    return np.unique([root(k) for k in range(n)], return_inverse=True)[1].reshape(-1)


def ssim_of(pairs_of_thumbs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """SSIM of a list of (thumb, thumb) pairs, in one vectorised call."""
    if not pairs_of_thumbs:
        return np.zeros(0)
    stack = np.stack([t for pair in pairs_of_thumbs for t in pair])
    k = np.arange(len(pairs_of_thumbs))
    return reg.ssim_pairs(stack, 2 * k, 2 * k + 1)


class Images:
    """Full-resolution images by row: those decoded with the features, else read on first
    use (a warm run reads only the images of pairs it has not verified before)."""

    def __init__(self, index, prep: list[dict]):
        self._paths = list(index["image"])
        self._have = {k: p.pop("image") for k, p in enumerate(prep) if "image" in p}

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self._have:
            from mtbc_lib.data import read_image

            self._have[k] = read_image(self._paths[k])
        return self._have[k]


def numbered_components(n: int, edges) -> np.ndarray:
    """Component number (1.., in order of each component's first node) of every node of a
    component of >= 2 nodes, -1 for the others."""
    label = components(n, [a for a, _ in edges], [b for _, b in edges])
    sizes = np.bincount(label, minlength=n)
    out = np.full(n, -1)
    number: dict[int, int] = {}
    for k in range(n):
        if sizes[label[k]] >= 2:
            out[k] = number.setdefault(int(label[k]), len(number) + 1)
    return out


def _refine_job(job) -> tuple:
    """Worker: ``reg.refine`` of one pair (a, b, p, iters)."""
    a, b, p, iters = job
    return tuple(reg.refine(a, b, p, iters=iters))


def refine_many(jobs: list[tuple], workers: Workers, progress: bool = False, desc: str = "") -> list[tuple]:
    """:func:`_refine_job` of every job, in order, on ``workers`` (a tqdm bar when ``progress``)."""
    from tqdm import tqdm

    done = workers.map(_refine_job, jobs, chunksize=16)
    return list(tqdm(done, total=len(jobs), desc=desc, unit="pair", disable=not progress))


def lesion_scores(scored: dict, group_of: np.ndarray, prep: list[dict], cfg,
                   known: dict | None = None, workers: Workers | None = None) -> None:
    """``lesion_ssim`` of every scored pair outside one same-scan group (in place): the
    pair's transform (the aligned one, else the whole-image map) refined by Lucas-Kanade on
    blurred detection copies, then SSIM of the overlap at ``lesion_size`` px."""
    blurred: dict[int, np.ndarray] = {}

    def blur(k):  # once per image (a warm run blurs none)
        if k not in blurred:
            from scipy import ndimage as ndi

            blurred[k] = ndi.gaussian_filter(prep[k]["det"], 1.5)
        return blurred[k]

    keys, jobs = [], []
    for (a, b), r in scored.items():
        if group_of[a] > 0 and group_of[a] == group_of[b]:
            continue
        old = (known or {}).get((a, b), {})
        if "lesion_ssim" in old and all(old.get(k) == r.get(k) for k in ("sy", "sx", "ty", "tx")):
            r["lesion_ssim"] = old["lesion_ssim"]  # scored by an earlier run from the same transform
            continue
        da, db = prep[a]["det"], prep[b]["det"]
        if "sy" in r:
            p = reg.to_det((r["sy"], r["sx"], r["ty"], r["tx"]), prep[a]["scale"], prep[b]["scale"])
        else:
            p = reg.whole(da.shape, db.shape)
        keys.append((a, b))
        jobs.append((blur(a), blur(b), p, 6))
    todo = []
    for (a, b), p in zip(keys, refine_many(jobs, workers or Workers(1))):
        th = aligned_thumbs(prep[a]["det"].astype(np.uint8), prep[b]["det"].astype(np.uint8), p, cfg,
                            size=cfg.lesion_size)
        if th is not None:
            todo.append(((a, b), th))
    for (key, _), v in zip(todo, ssim_of([th[:2] for _, th in todo])):
        scored[key]["lesion_ssim"] = float(v)


def complete_groups(groups, edges, scored, transforms, prep, images, thumbs, cfg,
                     known: dict | None = None) -> None:
    """Score every pair inside a group (in place): whole-image SSIM, a transform (the
    direct alignment, else composed along same-scan edges), aligned SSIM (from ``known``,
    an earlier run's pairs, when it aligned the pair with the same transform) and mask IoU."""
    known = known or {}
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)

    def edge_map(a, b):  # transform b -> a along an edge (either order)
        if (a, b) in transforms:
            return transforms[(a, b)]
        if (b, a) in transforms:
            return reg.invert(transforms[(b, a)])
        return reg.whole(prep[a]["shape"], prep[b]["shape"])

    need_plain, need_aligned = [], []
    for m in groups:
        for a in m:  # breadth-first: transforms from every member to a
            maps, todo = {a: (1.0, 1.0, 0.0, 0.0)}, [a]
            while todo:
                u = todo.pop(0)
                for v in adj.get(u, []):
                    if v not in maps:
                        maps[v] = reg.compose(maps[u], edge_map(u, v))
                        todo.append(v)
            for b in (b for b in m if b > a):
                row = scored.setdefault((a, b), {})
                if "plain_ssim" not in row:
                    if "plain_ssim" in known.get((a, b), {}):
                        row["plain_ssim"] = known[(a, b)]["plain_ssim"]
                    else:
                        need_plain.append((a, b))
                p = transforms.get((a, b)) or maps[b]
                if "aligned_ssim" not in row and p != reg.whole(prep[a]["shape"], prep[b]["shape"]):
                    old = known.get((a, b), {})
                    if "aligned_ssim" in old and tuple(old.get(k) for k in ("sy", "sx", "ty", "tx")) == tuple(p):
                        row.update(aligned_ssim=old["aligned_ssim"], overlap=old["overlap"])
                    else:
                        th = aligned_thumbs(images[a], images[b], p, cfg)
                        if th is not None:
                            need_aligned.append((a, b, th))
                row.update({k: v for k, v in zip(("sy", "sx", "ty", "tx"), p) if k not in row})
                old = known.get((a, b), {})
                if "mask_iou" in old and tuple(old.get(k) for k in ("sy", "sx", "ty", "tx")) == tuple(p):
                    row["mask_iou"] = old["mask_iou"]  # an earlier run's, from the same transform
                else:
                    row["mask_iou"] = reg.mask_iou(prep[a]["det_mask"], prep[b]["det_mask"],
                                                   reg.to_det(p, prep[a]["scale"], prep[b]["scale"]))
    if need_plain:
        ii, jj = np.asarray(need_plain).T
        for (a, b), v in zip(need_plain, reg.ssim_pairs(thumbs, ii, jj)):
            scored[(a, b)]["plain_ssim"] = float(v)
    for (a, b, th), v in zip(need_aligned, ssim_of([x[2][:2] for x in need_aligned])):
        scored[(a, b)].update(aligned_ssim=float(v), overlap=th[2])

