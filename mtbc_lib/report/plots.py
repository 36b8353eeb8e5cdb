"""Figures of the training runs and the results chapter: seaborn/matplotlib for static
ones, plotly for interactive ones, and how plotly figures reach the static book. The
dataset audit's figures are in :mod:`mtbc_lib.report.audit`."""

from __future__ import annotations

import json

from IPython.display import display

from mtbc_lib.refine import refined_mask

#: Plotly's own MIME type (JupyterLab renders it natively; the book through PlotlyMimeRenderer).
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def plotly_html(fig) -> str:
    """A figure as an HTML fragment: a div plus a script that calls the page's
    ``Plotly`` global (plotly.js itself is not embedded)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})


def show_plotly(fig) -> None:
    """Display a plotly figure so that it survives into the static book.

    Emits one output with two representations: ``text/html`` (a div and a script that
    calls the page's ``Plotly`` global, without embedding plotly.js: the book loads
    plotly.js once for every page) and plotly's own JSON MIME type, which JupyterLab
    renders natively. Jupyter Book picks the HTML one.
    """
    display({PLOTLY_MIME: json.loads(fig.to_json()), "text/html": plotly_html(fig)}, raw=True)


class PlotlyMimeRenderer:
    """myst-nb MIME renderer plugin for plotly's JSON MIME type (registered as the
    entry point ``plotly`` of group ``myst_nb.mime_renderers`` in pyproject.toml).

    myst-nb renders every representation of an output before choosing one, and warns
    (an error in the strict build) on a type it does not know. This plugin turns
    plotly's JSON into the same HTML as :func:`plotly_html`; in HTML builds it ranks
    just after ``text/html``, so show_plotly's HTML is used when present and a bare
    ``fig.show()`` output still appears in the book instead of vanishing.
    """

    mime_priority_overrides = [(builder, PLOTLY_MIME, 35) for builder in ("html", "dirhtml", "singlehtml")]

    @staticmethod
    def handle_mime(renderer, data, inline):
        """docutils nodes for ``data`` (a myst_nb MimeData), or None to decline."""
        if inline or data.mime_type != PLOTLY_MIME:
            return None
        import dataclasses

        import plotly.io as pio

        content = data.content if isinstance(data.content, dict) else json.loads(data.string)
        fig = pio.from_json(json.dumps(content), skip_invalid=True)
        return renderer.render_text_html(dataclasses.replace(data, mime_type="text/html", content=plotly_html(fig)))


# --------------------------------------------------------------------------- training runs
# (used by notebooks/train.ipynb; data come from mtbc_lib.engine.runs.load_run)

def training_curves(history):
    """Loss, Dice and accuracy per epoch, training (dashed) and validation (solid), one
    colour per fold; the best epoch of each fold (lowest validation loss) is marked.

    ``history``: ``runs.load_run(...).history`` (columns ``fold``, ``epoch``,
    ``train_loss``, ``val_loss``, ``train_dice``, ``val_dice``, ``train_acc``,
    ``val_acc``); metrics a task does not have (all NaN) are left out.
    Returns a ``plotly.graph_objects.Figure``."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    if history is None or len(history) == 0:
        raise ValueError("history: no epochs recorded yet (train at least one epoch)")
    panels = [(m, t) for m, t in (("loss", "loss"), ("dice", "Dice (binarised, per image)"),
                                  ("acc", "accuracy")) if history[f"val_{m}"].notna().any()]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    colours = qualitative.D3
    for i, (fold, h) in enumerate(history.groupby("fold", sort=True)):
        c = colours[i % len(colours)]
        best = h.loc[h["val_loss"].idxmin()]
        for j, (m, _) in enumerate(panels, start=1):
            for split, dash in (("train", "dash"), ("val", "solid")):
                fig.add_trace(go.Scatter(
                    x=h["epoch"], y=h[f"{split}_{m}"], mode="lines", line=dict(color=c, dash=dash, width=1.5),
                    name=f"fold {fold} {split}", legendgroup=f"fold {fold} {split}", showlegend=j == 1,
                    hovertemplate=f"fold {fold} {split}<br>epoch %{{x}}<br>{m} %{{y:.3f}}<extra></extra>"),
                    row=1, col=j)
            fig.add_trace(go.Scatter(x=[best["epoch"]], y=[best[f"val_{m}"]], mode="markers",
                                     marker=dict(color=c, size=8, symbol="star"), showlegend=False,
                                     hovertemplate=f"fold {fold}: best epoch %{{x}}<extra></extra>"),
                          row=1, col=j)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=380, template="plotly_white", margin=dict(l=10, r=10, t=40, b=40),
                      legend=dict(orientation="h", y=-0.25))
    return fig


