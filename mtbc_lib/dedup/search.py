"""Duplicate search in BUSI: groups of files that show the same scan, and groups of files
that show the same lesion.

Two images are *the same scan* when their SSIM is at least ``threshold`` with the paper's
setting (grey, both resized to ``size x size`` with ``resample``, scikit-image's SSIM:
7x7 uniform window, K1 = 0.01, K2 = 0.03, data range 255), computed

- ``whole-image``: on the whole images (what a plain SSIM search compares), or
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
split by lesion needs. Some frames of one lesion score below the threshold too, and pairs
that no candidate filter proposes are never scored: lesion groups are a lower bound.

No code of the paper's search was released: the published keep-list is the ground truth
(its removed images are every member of their groups). The defaults (``threshold`` on the
common field of view at 64x64 bilinear; ``lesion_threshold`` between the best-matching
pairs that cannot be one lesion and the frames of one lesion) are calibrated in the
dataset audit chapter (``notebooks/dataset_audit.ipynb``), which shows the sweeps and
what each setting decides.

The search is fast and exact at the setting for the ``whole-image`` edges: cheap candidate
filters, then SSIM at the setting for each candidate (its stages: :mod:`mtbc_lib.dedup.decode`,
then :mod:`mtbc_lib.dedup.stages`); per-image features and verified pairs are cached
(:mod:`mtbc_lib.dedup.cache`), so a second run decodes no PNG and aligns no pair again;
the result's tables and files are :mod:`mtbc_lib.dedup.tables`'s.

The image geometry (SSIM, keypoints, transforms) lives in :mod:`mtbc_lib.dedup.registration`
(its transforms ``(sy, sx, ty, tx)`` map pixel centres of image j to image i, here in
full-resolution pixels); the tables and figures that read a search's result are in
:mod:`mtbc_lib.report.audit`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtbc_lib import core
from mtbc_lib.core import atomic_write
from mtbc_lib.dedup import registration as reg
from mtbc_lib.dedup.cache import cache_paths, data_key, load_features, load_pairs, save_features, save_pairs
from mtbc_lib.dedup.decode import RESAMPLE, Images, Workers, decode_all
from mtbc_lib.dedup.stages import (
    align_many,
    aligned_thumbs,
    complete_groups,
    components,
    keypoint_pairs,
    lesion_scores,
    match_descriptors,
    numbered_components,
    plain_candidates,
    ssim_of,
)
from mtbc_lib.dedup.tables import (
    DUPLICATE_COLUMNS,
    LESION_COLUMNS,
    PAIR_COLUMNS,
    duplicates_table,
    group_table,
    lesion_table,
    summary,
    write_audit,
)

__all__ = ["RESAMPLE", "RULES", "DedupConfig", "AuditResult", "find_groups", "curated_keep", "keep_list",
           "GROUP_LEVELS", "audit_groups", "write_audit", "duplicates_table", "summary", "components",
           "DUPLICATE_COLUMNS", "PAIR_COLUMNS", "LESION_COLUMNS", "NOTEBOOK_PARAMS", "params_from_namespace"]

#: Curation rules of the audit: "drop-all" drops every member of every group (as the
#: published list does; it differs from that list where the searches differ, see the audit chapter);
#: "keep-one" keeps the largest image (height x width; ties: smallest id) of each group
#: whose labels agree and drops every member of a group whose labels disagree.
RULES = ("drop-all", "keep-one")


@dataclass(frozen=True)
class DedupConfig:
    """Settings of the duplicate search (frozen; the defaults are the calibrated setting, see the module
    docstring).

    Attributes:
        size: side in pixels of the square thumbnails SSIM compares, 8..1024.
        resample: their resize filter, a key of :data:`RESAMPLE`.
        threshold: same scan when SSIM >= this, in [-1, 1].
        extended: also find crops and rescales (SSIM of the aligned overlap).
        candidate_corr: whole-image candidates: correlation of centred 16x16 thumbnails >= this.
        all_pairs_below: with fewer pairs than this, every pair is verified (no candidate filter).
        det_pixels: about this many pixels in the keypoint-detection copy of an image.
        keypoints: strongest blobs kept per image.
        neighbours: matches kept per descriptor (nearest over all images).
        min_desc_corr: descriptor correlation a keypoint match needs.
        min_inliers: matches agreeing on one transform needed to try an alignment.
        lesion: also group frames of one lesion (coarse SSIM of the aligned overlap).
        lesion_size: side in pixels of the coarse thumbnails the lesion relation compares, 8..64.
        lesion_threshold: same lesion (same class) when the coarse aligned SSIM >= this, in [-1, 1].

    Raises:
        ValueError: on construction, when ``resample`` is not a key of :data:`RESAMPLE` or ``size``,
            ``threshold``, ``lesion_threshold`` or ``lesion_size`` is outside its range above.
    """

    size: int = 64                 # side of the square thumbnails SSIM compares (paper setting)
    resample: str = "bilinear"     # their resize filter (key of RESAMPLE)
    threshold: float = 0.94        # SSIM >= threshold: same scan
    extended: bool = True          # also find crops / rescales (aligned-overlap SSIM)
    candidate_corr: float = 0.7    # whole-image candidates: correlation of centred 16x16 thumbnails >= this
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

    Attributes:
        index: ``pandas.DataFrame``, one row per image: :func:`mtbc_lib.data.busi.index_busi`'s columns
            plus ``height`` and ``width`` (original pixels).
        pairs: ``pandas.DataFrame``, one row per scored pair ``i < j`` (rows of ``index``), columns
            :data:`PAIR_COLUMNS`: ``plain_ssim`` (whole images), ``aligned_ssim`` (aligned overlap, NaN
            when not aligned), ``score`` (their max), ``method`` ("whole-image" when plain_ssim >=
            threshold, "extended" when only the aligned one is, "" otherwise), ``duplicate``, the
            transform ``sy, sx, ty, tx`` (j -> i, full-resolution pixels), ``overlap`` (share of the
            smaller image covered), ``inliers``, ``mask_iou`` (masks compared in i's frame over the
            overlap; empty vs empty = 1), ``group`` (-1 if none), ``lesion_ssim`` (coarse SSIM of the
            aligned overlap; NaN inside a same-scan group or without the lesion search),
            ``same_lesion`` (a same-lesion edge: same class, not a copy, lesion_ssim >=
            lesion_threshold) and ``lesion_group`` (-1 if none).
        groups: ``pandas.DataFrame``, one row per image of a multi-image same-scan group, columns
            :data:`DUPLICATE_COLUMNS` plus ``row`` (its row in ``index``): ``method`` "whole-image" when
            whole-image SSIM alone connects the group, else "extended"; ``linked_by`` "whole-image"
            when the image has a whole-image SSIM edge inside its group; ``min_ssim``/``max_ssim`` over
            the group's same-scan pairs; ``mask_iou_min`` the lowest IoU of two members' masks
            (aligned); ``keep_one`` the member the keep-one rule keeps; ``lesion_group`` its lesion
            group.
        config: the settings searched with.
        data_dir: the BUSI folder searched.
        timings: wall-clock seconds of each stage and ``"total"``.
        counts: numbers of images, candidates, pairs, groups and images in groups.
        lesions: ``pandas.DataFrame``, one row per image of a multi-image lesion group, columns
            :data:`LESION_COLUMNS` (``group``: its same-scan group, -1 if none; ``min_lesion_ssim``:
            the weakest same-lesion edge of the lesion group, NaN if copies alone connect it).
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
        """Count the same-scan groups by size.

        Returns:
            ``{group size: number of groups}``, sorted by size.
        """
        g = self.groups.drop_duplicates("group")["size"].value_counts()
        return {int(k): int(v) for k, v in sorted(g.items())}

    def keep(self, rule: str = "drop-all") -> set[tuple[str, int]]:
        """The keep-list of a curation rule.

        Args:
            rule: a rule of :data:`RULES`.

        Returns:
            The kept images as ``(class, id)`` pairs.

        Raises:
            ValueError: ``rule`` is not in :data:`RULES`.
        """
        return curated_keep(self.index, self.groups, rule)


@dataclass
class _Search:
    """One search as its stages fill it in (:func:`find_groups`): the settings, the images'
    features, and the pairs scored so far. Rows ``i < j`` of ``index`` name the pairs."""

    cfg: DedupConfig
    index: "object"                 # one row per image (data.scan_busi's columns)
    prep: list                      # per-image features (mtbc_lib.dedup.decode.prepare)
    images: Images                  # the full images, decoded on demand
    known: dict                     # {(i, j): record} verified by an earlier run (the cache)
    matches: list | None            # keypoint candidates of an earlier run, or None
    pending: "object" = None        # keypoint descriptors being matched by the workers (stage 2 -> 3)
    scored: dict = field(default_factory=dict)      # {(i, j): scores, transform, overlap...}
    transforms: dict = field(default_factory=dict)  # {(i, j): (sy, sx, ty, tx)} j -> i
    thumbs: "object" = None         # (N, size, size) SSIM thumbnails
    n_whole_candidates: int = 0
    edges: list = field(default_factory=list)        # same-scan pairs
    groups: list = field(default_factory=list)       # same-scan groups: lists of rows, by first row
    group_of: "object" = None       # (N,) group number (from 1), -1 for an image in no group
    lesion_edges: list = field(default_factory=list)  # same-lesion pairs (not copies)
    lesion_of: "object" = None      # (N,) lesion group number
    timings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.prep)

    def score(self, r: dict) -> float:
        """A pair's same-scan score: the larger of its whole-image and aligned SSIM."""
        return max(r.get("plain_ssim", -np.inf), r.get("aligned_ssim", -np.inf))


