"""What the leakage chapter shows of the study (:mod:`mtbc_lib.studies.leakage`): the reader's tables
(what was trained, the designs' scores, the paired differences, the label conflicts), the
figure, and the sentences computed from the numbers (the conclusion, how well the networks
fit their own training images, the comparisons inside one design)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtbc_lib.core import CLASSES
from mtbc_lib.engine.runs import training_fit
from mtbc_lib.metrics import metric_label
from mtbc_lib.report.results import grid_title
from mtbc_lib.studies.leakage import DESIGNS, DESIGNS_DIFF, FRAMES, METRICS, fold_metrics

__all__ = ["audit_group_numbers", "design_table", "summary_view", "fold_view", "paired_view", "leakage_figure",
           "label_conflict_table",
           "conclusion", "fit_note", "inside_note", "frames_note", "studies_note"]


def audit_group_numbers(data_dir=None, settings=None) -> dict[tuple[str, int], int]:
    """The number the dataset audit gives each image's same-scan group (``find_groups``'s
    ``groups``, as the audit chapter and the duplicate explorer show them), by (class, id):
    the book's one numbering of the groups. The search is cached (a second call decodes no
    image)."""
    from mtbc_lib.dedup import find_groups

    g = find_groups(data_dir, settings, progress=False).groups
    return {(c, int(i)): int(n) for c, i, n in zip(g["class"], g["id"], g["group"])}


def label_conflict_table(table: pd.DataFrame, numbers: dict | None = None) -> pd.DataFrame:
    """The images of label-conflict groups (one scan filed under two classes): the label
    it is filed under and each design's answer, group by group. ``numbers``: (class, id) ->
    the audit's group number (:func:`audit_group_numbers`), so that a group has the number
    the other chapters give it; None keeps the study's own numbers."""
    t = table[table["label_conflict"]].reset_index()
    name = [f"{c} ({i})" for c, i in zip(t["class"], t["id"])]
    group = t["group"]
    if numbers is not None:
        missing = [n for n, c, i in zip(name, t["class"], t["id"]) if (c, int(i)) not in numbers]
        if missing:
            raise ValueError(f"numbers: no audit group for {', '.join(missing)}; expected the audit of the same folder")
        group = [numbers[(c, int(i))] for c, i in zip(t["class"], t["id"])]
    return pd.DataFrame({"group": group, "image": name, "filed as": t["class"],
                         "copy in training": t["copy_in_train"].map({True: "yes", False: "no"}),
                         "image-level answer": [CLASSES[k] for k in t["pred_image"]],
                         "scan-level answer": [CLASSES[k] for k in t["pred_scan"]]}).sort_values(["group", "image"])


def design_table(design_runs: dict, table: pd.DataFrame) -> pd.DataFrame:
    """What each design trained (``design_runs``: design -> :func:`mtbc_lib.engine.runs.load_run`):
    the shared configuration, folds, epochs, training hours, and the test images that
    have a copy (image-level) or another frame of their lesion (scan-level) in their
    fold's training split."""
    from mtbc_lib.networks.registry import backbone_entry

    rows = {}
    for design, run in design_runs.items():
        c, h = run.config, run.history
        split = DESIGNS[design]
        low_res = f", first {c['low_res_epochs']} epochs at {c['image_size'] // 2}²" if c.get("low_res_epochs") else ""
        rows[design] = {
            "network": backbone_entry(c["backbone"]).title, "task": c["task"].upper(),
            "recipe": f"batch {c['batch_size']}, lr {c['lr']:g}, {c['optimizer']}, {c['schedule']}" + low_res,
            "image size": f"{c['image_size']}²", "folds": len(run.metrics),
            "epochs per fold": ", ".join(str(int(n)) for n in h.groupby("fold")["epoch"].max()),
            "training hours (wall)": f"{h['seconds'].sum() / 3600:.1f}",
            "test images": len(table),
            "with a copy in training": int(table["copy_in_train"].sum()) if split == "image" else 0,
            "with another frame of the lesion in training": int(table["frame_in_train"].sum()) if split == "scan"
            else "—"}
    return pd.DataFrame(rows)


def summary_view(summary: pd.DataFrame, designs) -> pd.DataFrame:
    """The reader's table of :func:`mtbc_lib.studies.leakage.leakage_table`: one row per metric, one
    column per design, "mean ± SD" over folds, and the number of test images."""
    t = summary[summary["design"].isin(designs)]
    view = t.pivot(index="metric", columns="design", values="value").loc[list(METRICS), list(designs)]
    sd = t.pivot(index="metric", columns="design", values="sd").loc[list(METRICS), list(designs)]
    out = pd.DataFrame({d: [f"{a:.3f} ± {b:.3f}" for a, b in zip(view[d], sd[d])] for d in designs},
                       index=[metric_label(m) for m in view.index])
    n = t.groupby("design")["n_images"].first()
    out.loc["test images"] = [str(n[d]) for d in designs]
    return out


