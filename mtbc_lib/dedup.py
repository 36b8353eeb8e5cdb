"""Duplicate search in BUSI: groups of files that show the same scan, and groups of files
that show the same lesion.

Two images are *the same scan* when their SSIM is at least ``threshold`` with the paper's
setting (grey, both resized to ``size x size`` with ``resample``, scikit-image's SSIM:
7x7 uniform window, K1 = 0.01, K2 = 0.03, data range 255), computed

- ``paper``: on the whole images (what a plain SSIM search compares), or
- ``extended``: on their common field of view, for pairs related by a crop and/or a
  rescale: the overlap of the two images, once aligned, cut out of each and resized.

Groups are the connected components of the graph whose edges are same-scan pairs. A group
whose members carry different class labels is an *inconsistent annotation*.

Two images of one class show *the same lesion* (another frame or view of it: the content
shifted, rescaled or slightly rotated, the speckle different) when the SSIM of their aligned
overlap at a coarse ``lesion_size x lesion_size`` (speckle averages out, anatomy stays) is at
least ``lesion_threshold``; the alignment (keypoints when they matched, else the whole-image
map) is refined by Lucas-Kanade on blurred copies first. Lesion groups are the connected
components of the graph of same-scan and same-lesion pairs, so every same-scan group lies
inside one lesion group. They do not change the curation rules; they are the grouping a
split by lesion needs. Calibration (notebooks/dataset_audit.ipynb): pairs of different
classes (which cannot be one lesion, label conflicts aside) reach 0.73; same-class pairs
of different lesions (spiculated masses of different patients) reach 0.79; the frames of
one lesion connect at >= 0.82; the default 0.805 is the middle of that gap. Some frames of
one lesion score below it too (the score cannot tell them from look-alike lesions), and
pairs that no candidate filter proposes are never scored: lesion groups are a lower bound.

Calibration (notebooks/dataset_audit.ipynb): no code of the paper's search was released;
the published keep-list is the ground truth (its 330 removed images are every member of
their groups). Whole-image SSIM cannot reproduce it: with 32 to 128 px thumbnails and
nearest, bilinear or area filters, at every threshold, at least 26 images are decided
differently (crops of one scan score as low as 0.2 once stretched to a square, while
neighbouring frames of one cine loop score above 0.9). SSIM on the common field of view, 64x64
bilinear, reproduces it for every threshold in [0.915, 0.965] (the gap between the
closest different frames and the least similar copies); the default 0.94 is its middle.
With it the groups hold the 5 quadruplets, 22 triplets and 122 duplets of the published
list exactly, plus one duplet it missed (malignant 11 / 113, a crop rescaled by 0.83).

Search (fast, exact at the setting for the ``paper`` edges, see benchmarks/bench_dedup.py):

1. A pool of processes decodes every PNG once and computes, per image, its SSIM thumbnail,
   a 16x16 thumbnail, and up to ``keypoints`` scale-space blobs (difference of Gaussians on a
   copy rescaled to ``det_pixels`` pixels) with a band-pass 8x8 descriptor each. These
   features (about 25 kB an image) and, at the end, every verified pair are cached, keyed
   by the files' names, sizes and mtimes and the settings: a second run decodes no PNG,
   matches no keypoints and aligns no pair again (it reads a full image only for a pair it
   has not verified).
2. ``paper`` candidates: pairs whose 16x16 thumbnails, less the mean thumbnail of the
   folder, correlate >= ``candidate_corr`` (all pairs when there are at most
   ``all_pairs_below`` of them); each candidate is verified with the full SSIM at the
   setting. On BUSI every pair with SSIM >= 0.7 correlates >= 0.90, so the filter has a
   wide margin below the threshold; bench_dedup.py checks it against all pairs.
3. ``extended`` candidates: every descriptor is matched to its ``neighbours`` nearest
   descriptors of other images; pairs with >= ``min_inliers`` matches that agree on one
   similarity transform (scale + translation) are aligned (least squares, then a
   Lucas-Kanade refinement with a separate scale per axis) and verified with SSIM on the
   aligned overlap. The descriptor matching computes the upper triangle of the similarity
   matrix in blocks and sorts only the matches above ``min_desc_corr``.
4. ``lesion`` scores: every scored pair outside one same-scan group, on the detection
   copies (no full image needed): the pair's transform refined on blurred copies, then
   SSIM of the overlap at ``lesion_size`` px.

The image geometry (SSIM, keypoints, transforms) lives in :mod:`mtbc_lib.registration`
(its transforms ``(sy, sx, ty, tx)`` map pixel centres of image j to image i, here in
full-resolution pixels); the tables and figures that read a search's result are in
:mod:`mtbc_lib.audit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mtbc_lib import config
from mtbc_lib import registration as reg
from mtbc_lib.config import CLASSES, atomic_write

__all__ = ["RESAMPLE", "RULES", "DedupConfig", "AuditResult", "find_groups",
           "curated_keep", "keep_list", "write_audit", "duplicates_table", "summary", "components", "DUPLICATE_COLUMNS",
           "PAIR_COLUMNS", "LESION_COLUMNS"]

#: Resize filters for the SSIM thumbnails (Pillow).
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "area": Image.Resampling.BOX,
            "nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC}
#: Curation rules: "paper" drops every member of every group (as the published list does);
#: "keep-one" keeps the largest image (height x width; ties: smallest id) of each group
#: whose labels agree and drops every member of a group whose labels disagree.
RULES = ("paper", "keep-one")
#: Columns of duplicates.csv (one row per image in a multi-image same-scan group, then one per
#: image that shares only its lesion with other images: those have no ``group``).
DUPLICATE_COLUMNS = ["group", "class", "id", "file", "size", "method", "linked_by", "label_conflict",
                     "classes", "height", "width", "min_ssim", "max_ssim", "mask_iou_min", "keep_one",
                     "lesion_group"]
#: Columns of AuditResult.pairs.
PAIR_COLUMNS = ["i", "j", "name_i", "name_j", "plain_ssim", "aligned_ssim", "score", "method", "duplicate",
                "sy", "sx", "ty", "tx", "overlap", "inliers", "mask_iou", "group", "lesion_ssim",
                "same_lesion", "lesion_group"]
#: Columns of AuditResult.lesions (one row per image in a multi-image lesion group).
LESION_COLUMNS = ["lesion_group", "class", "id", "file", "lesion_size", "group", "classes",
                  "min_lesion_ssim", "row"]
_VERSION = 1  # bump when results change (cache key of keep_list)


@dataclass(frozen=True)
class DedupConfig:
    """Settings of the duplicate search (defaults: calibrated on the published list, see
    the module doc; the keypoint settings trade time for recall, and more generous ones
    find no other pair on BUSI, see benchmarks/bench_dedup.py)."""

    size: int = 64                 # side of the square thumbnails SSIM compares (paper setting)
    resample: str = "bilinear"     # their resize filter (key of RESAMPLE)
    threshold: float = 0.94        # SSIM >= threshold: same scan
    extended: bool = True          # also find crops / rescales (aligned-overlap SSIM)
    candidate_corr: float = 0.7    # paper candidates: correlation of centred 16x16 thumbnails >= this
    all_pairs_below: int = 20000   # fewer pairs than this: verify all of them (no filter)
    det_pixels: int = 12000        # keypoint detection copy: about this many pixels
    keypoints: int = 24            # strongest blobs kept per image
    neighbours: int = 8            # matches kept per descriptor (nearest over all images)
    min_desc_corr: float = 0.85    # descriptor correlation of a keypoint match
    min_inliers: int = 4           # matches agreeing on one transform to try an alignment
    lesion: bool = True            # also group frames of one lesion (coarse SSIM of the aligned overlap)
    lesion_size: int = 24          # side of the coarse thumbnails the lesion relation compares
    lesion_threshold: float = 0.805  # coarse aligned SSIM >= this (same class): same lesion

    def __post_init__(self):
        if self.resample not in RESAMPLE:
            raise ValueError(f"unknown resample {self.resample!r}; expected one of {', '.join(RESAMPLE)}")
        if not 8 <= self.size <= 1024:
            raise ValueError(f"size={self.size}; expected 8..1024 (the SSIM thumbnail side)")
        if not -1 <= self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold}; expected an SSIM value in [-1, 1]")
        if not -1 <= self.lesion_threshold <= 1:
            raise ValueError(f"lesion_threshold={self.lesion_threshold}; expected an SSIM value in [-1, 1]")
        if not 8 <= self.lesion_size <= 64:
            raise ValueError(f"lesion_size={self.lesion_size}; expected 8..64 (the coarse thumbnail side)")


@dataclass
class AuditResult:
    """What :func:`find_groups` found.

    index: one row per image (``data.index_busi`` columns plus ``height``, ``width``).
    pairs: one row per scored pair ``i < j`` (rows of ``index``): ``plain_ssim`` (whole
      images), ``aligned_ssim`` (aligned overlap, NaN when not aligned), ``score`` (their
      max), ``method`` ("paper" when plain_ssim >= threshold, "extended" when only the
      aligned one is, "" otherwise), ``duplicate``, transform ``sy, sx, ty, tx`` (j -> i),
      ``overlap`` (share of the smaller image covered), ``inliers``, ``mask_iou`` (masks
      compared in i's frame over the overlap; empty vs empty = 1), ``group`` (-1 if none).
    groups: one row per image of a multi-image group, columns ``DUPLICATE_COLUMNS``
      plus ``row`` (its row in ``index``): ``method`` "paper" when whole-image SSIM alone
      connects the group, else "extended"; ``linked_by`` "paper" when the image has a
      whole-image SSIM edge inside its group; ``min_ssim``/``max_ssim`` over the group's
      same-scan pairs; ``mask_iou_min`` the lowest IoU of two members' masks (aligned);
      ``keep_one`` the member the keep-one rule keeps; ``lesion_group`` its lesion group.
      Pairs also carry ``lesion_ssim`` (coarse SSIM of the aligned overlap; NaN inside a
      same-scan group or without the lesion search), ``same_lesion`` (a same-lesion edge:
      same class, not a copy, lesion_ssim >= lesion_threshold) and ``lesion_group``.
    lesions: one row per image of a multi-image lesion group, columns ``LESION_COLUMNS``
      (``group``: its same-scan group, -1 if none; ``min_lesion_ssim``: the weakest
      same-lesion edge of the lesion group, NaN if copies alone connect it).
    """

    index: "object"
    pairs: "object"
    groups: "object"
    config: DedupConfig
    data_dir: Path
    timings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    lesions: "object" = None

    def group_sizes(self) -> dict[int, int]:
        """{group size: number of groups}."""
        g = self.groups.drop_duplicates("group")["size"].value_counts()
        return {int(k): int(v) for k, v in sorted(g.items())}

    def keep(self, rule: str = "paper") -> set[tuple[str, int]]:
        """The keep-list of a curation rule (see RULES) as (class, id) pairs."""
        return curated_keep(self.index, self.groups, rule)


# ----------------------------------------------------------------------------- per image

def _prepare(image_path, mask_paths, cfg: DedupConfig) -> dict:
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


def _aligned_thumbs(img_i, img_j, p, cfg: DedupConfig, size: int | None = None):
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


# ----------------------------------------------------------------------------- search

def _decode_all(index, cfg: DedupConfig, workers: int, progress: bool) -> list[dict]:
    from mtbc_lib.data import map_images

    return map_images(_prepare, index, cfg, workers, progress, "audit: decoding images")


def _plain_candidates(small: np.ndarray, cfg: DedupConfig):
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


def _keypoint_pairs(prep: list[dict], cfg: DedupConfig) -> list[tuple[int, int, int, tuple]]:
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
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(i)), (np.asarray(i), np.asarray(j))), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _ssim_of(pairs_of_thumbs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """SSIM of a list of (thumb, thumb) pairs, in one vectorised call."""
    if not pairs_of_thumbs:
        return np.zeros(0)
    stack = np.stack([t for pair in pairs_of_thumbs for t in pair])
    k = np.arange(len(pairs_of_thumbs))
    return reg.ssim_pairs(stack, 2 * k, 2 * k + 1)


# ----------------------------------------------------------------------------- cache

#: Settings that change the per-image features (the rest only change the search).
_FEATURE_SETTINGS = ("size", "resample", "det_pixels", "keypoints", "extended")


def _files_digest(index) -> "hashlib._Hash":
    """sha256 over every file's name, size and mtime (images and masks)."""
    h = hashlib.sha256()
    for img, masks in zip(index["image"], index["masks"]):
        for p in (img, *masks):
            st = p.stat()
            h.update(f"{p.parent.name}/{p.name};{st.st_size};{st.st_mtime_ns}\n".encode())
    return h


def _cache_paths(index, cfg: DedupConfig) -> tuple[Path, Path]:
    """(features .npz, verified pairs .json) in ``config.cache_dir()`` for this folder and
    these settings: the features depend on the files and the feature settings, the
    verified pairs on the files and every setting."""
    files = _files_digest(index).hexdigest()
    settings = dataclasses.asdict(cfg)
    feat = {k: settings[k] for k in _FEATURE_SETTINGS}
    fkey = hashlib.sha256(f"audit-features-v{_VERSION};{json.dumps(feat, sort_keys=True)};{files}".encode())
    pkey = hashlib.sha256(f"audit-pairs-v{_VERSION};{json.dumps(settings, sort_keys=True)};{files}".encode())
    d = config.cache_dir()
    return d / f"audit_features_{fkey.hexdigest()[:20]}.npz", d / f"audit_pairs_{pkey.hexdigest()[:20]}.json"


def _pack_features(prep: list[dict]) -> dict[str, np.ndarray]:
    """The per-image features as a few flat arrays (no full-resolution image)."""
    det_shape = np.array([p["det"].shape for p in prep], dtype=np.int64).reshape(-1, 2)
    return {
        "thumb": np.stack([p["thumb"] for p in prep]), "small": np.stack([p["small"] for p in prep]),
        "shape": np.array([p["shape"] for p in prep], dtype=np.int64).reshape(-1, 2),
        "scale": np.array([p["scale"] for p in prep], dtype=np.float64).reshape(-1, 2),
        "det_shape": det_shape,
        "det": np.concatenate([p["det"].astype(np.uint8).ravel() for p in prep]),
        "det_mask": np.packbits(np.concatenate([p["det_mask"].astype(bool).ravel() for p in prep])),
        "kp_count": np.array([len(p["kp"]) for p in prep], dtype=np.int64),
        "kp": np.concatenate([p["kp"] for p in prep]).reshape(-1, 3).astype(np.float32),
        "desc": np.concatenate([p["desc"] for p in prep]).reshape(-1, reg.DESC * reg.DESC).astype(np.float32),
    }


def _unpack_features(f) -> list[dict]:
    """Inverse of :func:`_pack_features` (``det`` back to float32, as computed)."""
    sizes = f["det_shape"].prod(axis=1)
    starts = np.r_[0, np.cumsum(sizes)]
    mask = np.unpackbits(f["det_mask"], count=int(starts[-1])).astype(bool)
    kstarts = np.r_[0, np.cumsum(f["kp_count"])]
    out = []
    for k in range(len(f["thumb"])):
        shp = tuple(int(v) for v in f["det_shape"][k])
        a, b = starts[k], starts[k + 1]
        out.append({"thumb": f["thumb"][k], "small": f["small"][k], "shape": tuple(int(v) for v in f["shape"][k]),
                    "scale": tuple(float(v) for v in f["scale"][k]),
                    "det": f["det"][a:b].reshape(shp).astype(np.float32), "det_mask": mask[a:b].reshape(shp),
                    "kp": f["kp"][kstarts[k]:kstarts[k + 1]], "desc": f["desc"][kstarts[k]:kstarts[k + 1]]})
    return out


def _load_features(path: Path):
    try:
        with np.load(path) as f:
            return _unpack_features({k: f[k] for k in f.files})
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is recomputed


def _save_features(path: Path, prep: list[dict]) -> None:
    arrays = _pack_features(prep)

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)
    atomic_write(path, write)


