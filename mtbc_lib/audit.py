"""Reading a duplicate search (:func:`mtbc_lib.dedup.find_groups`): the tables of the
dataset-audit chapter (notebooks/dataset_audit.ipynb) and of the duplicate explorer
(notebooks/duplicate_explorer.ipynb, mtbc_lib.widgets): agreement with the published
keep-list, class counts, threshold calibration and margin, label and mask conflicts; for
the second level (frames of one lesion): its margin, threshold sweep and the lesion groups
that add images. Their figures and galleries: :mod:`mtbc_lib.audit_figures`."""

from __future__ import annotations

import numpy as np

from mtbc_lib.config import CLASSES
from mtbc_lib.dedup import AuditResult, components

__all__ = ["LEVELS", "compare_published", "class_counts", "calibration_table", "calibration_summary", "threshold_margin",
           "conflict_table", "find_group", "level_table", "lesion_pairs", "lesion_margin", "lesion_threshold_table", "lesion_additions"]

#: Levels of grouping: "scan" (same-scan groups, ``AuditResult.groups``) and "lesion"
#: (lesion groups, ``AuditResult.lesions``).
LEVELS = ("scan", "lesion")


def compare_published(result: AuditResult, keep=None):
    """Images on which the ``drop-all`` rule (drop every group member) disagrees with a
    keep-list (default: the published Curated BUSI v1 list), with the evidence.

    Returns a DataFrame: ``class, id, name, ours, published, group, partners, evidence``
    (``partners``: the group's other members; ``evidence``: the image's best scored
    pair, whole-image and aligned SSIM)."""
    import pandas as pd

    from mtbc_lib.data import PUBLISHED_KEEP_LIST, read_keep_list

    keep = read_keep_list(PUBLISHED_KEEP_LIST) if keep is None else set(keep)
    ours = result.keep("drop-all")
    idx = result.index
    rows = []
    for k in range(len(idx)):
        key = (idx.at[k, "class"], int(idx.at[k, "id"]))
        if (key in ours) == (key in keep):
            continue
        g = result.groups[result.groups["row"] == k]
        group = int(g["group"].iloc[0]) if len(g) else -1
        partners = ", ".join(result.index.at[r, "name"] for r in result.groups.loc[
            result.groups["group"] == group, "row"] if r != k) if group > 0 else ""
        mine = result.pairs[(result.pairs["i"] == k) | (result.pairs["j"] == k)]
        if len(mine):
            best = mine.loc[mine["score"].idxmax()]
            other = best["name_j"] if best["i"] == k else best["name_i"]
            ev = (f"best pair {other}: whole-image SSIM {best['plain_ssim']:.3f}, aligned SSIM "
                  f"{best['aligned_ssim']:.3f} (threshold {result.config.threshold})")
        else:
            ev = "no candidate pair (no similar thumbnail, no keypoint match)"
        rows.append({"class": key[0], "id": key[1], "name": idx.at[k, "name"],
                     "ours": "kept" if key in ours else "removed",
                     "published": "kept" if key in keep else "removed",
                     "group": group, "partners": partners, "evidence": ev})
    return pd.DataFrame(rows, columns=["class", "id", "name", "ours", "published", "group", "partners", "evidence"])


def class_counts(result: AuditResult, keep_lists: dict):
    """Images per class: all, and kept by each named keep-list ({name: set of pairs}).
    Returns a DataFrame indexed by class (plus a "total" row)."""
    import pandas as pd

    idx = result.index
    data = {"all": idx["class"].value_counts()}
    for name, keep in keep_lists.items():
        kept = [c for c, i in zip(idx["class"], idx["id"]) if (c, int(i)) in keep]
        data[name] = pd.Series(kept, dtype=object).value_counts()
    out = pd.DataFrame(data).reindex(list(CLASSES)).fillna(0).astype(int)
    out.loc["total"] = out.sum()
    return out


def calibration_table(result: AuditResult, keep=None, thresholds=None):
    """How well each threshold reproduces a keep-list (default: the published one) when
    groups come from whole-image SSIM only ("whole images") or from whole-image or
    aligned-overlap SSIM ("common field of view"): per threshold and method, the number
    of images whose drop-all decision (drop every member) differs, and the group sizes.

    Exact for whole-image SSIM down to the candidate filter's margin (pairs with SSIM >=
    0.7 are all candidates on BUSI, see bench_dedup.py). Returns a long DataFrame."""
    import pandas as pd

    from mtbc_lib.data import PUBLISHED_KEEP_LIST, read_keep_list

    keep = read_keep_list(PUBLISHED_KEEP_LIST) if keep is None else set(keep)
    thresholds = np.round(np.arange(0.70, 0.995, 0.005), 3) if thresholds is None else thresholds
    idx = result.index
    n = len(idx)
    removed = np.array([(c, int(i)) not in keep for c, i in zip(idx["class"], idx["id"])])
    p = result.pairs
    rows = []
    for method, score in (("whole images", p["plain_ssim"].to_numpy()),
                          ("common field of view", p["score"].to_numpy())):
        for t in thresholds:
            e = np.nan_to_num(score, nan=-np.inf) >= t
            lab = components(n, p["i"].to_numpy()[e], p["j"].to_numpy()[e])
            size = np.bincount(lab)[lab]
            grouped = size >= 2
            counts = np.bincount(np.bincount(lab)[np.bincount(lab) >= 2], minlength=5)
            rows.append({"method": method, "threshold": float(t), "disagreements": int((grouped != removed).sum()),
                         "extra_removed": int((grouped & ~removed).sum()),
                         "missed": int((~grouped & removed).sum()), "images_in_groups": int(grouped.sum()),
                         "duplets": int(counts[2]), "triplets": int(counts[3]), "quadruplets": int(counts[4]),
                         "larger": int(counts[5:].sum())})
    return pd.DataFrame(rows)