def fold_view(table: pd.DataFrame):
    """The reader's table of each design's metrics fold by fold (``leakage.fold_metrics``), styled."""
    folds = fold_metrics(table)
    folds = folds[folds["design"].isin(list(DESIGNS))].rename(columns={"n_images": "test images"})
    return folds.rename(columns={m: metric_label(m) for m in METRICS}).style.format(precision=3).hide(axis="index")


def paired_view(paired: pd.DataFrame, comparison: str) -> pd.DataFrame:
    """The reader's rows of :func:`mtbc_lib.studies.leakage.paired_table` for one comparison."""
    t = paired[paired["comparison"] == comparison]
    a, b = comparison.split(" − ")
    return pd.DataFrame({
        "metric": t["metric"].map(metric_label), a: t["a"].map("{:.3f}".format),
        b.split(" (")[0]: t["b"].map("{:.3f}".format),
        "difference [95 % CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                                 for d, lo, hi in zip(t["diff"], t["ci_low"], t["ci_high"])],
        "p": t["p_value"].map("{:.2g}".format), "test": t["test"],
        "images": [f"{x}" if x == y else f"{x} vs {y}" for x, y in zip(t["n_a"], t["n_b"])]}).set_index("metric")


def leakage_figure(table: pd.DataFrame):
    """Three panels: per-image Dice of the image-level design's test images with and
    without a copy in training (with the same images' scan-level Dice), and each design's
    DSC average and accuracy per fold. A plotly Figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    folds = fold_metrics(table)
    fig = make_subplots(rows=1, cols=3, column_widths=[0.5, 0.25, 0.25], horizontal_spacing=0.08,
                        subplot_titles=["per-image Dice (image-level design)", "DSC avg per fold", "accuracy per fold"])
    colours = {"image": "#d62728", "scan": "#1f77b4"}
    for split, title in (("image", "image-level"), ("scan", "scan-level, same images")):
        for copy, group in ((True, "copy in training"), (False, "no copy in training")):
            d = table.loc[table["copy_in_train"] == copy, f"dice_{split}"]
            fig.add_trace(go.Box(x=[f"{group} (n={len(d)})"] * len(d), y=d, name=title, legendgroup=split,
                                 showlegend=copy, marker_color=colours[split], boxpoints="all", jitter=0.4,
                                 pointpos=0, marker=dict(size=3, opacity=0.5)), row=1, col=1)
    for col, m in ((2, "dsc_avg"), (3, "acc")):
        for design, split in DESIGNS.items():
            f = folds[folds["design"] == design]
            fig.add_trace(go.Scatter(x=[design] * len(f), y=f[m], mode="markers", showlegend=False,
                                     marker=dict(size=9, color=colours[split]), text=[f"fold {k}" for k in f["fold"]],
                                     hovertemplate="%{x} %{text}: %{y:.3f}<extra></extra>"), row=1, col=col)
            fig.add_trace(go.Scatter(x=[design], y=[f[m].mean()], mode="markers", showlegend=False,
                                     marker=dict(symbol="line-ew-open", size=30, color=colours[split],
                                                 line=dict(width=2)),
                                     hovertemplate="%{x} mean: %{y:.3f}<extra></extra>"), row=1, col=col)
    fig.update_layout(boxmode="group", height=430, template="plotly_white", margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.12))
    fig.update_yaxes(range=[0, 1.02])
    return fig


def _interval(r) -> str:
    """'95 % CI lo to hi, <test> p = …' of one row of :func:`mtbc_lib.studies.leakage.paired_table`."""
    return f"95 % CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}, {r['test']} p = {r['p_value']:.2g}"


def conclusion(paired: pd.DataFrame) -> str:
    """A sentence on the inflation, computed from :func:`mtbc_lib.studies.leakage.paired_table`; when
    neither difference is significant, a second one bounding it by the intervals' upper ends."""
    t = paired[paired["comparison"] == DESIGNS_DIFF].set_index("metric")
    parts, bounds = [], []
    for m, what in (("dsc_avg", "the DSC average"), ("acc", "the accuracy")):
        r = t.loc[m]
        ci = _interval(r)
        if r["p_value"] < 0.05:
            parts.append(f"{'inflates' if r['diff'] > 0 else 'lowers'} {what} by {abs(r['diff']):.3f} ({ci})")
        else:
            parts.append(f"does not measurably change {what} (difference {r['diff']:+.3f}, {ci})")
            bounds.append(f"{r['ci_high']:+.3f} in {what[4:]}")
    n = int(t.loc["dsc_avg", "n_a"])
    text = f"On the same {n} raw BUSI images, splitting by image instead of by scan " + " and ".join(parts) + "."
    if len(bounds) == 2:
        text += (" With this network and training budget, the inflation that the duplicates could still hide is at "
                 "most " + " and ".join(bounds) + " (the upper ends of the intervals).")
    return text