def find_groups(data_dir=None, settings: DedupConfig | None = None, *, progress: bool = True,
                workers: int = 2, cache: bool = True) -> AuditResult:
    """Search a BUSI folder for groups of images showing the same scan, and for groups showing the same
    lesion (module docstring).

    The search runs in named stages: :func:`_decode`, :func:`_whole_image_search`,
    :func:`_extended_search`, :func:`_same_scan_groups`, :func:`_same_lesion_groups`, :func:`_result`.

    Args:
        data_dir: the BUSI folder; None: ``core.data_dir()``.
        settings: the search settings; None: ``DedupConfig()``.
        progress: whether to show progress bars.
        workers: processes that decode and align.
        cache: keep the per-image features (thumbnails, detection copies, keypoints) and the
            verified pairs in ``core.cache_dir()``, keyed by the files' names, sizes and mtimes and the
            settings, so that a second run decodes no PNG and aligns no pair again.

    Returns:
        The :class:`AuditResult`.

    Raises:
        DataError: bad input (:class:`mtbc_lib.data.busi.DataError`, one line naming the file).
    """
    from mtbc_lib.data.busi import scan_busi

    cfg = settings or DedupConfig()
    t0 = time.perf_counter()
    columns = scan_busi(data_dir)  # the index without pandas, imported while the workers decode
    root = core.data_dir(data_dir)
    feat_path, pairs_path = cache_paths(columns, cfg) if cache else (None, None)
    with Workers(workers) as pool:  # started by the first stage that needs it
        s = _decode(columns, cfg, pool, progress, feat_path, pairs_path)
        s.timings["decode"] = time.perf_counter() - t0
        for name, stage in (("whole_image_search", _whole_image_search), ("extended_search", _extended_search),
                            ("groups", _same_scan_groups), ("lesion_search", _same_lesion_groups)):
            t = time.perf_counter()
            stage(s, pool, progress)
            s.timings[name] = time.perf_counter() - t
    t = time.perf_counter()
    result = _result(s, root)
    if cache and s.known != s.scored:
        save_pairs(pairs_path, s.scored, s.matches or [])
    s.timings["tables"] = time.perf_counter() - t
    s.timings["total"] = time.perf_counter() - t0
    result.timings = s.timings
    return result