def _images(n) -> str:
    return f"{int(n)} image{'' if int(n) == 1 else 's'}"


def calibration_summary(result: AuditResult, calibration) -> str:
    """The reading of :func:`calibration_table` (computed, in Markdown): how far apart
    whole-image SSIM puts copies and other images, its fewest disagreements with the
    keep-list, and the range of thresholds around the search's own where the common field
    of view disagrees least, with what those disagreements are."""
    p = result.pairs
    dup = p["duplicate"].to_numpy(bool)
    best = calibration.groupby("method")["disagreements"].min()
    fov = calibration[calibration["method"] == "common field of view"].sort_values("threshold").reset_index(drop=True)
    at_best = (fov["disagreements"] == best["common field of view"]).to_numpy()
    k = int(np.argmin(np.abs(fov["threshold"].to_numpy() - result.config.threshold)))
    lo = hi = k
    if at_best[k]:  # the run of best thresholds that holds the search's own
        while lo > 0 and at_best[lo - 1]:
            lo -= 1
        while hi < len(fov) - 1 and at_best[hi + 1]:
            hi += 1
    row = fov.iloc[k]
    held = ("hold every image the keep-list removes" if row["missed"] == 0
            else f"miss {_images(row['missed'])} the keep-list removes")
    extra = f", plus {_images(row['extra_removed'])} it keeps (below)" if row["extra_removed"] else ""
    if not at_best[k]:
        span = f"at the search's threshold {result.config.threshold:g} it decides {_images(row['disagreements'])} differently"
    else:
        span = (f"every threshold from {fov.at[lo, 'threshold']:.3f} to {fov.at[hi, 'threshold']:.3f} decides only "
                f"{_images(best['common field of view'])} differently")
    return (f"Whole-image SSIM never comes close: copies of one scan score as low as "
            f"{p.loc[dup, 'plain_ssim'].min():.2f} once both are stretched to a square (a crop against its "
            f"original), while images that are not copies score up to {p.loc[~dup, 'plain_ssim'].max():.2f} (frames "
            f"of one loop); at its best threshold it still decides {_images(best['whole images'])} unlike the "
            f"keep-list. On the common field of view, {span}: its groups {held}{extra}.")


def threshold_margin(result: AuditResult, k: int = 6):
    """The ``k`` lowest-scoring same-scan pairs and the ``k`` highest-scoring other pairs:
    how much room the threshold has. Returns a DataFrame."""
    p = result.pairs
    cols = ["name_i", "name_j", "plain_ssim", "aligned_ssim", "score", "duplicate"]
    import pandas as pd

    return pd.concat([p[p["duplicate"]].nsmallest(k, "score")[cols],
                      p[~p["duplicate"]].nlargest(k, "score")[cols]]).sort_values("score", ascending=False)


def conflict_table(result: AuditResult, max_iou: float | None = None):
    """One row per group with a label conflict (or, with ``max_iou``, per group whose
    members' masks agree less than that): members with their class, the lowest mask IoU."""
    import pandas as pd

    g = result.groups
    pick = g["label_conflict"] if max_iou is None else g["mask_iou_min"] < max_iou
    rows = []
    for gid, m in g[pick].groupby("group"):
        rows.append({"group": gid, "members": ", ".join(result.index.loc[m["row"], "name"]),
                     "classes": m["classes"].iloc[0], "method": m["method"].iloc[0],
                     "min_ssim": m["min_ssim"].iloc[0], "mask_iou_min": m["mask_iou_min"].iloc[0]})
    return pd.DataFrame(rows, columns=["group", "members", "classes", "method", "min_ssim", "mask_iou_min"])


def find_group(result: AuditResult, name: str) -> int:
    """The group number of an image given by name (e.g. "benign (42)"); -1 if none."""
    rows = result.index.index[result.index["name"] == name]
    if not len(rows):
        raise ValueError(f"no image named {name!r}; expected e.g. 'benign (42)'")
    g = result.groups.loc[result.groups["row"] == rows[0], "group"]
    return int(g.iloc[0]) if len(g) else -1