def fit_note(design_runs: dict, table: pd.DataFrame, gap: float = 0.05) -> str:
    """Markdown: each design's Dice and accuracy on its training images at the tested epoch
    (:func:`mtbc_lib.engine.runs.training_fit`, mean over the folds) beside its test scores;
    when no network fits its training images ``gap`` better, it has little to remember."""
    parts, gaps, augmented = [], [], False
    for design, run in design_runs.items():
        split, fits = DESIGNS[design], [training_fit(run, k) for k in sorted(run.metrics)]
        augmented |= any(aug for _, aug in fits)
        for what, key, test in (("Dice", "dsc_avg", table[f"dice_{split}"].mean()),
                                ("accuracy", "acc", table[f"correct_{split}"].mean())):
            train = float(np.mean([fit.get(key, np.nan) for fit, _ in fits]))
            parts.append(f"{design} {what} {train:.3f} on its training images against {test:.3f} on its test images")
            gaps.append(train - test)
    seen = ("the training images augmented, as training saw them" if augmented
            else "the tested weights on the training images, unaugmented")
    text = f"At the epoch whose weights were tested (mean over the folds; {seen}): " + "; ".join(parts) + "."
    if max(gaps) >= gap:
        return text + f" The networks fit their training images up to {max(gaps):.3f} better than unseen ones."
    return text + (f" Neither network fits its training images {gap:.2f} better than unseen ones, so neither has "
                   "much to remember: the difference above measures the inflation at this training budget, not that "
                   "of a network trained until it fits its training images.")


def inside_note(paired: pd.DataFrame, comparison: str) -> str:
    """Markdown: one comparison inside a design (``leakage.INSIDE``; rows of
    ``leakage.paired_table``): both groups' Dice and accuracy, the difference with its
    interval and test, and which way the significant differences (p < .05) point."""
    t = paired[paired["comparison"] == comparison].set_index("metric")
    parts, signs = [], set()
    for m, what in (("dsc_avg", "Dice"), ("acc", "accuracy")):
        if m in t.index:
            r = t.loc[m]
            parts.append(f"{what} {r['a']:.3f} against {r['b']:.3f} ({r['diff']:+.3f}, {_interval(r)})")
            if r["p_value"] < 0.05:
                signs.add("higher" if r["diff"] > 0 else "lower")
    if not parts:
        return ""
    if not signs:
        verdict = "neither difference is significant"
    elif signs == {"lower"}:
        verdict = ("where the difference is significant, these images score lower: no sign that the network profits "
                   "from what it saw in training")
    elif signs == {"higher"}:
        verdict = ("where the difference is significant, these images score higher, as they would if the network "
                   "remembered what it saw in training")
    else:
        verdict = "the significant differences point both ways"
    return f"Against the other test images of the same design: {'; '.join(parts)}; {verdict}."


def frames_note(table: pd.DataFrame, paired: pd.DataFrame) -> str:
    """Markdown: how many scan-level test images have another frame of their lesion in
    training, how they scored against the others (:func:`inside_note`), and why a
    lesion-level design was not trained."""
    n, total = int(table["frame_in_train"].sum()), len(table)
    text = (f"In the scan-level folds, {n} of the {total} test images have another frame of their lesion in "
            "their fold's training split (a same-lesion group of the audit; never a copy, which shares its fold).")
    if n == 0:
        return text + (" A lesion-level design (`split=\"lesion\"`) would therefore test exactly what the "
                       "scan-level design tests, so it was not trained for this chapter.")
    text += " " + inside_note(paired, FRAMES)
    return text + (f" A lesion-level design (`split=\"lesion\"`: the frames of one lesion kept in one fold too) "
                   f"would take that exposure away from these {n} images only ({n / total:.1%} of the test "
                   "images), so it was not trained for this chapter.")


def studies_note(studies, leakage_csv: pd.DataFrame) -> str:
    """Markdown: which finished study the chapter reads (the first of ``studies``, (backbone,
    profile) pairs, the most faithful first), then for each other one its two designs' DSC
    average and accuracy from ``leakage_csv`` (rows of ``results/leakage.csv``)."""
    shown, *others = [tuple(s) for s in studies]
    text = f"This chapter reads the study of **{grid_title(shown)}**, the most faithful one finished."
    t = leakage_csv.set_index(["backbone", "profile", "design", "metric"])["value"]
    for b, p in others:
        if (b, p) not in t.droplevel(["design", "metric"]).index:
            raise ValueError(f"leakage.csv: no rows of {b}/{p}; run mtbc leakage --backbone {b} --profile {p}")
        scores = {m: [t[(b, p, d, m)] for d in DESIGNS] for m in ("dsc_avg", "acc")}
        text += (f" Under {grid_title((b, p))}, image-level against scan-level folds scored DSC average "
                 f"{scores['dsc_avg'][0]:.3f} against {scores['dsc_avg'][1]:.3f} and accuracy "
                 f"{scores['acc'][0]:.3f} against {scores['acc'][1]:.3f} (means over the folds).")
    return text
