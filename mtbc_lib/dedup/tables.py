"""What a duplicate search's result is written as: the group and lesion tables of
:class:`mtbc_lib.dedup.search.AuditResult`, ``duplicates.csv`` / ``pairs.csv`` / ``curated.csv``
(:func:`write_audit`), and the few summary lines ``mtbc audit`` prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtbc_lib.core import CLASSES, atomic_write
from mtbc_lib.dedup.stages import components

__all__ = ["DUPLICATE_COLUMNS", "PAIR_COLUMNS", "LESION_COLUMNS", "group_table", "lesion_table", "duplicates_table",
           "write_audit", "summary"]

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


def _connected(nodes, edges) -> bool:
    """Whether ``edges`` (pairs of nodes) connect every node of a small group."""
    at = {k: n for n, k in enumerate(nodes)}
    ends = [(at[u], at[v]) for u, v in edges]
    return len(set(components(len(at), [u for u, _ in ends], [v for _, v in ends]))) == 1


class _Columns:
    """The index's columns as plain arrays (row lookups in a loop, without pandas' per-cell cost)."""

    def __init__(self, index, root: Path):
        self.cls, self.id = index["class"].to_numpy(), index["id"].to_numpy()
        self.height, self.width = index["height"].to_numpy(), index["width"].to_numpy()
        self._images, self._root = list(index["image"]), root

    def file(self, k: int) -> str:
        return Path(self._images[k]).relative_to(self._root).as_posix()

    def classes(self, members) -> list[str]:
        return sorted({self.cls[k] for k in members}, key=CLASSES.index)


def group_table(index, pairs, groups: list[list[int]], root: Path):
    """The same-scan group table of a search (``AuditResult.groups`` before ``lesion_group`` is added).

    Args:
        index: the search's index (columns ``class``, ``id``, ``image``, ``height``, ``width``).
        pairs: the scored pairs (:data:`PAIR_COLUMNS` ``i``, ``j``, ``group``, ``method``,
            ``duplicate``, ``score``, ``mask_iou``).
        groups: each multi-image group as a list of rows of ``index``; group numbers are 1, 2, ... in
            this order.
        root: the BUSI folder, for the files' relative paths.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`DUPLICATE_COLUMNS` without ``lesion_group``, plus
        ``row``: one row per member of each group (see :class:`~mtbc_lib.dedup.search.AuditResult`).
    """
    import pandas as pd

    col = _Columns(index, root)
    inside = pairs[pairs["group"] > 0]
    i, j, grp = inside["i"].to_numpy(), inside["j"].to_numpy(), inside["group"].to_numpy()
    whole, dup = (inside["method"] == "whole-image").to_numpy(), inside["duplicate"].to_numpy()
    score, iou = inside["score"].to_numpy(), inside["mask_iou"].to_numpy()
    rows = []
    for g, m in enumerate(groups, start=1):
        at = grp == g
        w = at & whole
        # "whole-image" if the whole-image SSIM edges alone connect the group
        method = "whole-image" if _connected(m, zip(i[w], j[w])) else "extended"
        cls = col.classes(m)
        conflict = len(cls) > 1
        rep = max(m, key=lambda k: (col.height[k] * col.width[k], -col.id[k]))
        by_whole = set(i[w]) | set(j[w])
        for k in m:
            rows.append({
                "group": g, "class": col.cls[k], "id": int(col.id[k]), "file": col.file(k), "size": len(m),
                "method": method, "linked_by": "whole-image" if k in by_whole else "extended",
                "label_conflict": conflict, "classes": "+".join(cls),
                "height": int(col.height[k]), "width": int(col.width[k]),
                "min_ssim": float(score[at & dup].min()), "max_ssim": float(score[at & dup].max()),
                "mask_iou_min": float(pd.Series(iou[at]).min()),  # NaN only if no pair has one
                "keep_one": (k == rep) and not conflict, "row": k})
    cols = DUPLICATE_COLUMNS[:-1] + ["row"]  # lesion_group: added by find_groups
    return pd.DataFrame(rows, columns=cols)


def lesion_table(index, pairs, lesion_of: np.ndarray, group_of: np.ndarray, root: Path):
    """The lesion group table of a search (``AuditResult.lesions``).

    Args:
        index: the search's index (columns ``class``, ``id``, ``image``, ``height``, ``width``).
        pairs: the scored pairs (:data:`PAIR_COLUMNS` ``same_lesion``, ``lesion_group``,
            ``lesion_ssim``).
        lesion_of: ``(N,)`` lesion group number of each row of ``index`` (1, 2, ...; 0 or less: in
            none).
        group_of: ``(N,)`` same-scan group number of each row (-1: in none).
        root: the BUSI folder, for the files' relative paths.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`LESION_COLUMNS`, one row per image of a lesion
        group, by lesion group.
    """
    import pandas as pd

    col = _Columns(index, root)
    rows = []
    weakest_of = pairs[pairs["same_lesion"] & (pairs["lesion_group"] > 0)].groupby("lesion_group")["lesion_ssim"].min()
    members = {}
    for k in np.flatnonzero(lesion_of > 0):
        members.setdefault(int(lesion_of[k]), []).append(int(k))
    for lg in range(1, int(lesion_of.max(initial=0)) + 1):
        m = members[lg]
        cls = col.classes(m)
        weakest = float(weakest_of.get(lg, np.nan))
        for k in m:
            rows.append({"lesion_group": lg, "class": col.cls[k], "id": int(col.id[k]), "file": col.file(k),
                         "lesion_size": len(m), "group": int(group_of[k]), "classes": "+".join(cls),
                         "min_lesion_ssim": weakest, "row": int(k)})
    return pd.DataFrame(rows, columns=LESION_COLUMNS)


def duplicates_table(result):
    """What ``duplicates.csv`` holds.

    Args:
        result: an :class:`~mtbc_lib.dedup.search.AuditResult`.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`DUPLICATE_COLUMNS`: one row per image of a
        multi-image same-scan group, then one row per image that shares only its lesion with other
        images (empty same-scan columns, ``lesion_group`` set), ordered by lesion group; ``group``,
        ``size`` and ``lesion_group`` are nullable integers.
    """
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


def write_audit(result, out_dir, curation: str = "drop-all") -> dict[str, Path]:
    """Write a search's result as CSV files, each atomically.

    Args:
        result: an :class:`~mtbc_lib.dedup.search.AuditResult`.
        out_dir: the folder to write into (created if missing).
        curation: the rule of ``curated.csv``'s keep-list (:data:`~mtbc_lib.dedup.search.RULES`).

    Returns:
        ``{"duplicates": path, "pairs": path, "curated": path}``: ``duplicates.csv``
        (:func:`duplicates_table`), ``pairs.csv`` (every scored pair) and ``curated.csv`` (the keep-list
        in the published ``class;id`` format).

    Raises:
        ValueError: ``curation`` is not a rule of :data:`~mtbc_lib.dedup.search.RULES`.
    """
    from mtbc_lib.data.busi import write_keep_list

    keep = result.keep(curation)
    out = Path(out_dir)
    paths = {"duplicates": out / "duplicates.csv", "pairs": out / "pairs.csv", "curated": out / "curated.csv"}
    dup = duplicates_table(result)
    atomic_write(paths["duplicates"], lambda p: dup.to_csv(p, index=False, float_format="%.4f", lineterminator="\n"))
    pairs = result.pairs.drop(columns=["i", "j"]).rename(columns={"name_i": "image_i", "name_j": "image_j"})
    atomic_write(paths["pairs"], lambda p: pairs.to_csv(p, index=False, float_format="%.4f", lineterminator="\n"))
    write_keep_list(keep, paths["curated"])
    return paths


def summary(result) -> str:
    """A few lines summing up a search's result.

    Args:
        result: an :class:`~mtbc_lib.dedup.search.AuditResult`.

    Returns:
        Newline-joined text: images, groups by size and method, label conflicts, keep-list sizes,
        the lesion groups (when searched), the setting and the search's total time in seconds.
    """
    g = result.groups.drop_duplicates("group")
    sizes = result.group_sizes()
    names = {2: "duplets", 3: "triplets", 4: "quadruplets"}
    parts = ", ".join(f"{v} {names.get(k, f'groups of {k}')}" for k, v in sorted(sizes.items(), reverse=True))
    return "\n".join([
        f"{result.counts['images']} images: {len(g)} groups ({parts}) holding {len(result.groups)} images",
        f"  whole-image SSIM alone connects {int((g['method'] == 'whole-image').sum())} groups; "
        f"{int((g['method'] == 'extended').sum())} need the aligned overlap (crops/rescales)",
        f"  label conflicts: {int(g['label_conflict'].sum())} groups "
        f"({int(result.groups['label_conflict'].sum())} images)",
        f"  keep-list 'drop-all': {len(result.keep('drop-all'))} images; 'keep-one': {len(result.keep('keep-one'))}",
        *([_lesion_line(result)] if result.lesions is not None and result.config.lesion else []),
        f"  setting: {result.config.size}x{result.config.size} {result.config.resample} grey, "
        f"SSIM >= {result.config.threshold}; {result.timings.get('total', float('nan')):.1f} s",
    ])


def _lesion_line(result) -> str:
    les = result.lesions
    alone = les[les["group"] < 0]
    per = alone["class"].value_counts()
    by_class = ", ".join(f"{int(per[c])} {c}" for c in CLASSES if c in per) or "none"
    return (f"  same lesion (coarse aligned SSIM >= {result.config.lesion_threshold}, same class): "
            f"{les['lesion_group'].nunique()} lesion groups holding {len(les)} images; "
            f"{len(alone)} of them in no same-scan group ({by_class}), in "
            f"{alone['lesion_group'].nunique()} lesion groups")