def _decode(columns: dict, cfg: DedupConfig, pool, progress: bool, feat_path, pairs_path) -> _Search:
    """Stage 1: every image's features, decoded once by the workers (or read from the cache),
    and the pairs an earlier run verified."""
    prep = load_features(feat_path) if feat_path is not None and feat_path.exists() else None
    if prep is None or len(prep) != len(columns["image"]):
        prep = decode_all(columns, cfg, pool, progress, meanwhile=lambda: __import__("pandas"))
        if feat_path is not None:
            save_features(feat_path, prep)
    import pandas as pd

    index = pd.DataFrame(columns)
    known, matches = load_pairs(pairs_path) if pairs_path is not None and pairs_path.exists() else ({}, None)
    return _Search(cfg=cfg, index=index, prep=prep, images=Images(index, prep), known=known, matches=matches)


def _whole_image_search(s: _Search, pool, progress: bool) -> None:
    """Stage 2: whole-image SSIM on the candidate pairs, while the workers match keypoint
    descriptors for stage 3 (``s.matches``: a pending match unless an earlier run's
    candidates are known)."""
    cfg, prep = s.cfg, s.prep
    s.pending = match_descriptors(prep, cfg, pool) if cfg.extended and s.matches is None else None
    s.thumbs = np.stack([p["thumb"] for p in prep])
    ci, cj = plain_candidates(np.stack([p["small"] for p in prep]), cfg)
    s.n_whole_candidates = int(len(ci))
    cand = list(zip(ci.tolist(), cj.tolist()))
    todo = [k for k in cand if "plain_ssim" not in s.known.get(k, {})]  # the rest: an earlier run's scores
    fresh = dict(zip(todo, reg.ssim_pairs(s.thumbs, *np.array(todo, dtype=np.int64).reshape(-1, 2).T))) if todo else {}
    s.scored = {k: {"plain_ssim": float(fresh[k]) if k in fresh else s.known[k]["plain_ssim"]} for k in cand}