def _load_pairs(path: Path) -> tuple[dict[tuple[int, int], dict], list | None]:
    """Verified pairs and keypoint candidates of an earlier run with the same files and
    settings (({}, None) if none)."""
    try:
        saved = json.loads(path.read_text())
        pairs = {(int(a), int(b)): r for a, b, r in saved["pairs"]}
        matches = [(int(a), int(b), int(n), tuple(float(v) for v in p)) for a, b, n, p in saved["keypoint_pairs"]]
        return pairs, matches
    except (OSError, ValueError, TypeError, KeyError):
        return {}, None


def _save_pairs(path: Path, scored: dict, matches: list) -> None:
    rows = [[a, b, {k: v for k, v in r.items() if v is None or np.isfinite(v)}] for (a, b), r in sorted(scored.items())]
    saved = {"pairs": rows, "keypoint_pairs": [[a, b, n, [float(v) for v in p]] for a, b, n, p in matches]}
    atomic_write(path, lambda p: p.write_text(json.dumps(saved)))


class _Images:
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


def find_groups(data_dir=None, settings: DedupConfig | None = None, *, progress: bool = True,
                workers: int = 2, cache: bool = True) -> AuditResult:
    """Search a BUSI folder for groups of images showing the same scan, and for groups of
    images showing the same lesion (module doc).

    ``data_dir``: the BUSI folder (default: ``config.data_dir()``); ``settings``: a
    DedupConfig; ``workers``: decoding processes; ``cache``: keep the per-image features
    (thumbnails, detection copies, keypoints: about 25 kB an image) and the verified pairs
    in ``config.cache_dir()``, keyed by the files' names, sizes and mtimes and the
    settings, so that a second run decodes no PNG and aligns no pair again. Bad input raises
    ``mtbc_lib.data.DataError`` (one line naming the file)."""
    from tqdm import tqdm  # text bar: also readable in the static book (a widget bar would be empty)

    from mtbc_lib.data import index_busi

    cfg = settings or DedupConfig()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    index = index_busi(data_dir).reset_index(drop=True)
    root = config.data_dir(data_dir)
    feat_path, pairs_path = _cache_paths(index, cfg) if cache else (None, None)
    prep = _load_features(feat_path) if cache and feat_path.exists() else None
    if prep is None or len(prep) != len(index):
        prep = _decode_all(index, cfg, workers, progress)
        if cache:
            _save_features(feat_path, prep)
    known, matches = _load_pairs(pairs_path) if cache and pairs_path.exists() else ({}, None)
    images = _Images(index, prep)
    n = len(prep)
    shapes = [p["shape"] for p in prep]
    timings["decode"] = time.perf_counter() - t0

    # ---- paper: whole-image SSIM on the candidates
    t = time.perf_counter()
    thumbs = np.stack([p["thumb"] for p in prep])
    ci, cj = _plain_candidates(np.stack([p["small"] for p in prep]), cfg)
    scored: dict[tuple[int, int], dict] = {
        (int(a), int(b)): {"plain_ssim": float(v)} for a, b, v in zip(ci, cj, reg.ssim_pairs(thumbs, ci, cj))}
    timings["paper_search"] = time.perf_counter() - t

    # ---- extended: keypoint candidates, alignment, SSIM on the aligned overlap
    t = time.perf_counter()
    transforms: dict[tuple[int, int], tuple] = {}
    if cfg.extended:
        todo = []
        if matches is None:  # else: the candidates of an earlier run on the same features and settings
            matches = _keypoint_pairs(prep, cfg)
        for a, b, n_in, p_det in tqdm(matches, desc="audit: aligning candidates",
                                      unit="pair", disable=not progress):
            old = known.get((a, b), {})
            if old.get("inliers") == n_in and "aligned_ssim" in old:  # verified by an earlier run
                p = (old["sy"], old["sx"], old["ty"], old["tx"])
                scored.setdefault((a, b), {}).update({k: old[k] for k in ("aligned_ssim", "overlap", "inliers")},
                                                     sy=p[0], sx=p[1], ty=p[2], tx=p[3])
                transforms[(a, b)] = p
                continue
            p = reg.to_full(tuple(reg.refine(prep[a]["det"], prep[b]["det"], p_det)), prep[a]["scale"], prep[b]["scale"])
            th = _aligned_thumbs(images[a], images[b], p, cfg)
            if th is not None:
                todo.append((a, b, n_in, p, th))
        for (a, b, n_in, p, th), v in zip(todo, _ssim_of([x[4][:2] for x in todo])):
            scored.setdefault((a, b), {}).update(aligned_ssim=float(v), overlap=th[2], inliers=n_in,
                                                 sy=p[0], sx=p[1], ty=p[2], tx=p[3])
            transforms[(a, b)] = p
    timings["extended_search"] = time.perf_counter() - t

    # ---- groups: connected components of the same-scan graph
    t = time.perf_counter()
    thr = cfg.threshold

    def score(r):
        return max(r.get("plain_ssim", -np.inf), r.get("aligned_ssim", -np.inf))

    edges = sorted(k for k, r in scored.items() if score(r) >= thr)
    label = components(n, [a for a, _ in edges], [b for _, b in edges])
    sizes = np.bincount(label, minlength=n)
    members: dict[int, list[int]] = {}
    for k in range(n):
        if sizes[label[k]] >= 2:
            members.setdefault(int(label[k]), []).append(k)
    groups = sorted(members.values(), key=lambda m: m[0])
    group_of = np.full(n, -1)
    for g, m in enumerate(groups, start=1):
        group_of[m] = g
    _complete_groups(groups, edges, scored, transforms, prep, images, thumbs, cfg, known)
    timings["groups"] = time.perf_counter() - t

    # ---- same lesion: coarse SSIM of the aligned overlap, components with the copies
    t = time.perf_counter()
    cls = index["class"].to_numpy()
    if cfg.lesion:
        _lesion_scores(scored, group_of, prep, cfg, known)
    lesion_edges = sorted(k for k, r in scored.items() if r.get("lesion_ssim", -np.inf) >= cfg.lesion_threshold
                          and cls[k[0]] == cls[k[1]] and score(r) < thr)
    both = edges + lesion_edges
    lesion_of = _numbered_components(n, both)
    timings["lesion_search"] = time.perf_counter() - t

    # ---- tables
    t = time.perf_counter()
    import pandas as pd

    index = index.assign(height=[h for h, _ in shapes], width=[w for _, w in shapes])
    lesion_set = set(lesion_edges)
    rows = []
    for (a, b), r in scored.items():
        sc = score(r)
        method = "paper" if r.get("plain_ssim", -np.inf) >= thr else "extended" if sc >= thr else ""
        rows.append({"i": a, "j": b, "name_i": index.at[a, "name"], "name_j": index.at[b, "name"],
                     "plain_ssim": r.get("plain_ssim", np.nan), "aligned_ssim": r.get("aligned_ssim", np.nan),
                     "score": sc, "method": method, "duplicate": sc >= thr,
                     **{k: r.get(k, np.nan) for k in ("sy", "sx", "ty", "tx", "overlap")},
                     "inliers": r.get("inliers", 0), "mask_iou": r.get("mask_iou", np.nan),
                     "group": int(group_of[a]) if group_of[a] == group_of[b] else -1,
                     "lesion_ssim": r.get("lesion_ssim", np.nan), "same_lesion": (a, b) in lesion_set,
                     "lesion_group": int(lesion_of[a]) if lesion_of[a] == lesion_of[b] else -1})
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS).sort_values(["i", "j"]).reset_index(drop=True)
    table = _group_table(index, pairs, groups, root)
    table.insert(len(DUPLICATE_COLUMNS) - 1, "lesion_group", lesion_of[table["row"].to_numpy()].astype(int))
    lesions = _lesion_table(index, pairs, lesion_of, group_of, root)
    if cache and known != scored:
        _save_pairs(pairs_path, scored, matches or [])
    timings["tables"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    counts = {"images": n, "paper_candidates": int(len(ci)), "extended_candidates": len(transforms),
              "duplicate_pairs": len(edges), "groups": len(groups),
              "images_in_groups": int(sum(len(m) for m in groups)),
              "lesion_pairs": len(lesion_edges), "lesion_groups": int(lesions["lesion_group"].nunique()),
              "images_in_lesion_groups": len(lesions)}
    return AuditResult(index=index, pairs=pairs, groups=table, config=cfg, data_dir=root,
                       timings=timings, counts=counts, lesions=lesions)


def _numbered_components(n: int, edges) -> np.ndarray:
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


def _lesion_scores(scored: dict, group_of: np.ndarray, prep: list[dict], cfg: DedupConfig,
                   known: dict | None = None) -> None:
    """``lesion_ssim`` of every scored pair outside one same-scan group (in place): the
    pair's transform (the aligned one, else the whole-image map) refined by Lucas-Kanade on
    blurred detection copies, then SSIM of the overlap at ``lesion_size`` px."""
    from scipy import ndimage as ndi

    blurred: dict[int, np.ndarray] = {}

    def blur(k):
        if k not in blurred:
            blurred[k] = ndi.gaussian_filter(prep[k]["det"], 1.5)
        return blurred[k]

    todo = []
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
        p = tuple(reg.refine(blur(a), blur(b), p, iters=6))
        th = _aligned_thumbs(da.astype(np.uint8), db.astype(np.uint8), p, cfg, size=cfg.lesion_size)
        if th is not None:
            todo.append(((a, b), th))
    for (key, _), v in zip(todo, _ssim_of([th[:2] for _, th in todo])):
        scored[key]["lesion_ssim"] = float(v)


def _lesion_table(index, pairs, lesion_of: np.ndarray, group_of: np.ndarray, root: Path):
    import pandas as pd

    rows = []
    weakest_of = pairs[pairs["same_lesion"] & (pairs["lesion_group"] > 0)].groupby("lesion_group")["lesion_ssim"].min()
    members = {}
    for k in np.flatnonzero(lesion_of > 0):
        members.setdefault(int(lesion_of[k]), []).append(int(k))
    for lg in range(1, int(lesion_of.max(initial=0)) + 1):
        m = members[lg]
        cls = sorted({index.at[k, "class"] for k in m}, key=CLASSES.index)
        weakest = float(weakest_of.get(lg, np.nan))
        for k in m:
            rows.append({"lesion_group": lg, "class": index.at[k, "class"], "id": int(index.at[k, "id"]),
                         "file": Path(index.at[k, "image"]).relative_to(root).as_posix(), "lesion_size": len(m),
                         "group": int(group_of[k]), "classes": "+".join(cls), "min_lesion_ssim": weakest,
                         "row": int(k)})
    return pd.DataFrame(rows, columns=LESION_COLUMNS)


def _complete_groups(groups, edges, scored, transforms, prep, images, thumbs, cfg: DedupConfig,
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
                    need_plain.append((a, b))
                p = transforms.get((a, b)) or maps[b]
                if "aligned_ssim" not in row and p != reg.whole(prep[a]["shape"], prep[b]["shape"]):
                    old = known.get((a, b), {})
                    if "aligned_ssim" in old and tuple(old.get(k) for k in ("sy", "sx", "ty", "tx")) == tuple(p):
                        row.update(aligned_ssim=old["aligned_ssim"], overlap=old["overlap"])
                    else:
                        th = _aligned_thumbs(images[a], images[b], p, cfg)
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
    for (a, b, th), v in zip(need_aligned, _ssim_of([x[2][:2] for x in need_aligned])):
        scored[(a, b)].update(aligned_ssim=float(v), overlap=th[2])


def _connected(nodes, edges) -> bool:
    """Whether ``edges`` (pairs of nodes) connect every node of a small group."""
    parent = {k: k for k in nodes}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in edges:
        parent[find(a)] = find(b)
    return len({find(k) for k in nodes}) == 1


def _group_table(index, pairs, groups: list[list[int]], root: Path):
    import pandas as pd

    rows = []
    by_group = dict(iter(pairs[pairs["group"] > 0].groupby("group")))
    for g, m in enumerate(groups, start=1):
        inside = by_group[g]
        paper_edges = inside[inside["method"] == "paper"]
        # "paper" if the whole-image SSIM edges alone connect the group
        method = "paper" if _connected(m, zip(paper_edges["i"], paper_edges["j"])) else "extended"
        cls = sorted({index.at[k, "class"] for k in m}, key=CLASSES.index)
        conflict = len(cls) > 1
        rep = max(m, key=lambda k: (index.at[k, "height"] * index.at[k, "width"], -index.at[k, "id"]))
        dup = inside[inside["duplicate"]]
        by_paper = set(paper_edges["i"]) | set(paper_edges["j"])
        for k in m:
            rows.append({
                "group": g, "class": index.at[k, "class"], "id": int(index.at[k, "id"]),
                "file": Path(index.at[k, "image"]).relative_to(root).as_posix(), "size": len(m),
                "method": method, "linked_by": "paper" if k in by_paper else "extended",
                "label_conflict": conflict, "classes": "+".join(cls),
                "height": int(index.at[k, "height"]), "width": int(index.at[k, "width"]),
                "min_ssim": float(dup["score"].min()), "max_ssim": float(dup["score"].max()),
                "mask_iou_min": float(inside["mask_iou"].min()),
                "keep_one": (k == rep) and not conflict, "row": k})
    cols = DUPLICATE_COLUMNS[:-1] + ["row"]  # lesion_group: added by find_groups
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- curation

def curated_keep(index, groups, rule: str = "paper") -> set[tuple[str, int]]:
    """Keep-list of a curation rule (RULES) from find_groups' index and group table."""
    if rule not in RULES:
        raise ValueError(f"unknown curation rule {rule!r}; expected one of {', '.join(RULES)}")
    drop = {(c, int(i)) for c, i in zip(groups["class"], groups["id"])}
    if rule == "keep-one":
        drop -= {(c, int(i)) for c, i, k in zip(groups["class"], groups["id"], groups["keep_one"]) if k}
    return {(c, int(i)) for c, i in zip(index["class"], index["id"])} - drop


def write_audit(result: AuditResult, out_dir, curation: str = "paper") -> dict[str, Path]:
    """Write ``duplicates.csv`` (:func:`duplicates_table`), ``pairs.csv`` (every scored pair) and ``curated.csv`` (the keep-list of ``curation``
    in the published ``class;id`` format), each atomically. Returns their paths."""
    from mtbc_lib.data import write_keep_list

    keep = result.keep(curation)
    out = Path(out_dir)
    paths = {"duplicates": out / "duplicates.csv", "pairs": out / "pairs.csv", "curated": out / "curated.csv"}
    dup = duplicates_table(result)
    atomic_write(paths["duplicates"], lambda p: dup.to_csv(p, index=False, float_format="%.4f", lineterminator="\n"))
    pairs = result.pairs.drop(columns=["i", "j"]).rename(columns={"name_i": "image_i", "name_j": "image_j"})
    atomic_write(paths["pairs"], lambda p: pairs.to_csv(p, index=False, float_format="%.4f", lineterminator="\n"))
    write_keep_list(keep, paths["curated"])
    return paths


def duplicates_table(result: AuditResult):
    """What ``duplicates.csv`` holds: one row per image of a multi-image same-scan group
    (``DUPLICATE_COLUMNS``), then one row per image that shares only its lesion with other
    images (empty same-scan columns, ``lesion_group`` set), ordered by lesion group."""
    import pandas as pd

    dup = result.groups.drop(columns=["row"])
    lesions = result.lesions
    if lesions is None or lesions.empty:
        return dup.astype({"lesion_group": "Int64"}) if "lesion_group" in dup else dup
    alone = lesions[lesions["group"] < 0]
    extra = pd.DataFrame({c: alone[c].to_numpy() for c in ("class", "id", "file", "lesion_group")})
    extra = extra.assign(height=result.index.loc[alone["row"], "height"].to_numpy(),
                         width=result.index.loc[alone["row"], "width"].to_numpy(), size=1)
    out = pd.concat([dup, extra], ignore_index=True)[DUPLICATE_COLUMNS]
    return out.astype({"group": "Int64", "size": "Int64", "lesion_group": "Int64"})


def _data_key(data_dir, cfg: DedupConfig) -> str:
    """Digest of the search settings and every file's name, size and mtime."""
    from mtbc_lib.data import index_busi

    index = index_busi(data_dir)
    h = hashlib.sha256(f"dedup-v{_VERSION};{json.dumps(dataclasses.asdict(cfg), sort_keys=True)}\n".encode())
    for img, masks in zip(index["image"], index["masks"]):
        for p in (img, *masks):
            st = p.stat()
            h.update(f"{p.parent.name}/{p.name};{st.st_size};{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def keep_list(data_dir=None, rule: str = "paper", *, settings: DedupConfig | None = None,
              progress: bool = False) -> set[tuple[str, int]]:
    """The keep-list of a curation rule (RULES) for a BUSI folder, as (class, id) pairs.
    The search runs once per folder and settings; its groups are cached as JSON in
    ``config.cache_dir()`` (keyed by the settings and the files' names, sizes, mtimes)."""
    if rule not in RULES:
        raise ValueError(f"unknown curation rule {rule!r}; expected one of {', '.join(RULES)}")
    cfg = settings or DedupConfig()
    path = config.cache_dir() / f"dedup_{_data_key(data_dir, cfg)}.json"
    cached = None
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = None
    if cached is None:
        res = find_groups(data_dir, cfg, progress=progress)
        cached = {rule_: sorted([c, i] for c, i in res.keep(rule_)) for rule_ in RULES}
        cached["groups"] = [[[c, int(i)] for c, i in zip(g["class"], g["id"])]
                            for _, g in res.groups.groupby("group", sort=True)]
        cached["lesions"] = [[[c, int(i)] for c, i in zip(g["class"], g["id"])]
                             for _, g in res.lesions.groupby("lesion_group", sort=True)]
        atomic_write(path, lambda p: p.write_text(json.dumps(cached)))
    return {(c, int(i)) for c, i in cached[rule]}


# ----------------------------------------------------------------------------- reporting

def summary(result: AuditResult) -> str:
    """A few lines: images, groups by size and method, label conflicts, keep-list sizes."""
    g = result.groups.drop_duplicates("group")
    sizes = result.group_sizes()
    names = {2: "duplets", 3: "triplets", 4: "quadruplets"}
    parts = ", ".join(f"{v} {names.get(k, f'groups of {k}')}" for k, v in sorted(sizes.items(), reverse=True))
    return "\n".join([
        f"{result.counts['images']} images: {len(g)} groups ({parts}) holding {len(result.groups)} images",
        f"  whole-image SSIM alone connects {int((g['method'] == 'paper').sum())} groups; "
        f"{int((g['method'] == 'extended').sum())} need the aligned overlap (crops/rescales)",
        f"  label conflicts: {int(g['label_conflict'].sum())} groups "
        f"({int(result.groups['label_conflict'].sum())} images)",
        f"  keep-list 'paper': {len(result.keep('paper'))} images; 'keep-one': {len(result.keep('keep-one'))}",
        *([_lesion_line(result)] if result.lesions is not None and result.config.lesion else []),
        f"  setting: {result.config.size}x{result.config.size} {result.config.resample} grey, "
        f"SSIM >= {result.config.threshold}; {result.timings.get('total', float('nan')):.1f} s",
    ])


def _lesion_line(result: AuditResult) -> str:
    les = result.lesions
    alone = les[les["group"] < 0]
    per = alone["class"].value_counts()
    by_class = ", ".join(f"{int(per[c])} {c}" for c in CLASSES if c in per) or "none"
    return (f"  same lesion (coarse aligned SSIM >= {result.config.lesion_threshold}, same class): "
            f"{les['lesion_group'].nunique()} lesion groups holding {len(les)} images; "
            f"{len(alone)} of them in no same-scan group ({by_class}), in "
            f"{alone['lesion_group'].nunique()} lesion groups")


# ----------------------------------------------------------------------------- notebooks

#: Notebook parameters of dataset_audit / duplicate_explorer and their types.
NOTEBOOK_PARAMS = {"data_dir": str, "threshold": float, "size": int, "resample": str, "extended": bool,
                   "curation": str, "lesion_threshold": float}


def params_from_namespace(namespace: dict) -> tuple[Path, DedupConfig, str]:
    """(data folder, DedupConfig, curation rule) from a notebook's ``globals()``.

    Papermill only warns about parameters a notebook does not declare; here every
    public global holding a literal must be one of NOTEBOOK_PARAMS, else ValueError
    names the unknown ones. ``data_dir`` "" means the default folder
    (``$MTBC_DATA``, else ../shared/data/BUSI). Call it before assigning other globals."""
    values = config.notebook_params(namespace, NOTEBOOK_PARAMS)
    for k, v in values.items():
        want = NOTEBOOK_PARAMS[k]
        if not isinstance(v, want) or (want is not bool and isinstance(v, bool)):
            if not (want is float and isinstance(v, int) and not isinstance(v, bool)):
                raise ValueError(f"parameter {k}={v!r}; expected a {want.__name__}")
    curation = values.pop("curation", "paper")
    if curation not in RULES:
        raise ValueError(f"parameter curation={curation!r}; expected one of {', '.join(RULES)}")
    from mtbc_lib.data import DataError

    try:
        folder = config.data_dir(values.pop("data_dir", "") or None)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    cfg = DedupConfig(**{k: (float(v) if k in ("threshold", "lesion_threshold") else v) for k, v in values.items()})
    return folder, cfg, curation
