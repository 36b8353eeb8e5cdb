"""Reading a duplicate search (:func:`mtbc_lib.dedup.search.find_groups`): the tables of the
dataset-audit chapter (notebooks/dataset_audit.ipynb) and of the duplicate explorer
(notebooks/duplicate_explorer.ipynb, mtbc_lib.report.explorer): agreement with the published
keep-list, class counts, threshold calibration and margin, label and mask conflicts; for
the second level (frames of one lesion): its margin, threshold sweep and the lesion groups
that add images; and their figures and galleries: SSIM and lesion-score distributions, the
threshold calibration, class counts, galleries and sliders of the groups' images with their
masks outlined."""

from __future__ import annotations

import numpy as np

from mtbc_lib.core import CLASSES
from mtbc_lib.dedup.search import AuditResult, components

__all__ = ["LEVELS", "compare_published", "class_counts", "calibration_table", "calibration_summary", "threshold_margin",
           "conflict_table", "find_group", "level_table", "lesion_pairs", "lesion_margin", "lesion_threshold_table", "lesion_additions",
           "mask_overlay", "ssim_distribution", "group_gallery", "group_slider", "calibration_figure",
           "class_counts_figure", "lesion_distribution", "lesion_threshold_figure", "pair_gallery"]

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

    from mtbc_lib.data.busi import PUBLISHED_KEEP_LIST, read_keep_list

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

    from mtbc_lib.data.busi import PUBLISHED_KEEP_LIST, read_keep_list

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


# ----------------------------------------------------------------------------- figures