def _extended_search(s: _Search, pool, progress: bool) -> None:
    """Stage 3 (``cfg.extended``): keypoint candidates, their alignment (Lucas-Kanade on
    the detection copies, by the workers) and SSIM on the aligned overlap; pairs an
    earlier run verified with the same inliers are reused."""
    cfg, prep = s.cfg, s.prep
    if not cfg.extended:
        return
    if s.pending is not None:  # else: the candidates of an earlier run on the same features and settings
        s.matches = keypoint_pairs(prep, cfg, s.pending)
    keys, jobs = [], []
    for a, b, n_in, p_det in s.matches:
        old = s.known.get((a, b), {})
        if old.get("inliers") == n_in and "aligned_ssim" in old:  # verified by an earlier run
            p = (old["sy"], old["sx"], old["ty"], old["tx"])
            s.scored.setdefault((a, b), {}).update({k: old[k] for k in ("aligned_ssim", "overlap", "inliers")},
                                                   sy=p[0], sx=p[1], ty=p[2], tx=p[3])
            s.transforms[(a, b)] = p
        else:
            keys.append((a, b, n_in))
            jobs.append((prep[a]["det"], prep[b]["det"], p_det, 8, 0))
    todo = []
    for (a, b, n_in), p in zip(keys, align_many(jobs, pool, progress, "audit: aligning candidates")):
        p = reg.to_full(p, prep[a]["scale"], prep[b]["scale"])
        th = aligned_thumbs(s.images[a], s.images[b], p, cfg)
        if th is not None:
            todo.append((a, b, n_in, p, th))
    for (a, b, n_in, p, th), v in zip(todo, ssim_of([x[4][:2] for x in todo])):
        s.scored.setdefault((a, b), {}).update(aligned_ssim=float(v), overlap=th[2], inliers=n_in,
                                               sy=p[0], sx=p[1], ty=p[2], tx=p[3])
        s.transforms[(a, b)] = p