def level_table(result, level: str):
    """(table, group column) of a level of grouping (LEVELS)."""
    if level not in LEVELS:
        raise ValueError(f"level={level!r}; expected one of {', '.join(LEVELS)}")
    if level == "lesion":
        if result.lesions is None:
            raise ValueError("level='lesion': this search has no lesion groups (DedupConfig(lesion=True))")
        return result.lesions, "lesion_group"
    return result.groups, "group"


def lesion_pairs(result):
    """The pairs with a lesion score, with ``kind``: "same class" or "different classes"."""
    p = result.pairs[result.pairs["lesion_ssim"].notna()]
    cls = result.index["class"].to_numpy()
    same = cls[p["i"].to_numpy()] == cls[p["j"].to_numpy()]
    return p.assign(kind=np.where(same, "same class", "different classes"))


def lesion_margin(result, k: int = 6):
    """The room the lesion threshold has: the ``k`` weakest same-lesion links, the ``k``
    strongest same-class pairs left in different lesion groups (a pair whose images other
    links already join is no test of the threshold), and the ``k`` strongest pairs of
    different classes. Returns a DataFrame (``kind`` says which)."""
    import pandas as pd

    p = lesion_pairs(result)
    cols = ["kind", "name_i", "name_j", "score", "lesion_ssim", "same_lesion"]
    same = p[p["kind"] == "same class"]
    parts = [same[same["same_lesion"]].nsmallest(k, "lesion_ssim").assign(kind="weakest lesion links"),
             same[same["lesion_group"] < 0].nlargest(k, "lesion_ssim").assign(kind="strongest unlinked, same class"),
             p[p["kind"] == "different classes"].nlargest(k, "lesion_ssim").assign(kind="strongest, different classes")]
    return pd.concat(parts)[cols].reset_index(drop=True)


def lesion_threshold_table(result, thresholds=None):
    """Lesion groups per lesion threshold (same-scan edges kept, same-lesion edges =
    same-class pairs at or above the threshold): groups, images in them, images they add
    to the same-scan groups (per class), the largest group, and the number of same-scan
    groups merged with another. Returns a DataFrame, one row per threshold."""
    import pandas as pd

    thresholds = np.round(np.arange(0.70, 0.96, 0.005), 3) if thresholds is None else thresholds
    n = len(result.index)
    p = result.pairs
    cls = result.index["class"].to_numpy()
    same = cls[p["i"].to_numpy()] == cls[p["j"].to_numpy()]
    copy = p["duplicate"].to_numpy()
    lesion = np.nan_to_num(p["lesion_ssim"].to_numpy(), nan=-np.inf)
    in_copies = np.zeros(n, bool)
    in_copies[result.groups["row"].to_numpy()] = True
    copy_group = np.full(n, -1)
    copy_group[result.groups["row"].to_numpy()] = result.groups["group"].to_numpy()
    rows = []
    for t in thresholds:
        e = copy | (same & ~copy & (lesion >= t))
        lab = components(n, p["i"].to_numpy()[e], p["j"].to_numpy()[e])
        size = np.bincount(lab)[lab]
        grouped = size >= 2
        added = grouped & ~in_copies
        merged = 0
        for comp in np.unique(lab[in_copies]):
            merged += len(set(copy_group[(lab == comp) & in_copies])) > 1
        row = {"threshold": float(t), "lesion_groups": int(len(np.unique(lab[grouped]))),
               "images_in_groups": int(grouped.sum()), "added_images": int(added.sum())}
        row.update({f"added_{c}": int((added & (cls == c)).sum()) for c in CLASSES})
        row.update({"groups_with_added": int(len(np.unique(lab[added]))), "largest": int(size.max(initial=0)),
                    "copy_groups_merged": int(merged)})
        rows.append(row)
    return pd.DataFrame(rows)


def lesion_additions(result):
    """The lesion groups that go beyond the copies: those holding an image of no same-scan
    group, or joining several same-scan groups. One row per lesion group: its members
    (``name [copy group]``), class(es), images added, same-scan groups joined, weakest
    lesion link. Returns a DataFrame."""
    import pandas as pd

    les = result.lesions
    rows = []
    for lg, g in les.groupby("lesion_group"):
        copies = sorted({int(x) for x in g["group"] if x > 0})
        added = int((g["group"] < 0).sum())
        if not added and len(copies) < 2:
            continue
        names = [result.index.at[int(r), "name"] + (f" [{int(c)}]" if c > 0 else "")
                 for r, c in zip(g["row"], g["group"])]
        rows.append({"lesion_group": int(lg), "members": ", ".join(names), "classes": g["classes"].iloc[0],
                     "images": len(g), "added": added, "copy_groups": ", ".join(map(str, copies)),
                     "weakest_link": g["min_lesion_ssim"].iloc[0]})
    return pd.DataFrame(rows, columns=["lesion_group", "members", "classes", "images", "added", "copy_groups",
                                       "weakest_link"])

