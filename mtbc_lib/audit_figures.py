"""Figures and galleries of a duplicate search (:func:`mtbc_lib.dedup.find_groups`) for the
dataset-audit chapter and the duplicate explorer: SSIM and lesion-score distributions, the
threshold calibration, class counts, and galleries / sliders of the groups' images with
their masks outlined. The tables they draw: :mod:`mtbc_lib.audit`."""

from __future__ import annotations

import numpy as np

from mtbc_lib.audit import lesion_pairs, level_table

__all__ = ["mask_overlay", "ssim_distribution", "group_gallery", "group_slider", "calibration_figure",
           "class_counts_figure", "lesion_distribution", "lesion_threshold_figure", "pair_gallery"]

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
    from mtbc_lib.data import read_image, read_mask

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

    from mtbc_lib.data import read_image, read_mask

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