def _same_scan_groups(s: _Search, pool, progress: bool) -> None:
    """Stage 4: the same-scan groups, connected components of the pairs scoring at least
    the threshold, numbered from 1 by their first row; their members' mask agreement and
    missing in-group pairs (:func:`mtbc_lib.dedup.stages.complete_groups`)."""
    n = s.n
    s.edges = sorted(k for k, r in s.scored.items() if s.score(r) >= s.cfg.threshold)
    label = components(n, [a for a, _ in s.edges], [b for _, b in s.edges])
    sizes = np.bincount(label, minlength=n)
    members: dict[int, list[int]] = {}
    for k in range(n):
        if sizes[label[k]] >= 2:
            members.setdefault(int(label[k]), []).append(k)
    s.groups = sorted(members.values(), key=lambda m: m[0])
    s.group_of = np.full(n, -1)
    for g, m in enumerate(s.groups, start=1):
        s.group_of[m] = g
    complete_groups(s.groups, s.edges, s.scored, s.transforms, s.prep, s.images, s.thumbs, s.cfg, s.known)


def _same_lesion_groups(s: _Search, pool, progress: bool) -> None:
    """Stage 5: frames of one lesion: coarse SSIM of the aligned overlap (``cfg.lesion``),
    a same-lesion edge between images of one class that are not copies, and the lesion
    groups: components of the same-scan and same-lesion edges together."""
    cfg = s.cfg
    cls = s.index["class"].to_numpy()
    if cfg.lesion:
        lesion_scores(s.scored, s.group_of, s.prep, cfg, s.known, pool)
    s.lesion_edges = sorted(k for k, r in s.scored.items() if r.get("lesion_ssim", -np.inf) >= cfg.lesion_threshold
                            and cls[k[0]] == cls[k[1]] and s.score(r) < cfg.threshold)
    s.lesion_of = numbered_components(s.n, s.edges + s.lesion_edges)


def _result(s: _Search, root: Path) -> AuditResult:
    """Stage 6: the result's tables (pairs, same-scan groups, lesion groups) and counts."""
    import pandas as pd

    thr, group_of, lesion_of = s.cfg.threshold, s.group_of, s.lesion_of
    index = s.index.assign(height=[p["shape"][0] for p in s.prep], width=[p["shape"][1] for p in s.prep])
    lesion_set = set(s.lesion_edges)
    rows = []
    for (a, b), r in s.scored.items():
        sc = s.score(r)
        method = "whole-image" if r.get("plain_ssim", -np.inf) >= thr else "extended" if sc >= thr else ""
        rows.append({"i": a, "j": b, "name_i": index.at[a, "name"], "name_j": index.at[b, "name"],
                     "plain_ssim": r.get("plain_ssim", np.nan), "aligned_ssim": r.get("aligned_ssim", np.nan),
                     "score": sc, "method": method, "duplicate": sc >= thr,
                     **{k: r.get(k, np.nan) for k in ("sy", "sx", "ty", "tx", "overlap")},
                     "inliers": r.get("inliers", 0), "mask_iou": r.get("mask_iou", np.nan),
                     "group": int(group_of[a]) if group_of[a] == group_of[b] else -1,
                     "lesion_ssim": r.get("lesion_ssim", np.nan), "same_lesion": (a, b) in lesion_set,
                     "lesion_group": int(lesion_of[a]) if lesion_of[a] == lesion_of[b] else -1})
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS).sort_values(["i", "j"]).reset_index(drop=True)
    table = group_table(index, pairs, s.groups, root)
    table.insert(len(DUPLICATE_COLUMNS) - 1, "lesion_group", lesion_of[table["row"].to_numpy(dtype=np.int64)].astype(int))
    lesions = lesion_table(index, pairs, lesion_of, group_of, root)
    counts = {"images": s.n, "whole_image_candidates": s.n_whole_candidates, "extended_candidates": len(s.transforms),
              "duplicate_pairs": len(s.edges), "groups": len(s.groups),
              "images_in_groups": int(sum(len(m) for m in s.groups)),
              "lesion_pairs": len(s.lesion_edges), "lesion_groups": int(lesions["lesion_group"].nunique()),
              "images_in_lesion_groups": len(lesions)}
    return AuditResult(index=index, pairs=pairs, groups=table, config=s.cfg, data_dir=root, counts=counts,
                       lesions=lesions)