#: profile_curves' default panels: (history column, title).
PROFILE_PANELS = (("train_loss", "training loss"), ("val_loss", "validation loss"), ("val_dice", "validation Dice"))


def profile_curves(histories: dict, title: str = "", panels=PROFILE_PANELS, first_solid: bool = True):
    """Several trainings of one setting (profiles, or a run and a longer probe of it) or
    the settings of one grid: a metric per panel (``panels``: (history column, title);
    by default training loss, validation loss, validation Dice) per epoch, one colour per
    run and one line per fold, so a reader sees which trains steadily and which swings.
    With ``first_solid`` the first run is drawn solid and the others dashed, so a run
    that repeats another's first epochs does not hide it. A run without a panel's
    metric (a classifier's Dice) has no line there.

    ``histories``: label (a profile, a run, a setting) -> ``runs.load_run(...).history``.
    Returns a ``plotly.graph_objects.Figure``."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    if not histories:
        raise ValueError("histories: empty; expected {label: history} of at least one finished run")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    for i, (name, history) in enumerate(histories.items()):
        c = qualitative.D3[i % len(qualitative.D3)]
        solid, legend = i == 0 or not first_solid, True
        for fold, h in history.groupby("fold", sort=True):
            for j, (col, label) in enumerate(panels, start=1):
                if col not in h or h[col].isna().all():
                    continue
                fig.add_trace(go.Scatter(
                    x=h["epoch"], y=h[col], mode="lines+markers", marker=dict(size=4),
                    line=dict(color=c, width=1.5 if solid else 1.2, dash="solid" if solid else "dash"),
                    name=name, legendgroup=name, showlegend=legend,
                    hovertemplate=f"{name}, fold {fold}<br>epoch %{{x}}<br>{label} %{{y:.3f}}<extra></extra>"),
                    row=1, col=j)
                legend = False
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title or None, height=380, template="plotly_white",
                      margin=dict(l=10, r=10, t=60 if title else 40, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def _show(ax, image, truth, pred=None) -> None:
    """A grey test image on ``ax`` with its ground-truth outline (green) and a predicted
    bool mask painted translucently (red), when given."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    if truth.any():
        ax.contour(truth, levels=[0.5], colors="lime", linewidths=1)
    if pred is not None and pred.any():
        ax.imshow(np.ma.masked_where(~pred, pred), cmap=ListedColormap(["red"]), alpha=0.4, vmin=0, vmax=1)


def _check_size(arrays, run) -> None:
    """A run's masks are drawn over its own images: same size, or a one-line error."""
    size = run.config.get("image_size", 128)
    if arrays.images.shape[1:] != (size, size):
        raise ValueError(f"arrays: images are {arrays.images.shape[1]}x{arrays.images.shape[2]} px; {run.run_dir.name} "
                         f"was trained at {size}x{size} (load them with train.run_arrays(run.config))")


