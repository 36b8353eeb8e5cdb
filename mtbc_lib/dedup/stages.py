"""The duplicate search's stages (:func:`mtbc_lib.dedup.search.find_groups` runs them in order).

1. :func:`mtbc_lib.dedup.decode.decode_all`: a pool of processes decodes every PNG once
   and computes, per image, its SSIM thumbnail, a 16x16 thumbnail, and up to ``keypoints`` scale-space blobs
   (difference of Gaussians on a copy rescaled to ``det_pixels`` pixels) with a band-pass
   8x8 descriptor each (about 25 kB an image; :mod:`mtbc_lib.dedup.cache` keeps them).
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
   the similarity matrix in blocks of rows and sorts only the matches above ``min_desc_corr``.
4. :func:`complete_groups`: every pair inside a same-scan group is scored (transforms
   composed along the group's edges), with the IoU of the two masks.
5. :func:`lesion_scores`: every scored pair outside one same-scan group, on the detection
   copies (no full image needed): the pair's transform refined on blurred copies, then
   SSIM of the overlap at ``lesion_size`` px.

Stages 1, 3 and 5 run on one :class:`mtbc_lib.dedup.decode.Workers` pool (3: the blocks of the matching and the
Lucas-Kanade refinements, :func:`align_many`; 5: the refinements), one BLAS thread per
process. ``cfg`` is a :class:`mtbc_lib.dedup.search.DedupConfig`; the geometry is
:mod:`mtbc_lib.dedup.registration`'s.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mtbc_lib.dedup import registration as reg
from mtbc_lib.dedup.decode import RESAMPLE, Workers

__all__ = ["aligned_thumbs", "plain_candidates", "match_descriptors", "keypoint_pairs", "components",
           "numbered_components", "ssim_of", "complete_groups", "lesion_scores", "align_many"]


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


_BLOCK = 1024  # rows of the descriptor similarity matrix per worker job


def _match_block(desc: np.ndarray, owner: np.ndarray, cut: float):
    """Worker: the matches (row, column, correlation) >= ``cut`` of the first ``_BLOCK``
    descriptors with every descriptor after them (``desc``, ``owner``: from the block's
    first row on); descriptors of one image (owner is sorted) do not match."""
    sim = desc[:_BLOCK] @ desc.T
    k = len(sim)
    b = np.searchsorted(owner, owner[k - 1], "right")
    sim[:, :b][owner[:k, None] >= owner[None, :b]] = -2.0  # same image or lower triangle
    hit = np.flatnonzero(sim.ravel() >= cut)
    r, c = np.divmod(hit, sim.shape[1])
    return r, c, sim.ravel()[hit]


def match_descriptors(prep: list[dict], cfg, workers: Workers):
    """Start matching every descriptor with every other image's: the pairs correlating >=
    ``min_desc_corr``, from blocks of rows of the upper triangle of the similarity matrix
    (it is symmetric) on ``workers``, which go on while the caller does other work. Returns
    what :func:`keypoint_pairs` takes."""
    desc = np.ascontiguousarray(np.concatenate([p["desc"] for p in prep]), dtype=np.float32)
    owner = np.concatenate([np.full(len(p["kp"]), k) for k, p in enumerate(prep)])
    starts = range(0, len(desc), _BLOCK)
    return starts, workers.map(_match_block, [desc[a:] for a in starts], [owner[a:] for a in starts],
                               [cfg.min_desc_corr] * len(starts), chunksize=1)


def keypoint_pairs(prep: list[dict], cfg, matched) -> list[tuple[int, int, int, tuple]]:
    """Image pairs (i < j) with >= min_inliers keypoint matches agreeing on one
    similarity transform: (i, j, inliers, transform j -> i in detection pixels).
    ``matched``: what :func:`match_descriptors` returned."""
    kp = np.concatenate([p["kp"] for p in prep])
    owner = np.concatenate([np.full(len(p["kp"]), k) for k, p in enumerate(prep)])
    n = len(kp)
    k = min(cfg.neighbours, n - 1)
    starts, found = matched
    found = list(found)
    if n < 2 or k < 1:
        return []
    r = np.concatenate([f[0] + a for f, a in zip(found, starts)])
    c = np.concatenate([f[1] + a for f, a in zip(found, starts)])
    v = np.concatenate([f[2] for f in found])
    r, c, v = np.r_[r, c], np.r_[c, r], np.r_[v, v]  # both directions
    # each descriptor keeps its k nearest (the torch.topk of earlier versions, then the cut):
    # the k best of those above the cut, ties to the lower column. The order of
    # np.lexsort((c, -v, r)) from two stable sorts, the second on one int64 key: the row, then
    # the float32 bits of v mapped to an order-preserving integer, reversed (6x faster)
    bits = v.astype(np.float32).view(np.int32).astype(np.int64)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # negative floats: their bits count the wrong way
    order = np.argsort(c, kind="stable")
    order = order[np.argsort((r[order].astype(np.int64) << 32) + (2 ** 31 - 1 - bits[order]), kind="stable")]
    r, c = r[order], c[order]
    keep = np.arange(len(r)) - np.searchsorted(r, r) < k
    a_, b_ = r[keep], c[keep]
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
    """The connected components of a graph.

    Args:
        n: number of nodes (``0 .. n - 1``).
        i: first ends of the edges (node numbers).
        j: second ends, one per entry of ``i``.

    Returns:
        ``(n,)`` integer component labels ``0 .. k - 1``; two nodes share a label exactly when the
        edges connect them.
    """
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
    """Worker: ``reg.align`` of one pair (a, b, p, iters, blur): a and b first blurred
    with a Gaussian of sd ``blur`` when it is not 0."""
    a, b, p, iters, blur = job
    if blur:
        a, b = reg.blur(a, blur), reg.blur(b, blur)
    return tuple(reg.align(a, b, p, iters=iters))


def align_many(jobs: list[tuple], workers: Workers, progress: bool = False, desc: str = ""):
    """:func:`_refine_job` of every job on ``workers``: an iterator of the results in order,
    as they come (the caller uses each while the workers refine the next; a tqdm bar when
    ``progress``)."""
    from tqdm import tqdm

    done = workers.map(_refine_job, jobs, chunksize=16)
    return iter(tqdm(done, total=len(jobs), desc=desc, unit="pair", disable=not progress))


def lesion_scores(scored: dict, group_of: np.ndarray, prep: list[dict], cfg,
                   known: dict | None = None, workers: Workers | None = None) -> None:
    """``lesion_ssim`` of every scored pair outside one same-scan group (in place): the
    pair's transform (the aligned one, else the whole-image map) refined by Lucas-Kanade on
    blurred detection copies, then SSIM of the overlap at ``lesion_size`` px."""
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
        jobs.append((da, db, p, 6, 1.5))
    todo = []
    for (a, b), p in zip(keys, align_many(jobs, workers or Workers(1))):
        th = aligned_thumbs(prep[a]["det"], prep[b]["det"], p, cfg,
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