def curated_keep(index, groups, rule: str = "drop-all") -> set[tuple[str, int]]:
    """The keep-list of a curation rule from :func:`find_groups`' index and group table.

    Args:
        index: ``AuditResult.index`` (columns ``class``, ``id``).
        groups: ``AuditResult.groups`` (columns ``class``, ``id``, ``keep_one``).
        rule: a rule of :data:`RULES`: ``"drop-all"`` drops every grouped image, ``"keep-one"`` keeps
            each group's ``keep_one`` member.

    Returns:
        The kept images as ``(class, id)`` pairs.

    Raises:
        ValueError: ``rule`` is not in :data:`RULES`.
    """
    if rule not in RULES:
        raise ValueError(f"unknown curation rule {rule!r}; expected one of {', '.join(RULES)}")
    drop = {(c, int(i)) for c, i in zip(groups["class"], groups["id"])}
    if rule == "keep-one":
        drop -= {(c, int(i)) for c, i, k in zip(groups["class"], groups["id"], groups["keep_one"]) if k}
    return {(c, int(i)) for c, i in zip(index["class"], index["id"])} - drop


def _cached_audit(data_dir, settings: DedupConfig | None, progress: bool) -> dict:
    """The audit's keep-lists and groups for a BUSI folder, searched once per folder and
    settings and cached as JSON in ``core.cache_dir()`` (keyed by the settings and the
    files' names, sizes, mtimes): ``{rule: [[class, id], ...], "groups": [[[class, id],
    ...], ...], "lesions": [...]}``."""
    cfg = settings or DedupConfig()
    path = core.cache_dir() / f"dedup_{data_key(data_dir, cfg)}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    res = find_groups(data_dir, cfg, progress=progress)
    cached = {rule_: sorted([c, i] for c, i in res.keep(rule_)) for rule_ in RULES}
    cached["groups"] = [[[c, int(i)] for c, i in zip(g["class"], g["id"])]
                        for _, g in res.groups.groupby("group", sort=True)]
    cached["lesions"] = [[[c, int(i)] for c, i in zip(g["class"], g["id"])]
                         for _, g in res.lesions.groupby("lesion_group", sort=True)]
    atomic_write(path, lambda p: p.write_text(json.dumps(cached)))
    return cached


def keep_list(data_dir=None, rule: str = "drop-all", *, settings: DedupConfig | None = None,
              progress: bool = False) -> set[tuple[str, int]]:
    """The keep-list of a curation rule for a BUSI folder.

    The search runs once per folder and settings; its keep-lists and groups are cached as JSON in
    ``core.cache_dir()`` (written atomically; see :func:`_cached_audit`).

    Args:
        data_dir: the BUSI folder; None: ``core.data_dir()``.
        rule: a rule of :data:`RULES`.
        settings: the search settings; None: ``DedupConfig()``.
        progress: whether to show progress bars when the search runs.

    Returns:
        The kept images as ``(class, id)`` pairs.

    Raises:
        ValueError: ``rule`` is not in :data:`RULES`.
        DataError: bad input, as :func:`find_groups`.
    """
    if rule not in RULES:
        raise ValueError(f"unknown curation rule {rule!r}; expected one of {', '.join(RULES)}")
    return {(c, int(i)) for c, i in _cached_audit(data_dir, settings, progress)[rule]}