def mask_overlay(image, mask, height: int | None = None, colour=(255, 60, 60)):
    """A grey image as RGB with its mask outlined in ``colour``.

    image: (H, W) uint8; mask: (H, W) bool; height: resize so the result is this many
    pixels high (aspect kept; nearest neighbour for the mask). Returns (h, w, 3) uint8."""
    from PIL import Image
    from scipy import ndimage as ndi

    image = np.asarray(image, dtype=np.uint8)
    mask = np.asarray(mask, dtype=bool)
    if image.shape != mask.shape:
        raise ValueError(f"mask_overlay: image {image.shape} and mask {mask.shape} differ; expected one size")
    if height is not None and height != image.shape[0]:
        w = max(1, round(image.shape[1] * height / image.shape[0]))
        image = np.asarray(Image.fromarray(image).resize((w, height), Image.Resampling.BOX))
        mask = np.asarray(Image.fromarray(mask).resize((w, height), Image.Resampling.NEAREST))
    rgb = np.repeat(image[..., None], 3, axis=2)
    edge = mask & ~ndi.binary_erosion(mask, iterations=max(1, image.shape[0] // 150))
    rgb[edge] = colour
    return rgb


def _member_tiles(result, group: int, height: int, level: str = "scan"):
    """[(RGB tile, caption)] of a group's members (a same-scan or a lesion group, see
    LEVELS), in the table's order; a lesion group's captions name each member's copies."""
    from mtbc_lib.data.busi import read_image, read_mask

    table, col = level_table(result, level)
    g = table[table[col] == group]
    if g.empty:
        what = "duplicate group" if level == "scan" else "lesion group"
        raise ValueError(f"group {group}: no such {what} (valid: 1..{table[col].max()})")
    tiles = []
    for _, r in g.iterrows():
        row = result.index.loc[int(r["row"])]
        h, w = result.index.at[int(r["row"]), "height"], result.index.at[int(r["row"]), "width"]
        copy = "" if level == "scan" else (f", copies: group {r['group']}" if r["group"] > 0 else "")
        tiles.append((mask_overlay(read_image(row["image"]), read_mask(row["masks"]), height),
                      f"{row['name']} ({w}x{h}{copy})"))
    return tiles


def _group_caption(result, group: int, level: str) -> tuple[str, bool]:
    """(one-line description, label conflict) of a same-scan or lesion group."""
    if level == "scan":
        info = result.groups[result.groups["group"] == group].iloc[0]
        return (f"{info['classes']}, {info['method']}, SSIM {info['min_ssim']:.3f}-{info['max_ssim']:.3f}, "
                f"mask IoU >= {info['mask_iou_min']:.2f}"), bool(info["label_conflict"])
    g = result.lesions[result.lesions["lesion_group"] == group]
    copies = sorted(int(x) for x in g["group"].unique() if x > 0)
    weakest = g["min_lesion_ssim"].iloc[0]
    link = f"weakest lesion link {weakest:.3f}" if weakest == weakest else "copies only"
    return (f"{g['classes'].iloc[0]}, {len(g)} images, {link}, same-scan groups: "
            f"{', '.join(map(str, copies)) or 'none'}"), "+" in g["classes"].iloc[0]


def ssim_distribution(pairs, threshold: float):
    """Histogram of the SSIM of every scored pair: whole-image SSIM and, for aligned
    pairs, SSIM on the aligned overlap; log counts; the decision threshold as a line.

    pairs: ``AuditResult.pairs``. Returns a ``plotly.graph_objects.Figure``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for col, name, colour in (("plain_ssim", "whole images", "#2b6cb0"),
                              ("aligned_ssim", "aligned overlap (crops, rescales)", "#dd6b20")):
        v = pairs[col].dropna()
        fig.add_trace(go.Histogram(x=v, name=f"{name} ({len(v)} pairs)", xbins=dict(start=-0.2, end=1.0, size=0.01),
                                   marker_color=colour, opacity=0.65))
    fig.add_vline(x=threshold, line=dict(color="black", dash="dash"),
                  annotation_text=f"threshold {threshold}", annotation_position="top left")
    fig.update_layout(barmode="overlay", template="plotly_white", height=360, yaxis_type="log",
                      xaxis_title="SSIM (candidate pairs)", yaxis_title="pairs (log)",
                      margin=dict(l=10, r=10, t=30, b=40), legend=dict(orientation="h", y=1.12))
    return fig


def group_gallery(result, groups, height: int = 110, level: str = "scan", max_cols: int | None = None):
    """Groups side by side, one row per group: each member with its mask outline (red),
    file name, size; the row title gives the group's classes and scores.

    result: ``dedup.AuditResult``; groups: group numbers of ``level`` ("scan": same-scan
    groups; "lesion": lesion groups, captions naming each member's copies); max_cols:
    wrap a row after this many images. Returns a matplotlib Figure (closed, so that it is
    displayed once, as the cell's value)."""
    import matplotlib.pyplot as plt

    groups = list(groups)
    if not groups:
        raise ValueError("group_gallery: no group given")
    rows = []
    for g in groups:
        tiles = _member_tiles(result, g, height, level)
        caption, conflict = _group_caption(result, g, level)
        step = max_cols or len(tiles)
        for k in range(0, len(tiles), step):
            rows.append((tiles[k:k + step], {"group": g, "caption": caption if k == 0 else "(continued)",
                                             "conflict": conflict and k == 0}))
    cols = max(len(t) for t, _ in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.4 * len(rows)), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.06, wspace=0.04, hspace=0.42)
    for r, (tiles, info) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(tiles):
                ax.imshow(tiles[c][0])
                ax.set_title(tiles[c][1], fontsize=8)
        conflict = " - LABEL CONFLICT" if info["conflict"] else ""
        y = axes[r][0].get_position().y0
        name = "group" if level == "scan" else "lesion group"
        fig.text(0.01, y - 0.12 / len(rows), f"{name} {info['group']}{conflict}: {info['caption']}",
                 fontsize=8, ha="left", va="top")
    plt.close(fig)
    return fig


#: A 1x1 white GIF: the source of an unused image slot.
_BLANK_PIXEL = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="


def group_slider(result, groups=None, height: int = 64, quality: int = 50, level: str = "scan"):
    """A plotly figure with a slider over groups: the members side by side (small WebP
    images, JPEG if Pillow lacks WebP, with the mask outline), the title naming the
    files, classes and scores.

    result: ``dedup.AuditResult``; groups: group numbers of ``level`` ("scan" or
    "lesion"; default: all of that level). Keep ``height`` small: every image is
    embedded in the figure. Returns a ``go.Figure``."""
    import base64
    import io

    import plotly.graph_objects as go
    from PIL import Image, features
    from plotly.subplots import make_subplots

    fmt = "WEBP" if features.check("webp") else "JPEG"

    table, col = level_table(result, level)
    groups = list(table[col].unique()) if groups is None else list(groups)
    if not groups:
        raise ValueError("group_slider: no group to show")
    cols = int(table[table[col].isin(groups)][col].value_counts().max())
    steps = []
    for g in groups:
        caption, conflict = _group_caption(result, g, level)
        tiles = _member_tiles(result, g, height, level)
        uris, names = [], []
        for tile, name in tiles:
            buf = io.BytesIO()
            Image.fromarray(tile).save(buf, format=fmt, quality=quality)
            uris.append(f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode())
            names.append(name)
        blank = cols - len(tiles)
        flag = " <b>label conflict</b>" if conflict else ""
        title = (f"{'group' if level == 'scan' else 'lesion group'} {g}: " + " | ".join(names)
                 + f"<br>{caption}{flag}")
        # each step restyles the `cols` image traces (source per trace; empty slots hidden)
        steps.append(dict(method="update", label=str(g), args=[
            {"source": uris + [_BLANK_PIXEL] * blank, "visible": [True] * len(tiles) + [False] * blank,
             "hovertemplate": [n + "<extra></extra>" for n in names] + [""] * blank},
            {"title.text": title}]))
    fig = make_subplots(rows=1, cols=cols, horizontal_spacing=0.01)
    first = steps[0]["args"][0]
    for c in range(cols):
        fig.add_trace(go.Image(source=first["source"][c], visible=first["visible"][c],
                               hovertemplate=first["hovertemplate"][c]), row=1, col=c + 1)
    fig.update_layout(sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="group "), pad=dict(t=10))],
                      title=dict(text=steps[0]["args"][1]["title.text"], font=dict(size=12)), template="plotly_white",
                      height=height * 2 + 180, margin=dict(l=10, r=10, t=70, b=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def calibration_figure(table):
    """Images whose curation decision differs from the published list, per SSIM
    threshold, for whole-image SSIM and for SSIM on the common field of view.

    table: ``calibration_table(...)``. Returns a ``go.Figure``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (method, t), colour in zip(table.groupby("method", sort=False), ("#2b6cb0", "#dd6b20")):
        fig.add_trace(go.Scatter(
            x=t["threshold"], y=t["disagreements"], mode="lines+markers", name=method, marker=dict(size=4, color=colour),
            customdata=t[["extra_removed", "missed", "duplets", "triplets", "quadruplets", "larger"]].to_numpy(),
            hovertemplate=("threshold %{x}<br>%{y} images differ (%{customdata[0]} extra removed, "
                           "%{customdata[1]} missed)<br>groups: %{customdata[2]} duplets, %{customdata[3]} triplets, "
                           "%{customdata[4]} quadruplets, %{customdata[5]} larger<extra>" + method + "</extra>")))
    fig.update_layout(template="plotly_white", height=360, yaxis_type="log", xaxis_title="SSIM threshold",
                      yaxis_title="images decided unlike the published list (log)",
                      margin=dict(l=10, r=10, t=30, b=40), legend=dict(orientation="h", y=1.12))
    return fig


def class_counts_figure(counts):
    """Grouped bars: images per class in each keep-list.

    counts: ``class_counts(...)`` (classes as rows, lists as columns; a "total"
    row is ignored). Returns a matplotlib Figure (closed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = counts.drop(index="total", errors="ignore").rename_axis("class").reset_index().melt(
        id_vars="class", var_name="list", value_name="images")
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    sns.barplot(data=long, x="class", y="images", hue="list", ax=ax, palette="deep")
    for c in ax.containers:
        ax.bar_label(c, fontsize=7)
    ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("")
    sns.despine(fig)
    fig.tight_layout()
    plt.close(fig)
    return fig


def lesion_distribution(result):
    """Histogram of the lesion score (coarse SSIM of the aligned overlap) of every scored
    pair outside one same-scan group: pairs of one class, and pairs of different classes
    (which cannot show one lesion, label conflicts aside: the null); the lesion threshold
    as a line. Returns a ``go.Figure``."""
    import plotly.graph_objects as go

    p = lesion_pairs(result)
    fig = go.Figure()
    for kind, colour in (("same class", "#2f855a"), ("different classes", "#9b2c2c")):
        v = p.loc[p["kind"] == kind, "lesion_ssim"]
        fig.add_trace(go.Histogram(x=v, name=f"{kind} ({len(v)} pairs)", xbins=dict(start=-0.2, end=1.0, size=0.01),
                                   marker_color=colour, opacity=0.65))
    t = result.config.lesion_threshold
    fig.add_vline(x=t, line=dict(color="black", dash="dash"), annotation_text=f"lesion threshold {t}",
                  annotation_position="top left")
    fig.update_layout(barmode="overlay", template="plotly_white", height=360, yaxis_type="log",
                      xaxis_title=f"SSIM of the aligned overlap at {result.config.lesion_size}x"
                                  f"{result.config.lesion_size} px (candidate pairs, copies excluded)",
                      yaxis_title="pairs (log)", margin=dict(l=10, r=10, t=30, b=40),
                      legend=dict(orientation="h", y=1.12))
    return fig


def lesion_threshold_figure(table, threshold: float):
    """Images the lesion relation adds to the copies' groups, and the largest lesion
    group, per lesion threshold; the chosen threshold as a line.

    table: ``lesion_threshold_table(...)``. Returns a ``go.Figure``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for col, name, colour in (("added_images", "images added to the copies' groups", "#2f855a"),
                              ("largest", "images in the largest lesion group", "#9b2c2c"),
                              ("copy_groups_merged", "same-scan groups joined to another", "#2b6cb0")):
        fig.add_trace(go.Scatter(x=table["threshold"], y=table[col], mode="lines+markers", name=name,
                                 marker=dict(size=4, color=colour), line=dict(color=colour)))
    fig.add_vline(x=threshold, line=dict(color="black", dash="dash"), annotation_text=f"lesion threshold {threshold}",
                  annotation_position="top right")
    fig.update_layout(template="plotly_white", height=360, yaxis_type="log", xaxis_title="lesion threshold",
                      yaxis_title="images / groups (log)", margin=dict(l=10, r=10, t=30, b=40),
                      legend=dict(orientation="h", y=1.15))
    return fig


def pair_gallery(result, pairs, height: int = 100, cols: int = 3):
    """Image pairs side by side (mask outlines in red), ``cols`` pairs a row, each titled
    with its two names, lesion score and whether it is a same-lesion link: the evidence
    around the lesion threshold.

    pairs: rows of ``result.pairs`` (e.g. from :func:`lesion_margin`, with ``name_i``,
    ``name_j``, ``lesion_ssim``, ``same_lesion``). Returns a matplotlib Figure (closed)."""
    import matplotlib.pyplot as plt

    from mtbc_lib.data.busi import read_image, read_mask

    pairs = list(pairs[["name_i", "name_j", "lesion_ssim", "same_lesion"]].itertuples(index=False))
    if not pairs:
        raise ValueError("pair_gallery: no pair given")
    rows_of = dict(zip(result.index["name"], result.index.index))
    nrow = -(-len(pairs) // cols)
    fig, axes = plt.subplots(nrow, 2 * cols, figsize=(2.3 * 2 * cols, 2.3 * nrow), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.02, wspace=0.04, hspace=0.35)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (a, b, score, linked) in enumerate(pairs):
        for side, name in enumerate((a, b)):
            row = result.index.loc[rows_of[name]]
            ax = axes[k // cols][2 * (k % cols) + side]
            ax.imshow(mask_overlay(read_image(row["image"]), read_mask(row["masks"]), height))
            ax.set_title(name + (f"  ({score:.3f}, {'linked' if linked else 'apart'})" if side == 0 else ""),
                         fontsize=8, loc="left")
    plt.close(fig)
    return fig