def prediction_examples(arrays, results, fold: int | None = None, per_class: int = 2):
    """Test images with the ground-truth outline (green) and the predicted mask (red,
    after prediction refinement when a label is predicted): per class the best and the
    worst Dice of one fold, a row per class (the first images, for a classification-only run).

    arrays: the run's ``BusiArrays``; results: ``runs.load_run(run_dir)``; fold: which
    fold (default: the first finished one). Returns a matplotlib Figure (closed, so that
    it is displayed once, as the cell's value)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from mtbc_lib.core import CLASSES

    if not results.metrics:
        raise ValueError(f"{results.run_dir}: no finished fold to show")
    _check_size(arrays, results)
    fold = min(results.metrics) if fold is None else fold
    test = results.test[results.test["fold"] == fold]
    masks = results.masks(fold)
    by_name = {n: i for i, n in enumerate(arrays.names)}
    have_masks = "masks" in masks
    pred_by_name = {str(n): k for k, n in enumerate(masks["names"])} if have_masks else {}
    picks = []
    for c in CLASSES:
        t = test[test["class"] == c]
        if t.empty:
            continue
        if have_masks:
            t = t.sort_values(["dice_pr", "name"], ascending=[False, True])
            rows = [t.iloc[0]] + ([t.iloc[-1]] if per_class > 1 and len(t) > 1 else [])
            rows += [t.iloc[k] for k in range(1, len(t) - 1)][: max(0, per_class - 2)]
        else:
            rows = [t.iloc[k] for k in range(min(per_class, len(t)))]
        picks.append(rows)
    if not picks:
        raise ValueError("test: no test image to show")
    ncols = max(map(len, picks))  # a row per class
    fig, axes = plt.subplots(len(picks), ncols, figsize=(2.6 * ncols, 2.9 * len(picks)), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in ((axes[k, j], r) for k, rows in enumerate(picks) for j, r in enumerate(rows)):
        i = by_name[r["name"]]
        m = None
        title = f"{r['name']}\ntrue {CLASSES[int(r['label'])]}"
        if have_masks:
            m = masks["masks"][pred_by_name[r["name"]]].copy()
            if not np.isnan(r.get("label_pr", np.nan)):
                m = refined_mask(m, r["label_pr"])
            title += f", DSC {r['dice_pr']:.2f}"
        _show(ax, arrays.images[i], arrays.masks[i], m)
        if "label_pr" in r and not np.isnan(r["label_pr"]):
            title += f"\npredicted {CLASSES[int(r['label_pr'])]}"
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"Fold {fold} test images\n(green: ground truth, red: prediction after refinement)", fontsize=9)
    plt.close(fig)
    return fig


def comparison_cases(st_test, mt_test):
    """Which test images :func:`comparison_examples` shows: among the lesion images (benign,
    malignant) the best, the median ("typical") and the worst Dice of the multi-task model
    after refinement, then the image that refinement helped most and the one it hurt most
    (each only if there is one; an image already shown gets both case names).
    st_test / mt_test: the runs' per-image test tables (``RunResults.test``); only images
    tested by both count. Returns a list of (case, row of mt_test)."""
    import pandas as pd

    t = mt_test.merge(st_test[["fold", "name", "dice"]].rename(columns={"dice": "dice_st"}), on=["fold", "name"])
    if t.empty:
        raise ValueError("test: the single-task and multi-task runs share no test image "
                         "(expected the same curation, seed and folds)")
    lesion = t[t["class"] != "normal"].sort_values(["dice_pr", "name"], ascending=[False, True])
    cases = []
    if len(lesion):
        cases += [("best", lesion.iloc[0]), ("typical", lesion.iloc[len(lesion) // 2]), ("worst", lesion.iloc[-1])]
    gain = (t["dice_pr"] - t["dice"]).sort_values(kind="stable")
    for case, k, sign in (("refinement helps", -1, 1), ("refinement hurts", 0, -1)):
        if len(gain) and sign * gain.iloc[k] > 0:
            row = t.loc[gain.index[k]]
            shown = [i for i, (_, r) in enumerate(cases) if r["name"] == row["name"]]
            if shown:  # already a row: name both cases there
                cases[shown[0]] = (f"{cases[shown[0]][0]}, {case}", cases[shown[0]][1])
            else:
                cases.append((case, row))
    return [(name, pd.Series(row)) for name, row in cases]


def comparison_examples(arrays, st_run, mt_run, cases_as_columns: bool = False):
    """Image with its ground truth, the single-task segmenter's mask, the multi-task
    model's mask and label before and after prediction refinement, for the cases of
    :func:`comparison_cases` (one row each; one column each when ``cases_as_columns``,
    which suits a page's text column: five cases side by side).

    arrays: the runs' ``BusiArrays`` (same curation); st_run: ``runs.load_run`` of a
    segmentation-only run (ST(Seg) or ST(Seg)+DO); mt_run: of a multi-task run. Returns a
    matplotlib Figure (closed, so that it is displayed once, as the cell's value)."""
    import matplotlib.pyplot as plt

    from mtbc_lib.core import CLASSES

    for run, what in ((st_run, "segmentation"), (mt_run, "multi-task")):
        if run.test.empty:
            raise ValueError(f"{run.run_dir}: no finished fold (expected a {what} run with test outputs)")
    if st_run.config["task"] != "seg":
        raise ValueError(f"{st_run.run_dir}: expected a segmentation-only run (task seg), got task {st_run.config['task']!r}")
    for run in (st_run, mt_run):
        _check_size(arrays, run)
    cases = comparison_cases(st_run.test, mt_run.test)
    by_name = {n: i for i, n in enumerate(arrays.names)}
    masks = {}  # (run, fold) -> {name: mask}

    def mask_of(run, fold, name):
        if (id(run), fold) not in masks:
            m = run.masks(fold)
            masks[id(run), fold] = dict(zip(map(str, m["names"]), m["masks"]))
        return masks[id(run), fold][name]

    do = ["+DO" if r.config["oversampling"] else "" for r in (st_run, mt_run)]
    cols = ["image, ground truth", f"ST(Seg){do[0]}", f"MT{do[1]}", f"MT+PR{do[1]}"]
    fig, axes = plt.subplots(len(cases), len(cols), figsize=(2.2 * len(cols), 2.35 * len(cases)), squeeze=False) \
        if not cases_as_columns else plt.subplots(len(cols), len(cases), figsize=(2.2 * len(cases), 2.2 * len(cols)),
                                                  squeeze=False)
    per_case = axes.T if cases_as_columns else axes
    for row_axes, (case, r) in zip(per_case, cases):
        if r["name"] not in by_name:
            raise ValueError(f"arrays: test image {r['name']!r} is missing (expected the runs' curation)")
        image, truth = arrays.images[by_name[r["name"]]], arrays.masks[by_name[r["name"]]]
        k, name = int(r["fold"]), r["name"]
        mt_raw = mask_of(mt_run, k, name)
        panels = [(None, f"{case}: {name}\nfold {k}, true {CLASSES[int(r['label'])]}"),
                  (mask_of(st_run, k, name), f"DSC {r['dice_st']:.2f}"),
                  (mt_raw, f"DSC {r['dice']:.2f}, says {CLASSES[int(r['pred'])]}"),
                  (refined_mask(mt_raw, r["label_pr"]), f"DSC {r['dice_pr']:.2f}, says {CLASSES[int(r['label_pr'])]}")]
        for ax, (pred, title) in zip(row_axes, panels):
            _show(ax, image, truth, pred)
            ax.set_title(title, fontsize=7.5)
            ax.set_xticks([]), ax.set_yticks([])
    if cases_as_columns:  # the panel's name left of each row
        for ax, c in zip(axes[:, 0], cols):
            ax.set_ylabel(c, fontsize=8)
    else:
        for ax, c in zip(axes[0], cols):
            ax.set_title(f"{c}\n" + ax.get_title(), fontsize=7.5)
    fig.suptitle(f"{st_run.run_dir.name} vs {mt_run.run_dir.name} (green: ground truth, red: prediction)", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- results chapter
# (used by notebooks/results.ipynb; data come from mtbc_lib.studies.ablation)

def _fold_traces(fig, per_fold: dict, metric: str, paper: dict | None, row: int, col: int) -> None:
    """Add one panel of :func:`fold_points`: each configuration's folds, mean and paper's mean."""
    import plotly.graph_objects as go

    for c, f in per_fold.items():
        if metric not in f:
            continue
        fig.add_trace(go.Scatter(x=[c] * len(f), y=f[metric], mode="markers", marker=dict(size=8, color="#1f77b4"),
                                 text=[f"fold {k}" for k in f["fold"]], showlegend=False,
                                 hovertemplate="%{x} %{text}: %{y:.3f}<extra></extra>"), row=row, col=col)
        fig.add_trace(go.Scatter(x=[c], y=[f[metric].mean()], mode="markers", showlegend=False,
                                 marker=dict(symbol="line-ew-open", size=26, color="#1f77b4", line=dict(width=2)),
                                 hovertemplate="%{x} mean: %{y:.3f}<extra></extra>"), row=row, col=col)
        if paper and metric in paper.get(c, {}):
            fig.add_trace(go.Scatter(x=[c], y=[paper[c][metric][0]], mode="markers", showlegend=False,
                                     marker=dict(symbol="diamond", size=9, color="black"),
                                     hovertemplate="%{x} paper: %{y:.3f}<extra></extra>"), row=row, col=col)


def fold_points(per_fold: dict, metrics=("dsc_avg", "f1_weighted", "acc"), paper: dict | None = None,
                title: str = "", height: int = 400):
    """One panel per metric: each configuration's fold values as points, its mean as a
    bar outline, and the paper's mean as a black diamond when ``paper`` (configuration ->
    {metric: (mean, sd)}) is given. per_fold: configuration -> ``ablation.fold_metrics``
    frame; title: the figure's title; height: in pixels. Metrics no configuration has are left
    out (a grid of classifiers only has no Dice panel). Returns a plotly Figure."""
    from plotly.subplots import make_subplots

    metrics = [m for m in metrics if any(m in f for f in per_fold.values())]
    if not metrics:
        raise ValueError("per_fold: no configuration has any of the metrics to plot")
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics), shared_yaxes=True)
    for j, m in enumerate(metrics, start=1):
        _fold_traces(fig, per_fold, m, paper, 1, j)
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(height=height, template="plotly_white", margin=dict(l=10, r=10, t=70 if title else 40, b=10),
                      title=dict(text=title, font=dict(size=13)) if title else None)
    return fig


def fold_points_by_grid(per_fold: dict, metrics=("dsc_avg", "f1_weighted", "acc"), paper: dict | None = None,
                        row_height: int = 190):
    """:func:`fold_points` of several grids in one figure: one row per grid (``per_fold``:
    row title -> {configuration -> ``ablation.fold_metrics`` frame}), one column per metric
    (titled as the book names it), the configurations' names once, under the last row.
    row_height: pixels per row. Returns a plotly Figure."""
    from plotly.subplots import make_subplots

    from mtbc_lib.metrics import metric_label

    if not per_fold:
        raise ValueError("per_fold: no grid to plot")
    metrics = [m for m in metrics if any(m in f for grid in per_fold.values() for f in grid.values())]
    if not metrics:
        raise ValueError("per_fold: no configuration has any of the metrics to plot")
    names = list(per_fold)
    fig = make_subplots(rows=len(names), cols=len(metrics), shared_yaxes=True, shared_xaxes=True,
                        vertical_spacing=0.06, horizontal_spacing=0.03,
                        column_titles=[metric_label(m) for m in metrics], row_titles=names)
    for i, name in enumerate(names, start=1):
        for j, m in enumerate(metrics, start=1):
            _fold_traces(fig, per_fold[name], m, paper, i, j)
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(tickfont=dict(size=9), tickangle=-90)
    fig.update_annotations(font=dict(size=11))
    fig.update_layout(height=130 + row_height * len(names), template="plotly_white",
                      margin=dict(l=10, r=30, t=30, b=10))
    return fig


def confusion_matrices(outputs: dict, title: str = "", per_row: int = 4):
    """Confusion matrices (counts over all test folds, rows = true class) of the
    configurations that predict a label, ``per_row`` to a row. outputs: configuration ->
    ``ablation.row_outputs`` frame. Returns a matplotlib Figure (closed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from mtbc_lib.core import CLASSES
    from mtbc_lib.metrics import confusion_matrix

    confs = [c for c, t in outputs.items() if "pred" in t]
    if not confs:
        raise ValueError("outputs: no configuration predicts a label")
    ncols = min(per_row, len(confs))
    nrows = -(-len(confs) // ncols)
    # constrained layout keeps each row's tick labels clear of the next row's titles; the axis
    # names are written once, under the bottom panel of each column and left of each row
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.3 * nrows + (0.3 if title else 0)), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(confs):]:
        ax.axis("off")
    for k, (ax, c) in enumerate(zip(axes.flat, confs)):
        cm = confusion_matrix(outputs[c]["label"], outputs[c]["pred"])
        sns.heatmap(cm, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax, xticklabels=CLASSES,
                    yticklabels=CLASSES, annot_kws={"fontsize": 8})
        ax.set_title(c, fontsize=9)
        ax.tick_params(labelsize=7.5, length=2)
        ax.set_xlabel("predicted" if k + ncols >= len(confs) else "", fontsize=8)
        ax.set_ylabel("true" if k % ncols == 0 else "", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    plt.close(fig)
    return fig


def dice_by_class(outputs: dict, title: str = ""):
    """Per-image Dice distributions by true class (box + points), one colour per
    configuration that segments. outputs: configuration -> ``ablation.row_outputs`` frame;
    title: the axes' title. Returns a matplotlib Figure (closed)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from mtbc_lib.core import CLASSES

    frames = [t.assign(configuration=c, true_class=[CLASSES[k] for k in t["label"]])
              for c, t in outputs.items() if "dice" in t]
    if not frames:
        raise ValueError("outputs: no configuration predicts a mask")
    d = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(9.5, 3.4))
    sns.boxplot(d, x="true_class", y="dice", hue="configuration", order=list(CLASSES), ax=ax, fliersize=0)
    sns.stripplot(d, x="true_class", y="dice", hue="configuration", order=list(CLASSES), ax=ax, dodge=True,
                  size=2, alpha=0.4, legend=False, palette="dark:black")
    ax.set_ylabel("Dice per image")
    ax.set_xlabel("true class")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title_fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