#: Levels of grouping for splits: "scan" (copies of one scan), "lesion" (frames of one lesion,
#: every scan group inside one lesion group).
GROUP_LEVELS = ("scan", "lesion")


def audit_groups(data_dir=None, level: str = "scan", *, settings: DedupConfig | None = None,
                 progress: bool = False) -> dict[tuple[str, int], int]:
    """The audit's group of every grouped image of a BUSI folder.

    Cached like :func:`keep_list`.

    Args:
        data_dir: the BUSI folder; None: ``core.data_dir()``.
        level: a level of :data:`GROUP_LEVELS`: ``"scan"`` (copies of one scan) or ``"lesion"`` (the
            same-scan groups joined by the same-lesion relation).
        settings: the search settings; None: ``DedupConfig()``.
        progress: whether to show progress bars when the search runs.

    Returns:
        ``{(class, id): group number}``, numbers from 0; an image in no group is absent.

    Raises:
        ValueError: ``level`` is not in :data:`GROUP_LEVELS`.
        DataError: bad input, as :func:`find_groups`.
    """
    if level not in GROUP_LEVELS:
        raise ValueError(f"level={level!r}: expected one of {', '.join(GROUP_LEVELS)}")
    cached = _cached_audit(data_dir, settings, progress)
    lists = cached["groups"] + (cached["lesions"] if level == "lesion" else [])
    keys = sorted({(c, int(i)) for members in lists for c, i in members})
    pos = {k: n for n, k in enumerate(keys)}
    edges = [(pos[(m[0][0], int(m[0][1]))], pos[(c, int(i))]) for m in lists for c, i in m[1:]]
    comp = components(len(keys), [e[0] for e in edges], [e[1] for e in edges])
    return {k: int(comp[n]) for k, n in pos.items()}


# ----------------------------------------------------------------------------- notebooks

#: Notebook parameters of dataset_audit / duplicate_explorer and their types.
NOTEBOOK_PARAMS = {"data_dir": str, "threshold": float, "size": int, "resample": str, "extended": bool,
                   "curation": str, "lesion_threshold": float}


def params_from_namespace(namespace: dict) -> tuple[Path, DedupConfig, str]:
    """The audit notebook's parameters from its ``globals()``.

    Papermill only warns about parameters a notebook does not declare; here every public global
    holding a literal must be one of :data:`NOTEBOOK_PARAMS`. Call it before assigning other globals.

    Args:
        namespace: the notebook's ``globals()``. ``data_dir`` "" means the default folder
            (``$MTBC_DATA``, else ``../shared/data/BUSI``); ``curation`` defaults to ``"drop-all"``;
            an int is accepted for a float parameter.

    Returns:
        ``(data folder, DedupConfig, curation rule)``.

    Raises:
        ValueError: an unknown parameter (the message names it), a value of the wrong type, a
            curation outside :data:`RULES`, or settings :class:`DedupConfig` rejects.
        DataError: the data folder does not exist.
    """
    values = core.notebook_params(namespace, NOTEBOOK_PARAMS)
    for k, v in values.items():
        want = NOTEBOOK_PARAMS[k]
        if not isinstance(v, want) or (want is not bool and isinstance(v, bool)):
            if not (want is float and isinstance(v, int) and not isinstance(v, bool)):
                raise ValueError(f"parameter {k}={v!r}; expected a {want.__name__}")
    curation = values.pop("curation", "drop-all")
    if curation not in RULES:
        raise ValueError(f"parameter curation={curation!r}; expected one of {', '.join(RULES)}")
    from mtbc_lib.data.busi import DataError

    try:
        folder = core.data_dir(values.pop("data_dir", "") or None)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    cfg = DedupConfig(**{k: (float(v) if k in ("threshold", "lesion_threshold") else v) for k, v in values.items()})
    return folder, cfg, curation

