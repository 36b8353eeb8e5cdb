"""The leakage study: how much do BUSI's duplicates inflate a model's test scores?

The same network, task and recipe are trained twice on the raw BUSI (780 images, folder
labels, union masks), with two split designs (:data:`DESIGNS`): **image-level** folds
(stratified on the label, as most BUSI papers split) and **scan-level** folds (a stratified
group k-fold on the same-scan groups of the duplicate audit, so no scan is on both sides of
a split). Every image is a test image once in each design, so the two are compared image by
image: the paired tests and bootstrap intervals of :mod:`mtbc_lib.claims`. Inside the
image-level design, a test image *has a copy in training* when another member of its
same-scan group is in that fold's training split; inside the scan-level design, it *has
another frame in training* when another member of its same-lesion group is (the audit's
second level: a frame of the same lesion, never a copy, since copies share a fold).

    python -m mtbc_lib.leakage            # train both designs (resumable), write results/leakage.csv
                                          # and the two runs' pages (book/runs/, as the grid's)

Results: ``results/leakage/<run name>/`` (the usual run files) and ``results/leakage.csv``
(:data:`LEAKAGE_COLUMNS`). The scores are the multi-task network's own (no refinement).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mtbc_lib.book import metric_label
from mtbc_lib.config import CLASSES, SEED, atomic_write
from mtbc_lib.metrics import SEG_METRICS, classification_metrics, segmentation_metrics
from mtbc_lib.trainconfig import TrainConfig

__all__ = ["DESIGNS", "BASE", "METRICS", "LEAKAGE_COLUMNS", "design_config", "run_study", "run_pages", "per_image",
           "fold_metrics", "leakage_table", "paired_table", "conflict_table", "design_table", "summary_view",
           "paired_view", "leakage_figure", "conclusion", "fit_note", "frames_note", "write_leakage_csv"]

#: Design name -> TrainConfig.split.
DESIGNS: dict[str, str] = {"image-level": "image", "scan-level": "scan"}
#: What both designs share: MT without DO on the raw BUSI under the ``cpu`` profile (7 epochs),
#: with the ResNet-34 U-Net++, so that the two designs (8 fold trainings of about 468 images an
#: epoch) fit in about 3-4 h on two idle cores. Not the paper's U-Net++: on this budget its
#: classifier does not leave the majority class (5 epochs of image-level fold 0 called every test
#: image benign), which would hide any inflation of accuracy; the ResNet-34 U-Net++ learned the
#: most per CPU-minute in the recipe study.
BASE = dict(backbone="unetplusplus-r34", task="mt", oversampling=False, curation="none", profile="cpu",
            out_dir="results/leakage")
#: The metrics compared (Table 5's DSC, weighted F1 and accuracy).
METRICS: tuple[str, ...] = SEG_METRICS + ("f1_weighted", "acc")
#: Columns of ``results/leakage.csv``: value = mean over the four folds, sd = their SD.
LEAKAGE_COLUMNS = ["design", "metric", "value", "sd", "n_images"]
#: Rows of the inside-image-level comparison (design column of leakage.csv).
COPY_GROUPS = ("copy-in-train", "no-copy-in-train")


def design_config(design: str, **overrides) -> TrainConfig:
    """The resolved TrainConfig of a design (``overrides``: e.g. data_dir, epochs)."""
    if design not in DESIGNS:
        raise ValueError(f"leakage design {design!r}: expected one of {', '.join(DESIGNS)}")
    return TrainConfig(**{**BASE, **overrides, "split": DESIGNS[design]}).resolve()


def run_study(designs=None, progress: bool = True, **overrides) -> None:
    """Train the designs (both by default) one after the other; finished folds are skipped,
    an interrupted one resumes. The default data folder is stored as "" in the runs'
    configurations (``grid.portable_data_dir``: committed files hold no local path)."""
    from mtbc_lib import train
    from mtbc_lib.grid import portable_data_dir

    overrides["data_dir"] = portable_data_dir(overrides.get("data_dir"))
    arrays = None
    for design in designs or list(DESIGNS):
        cfg = design_config(design, **overrides)
        if progress:
            print(f"== {design}: {cfg.run_name}", flush=True)
        arrays = train.load_data(cfg, progress=progress) if arrays is None else arrays
        train.run(cfg, arrays=arrays, progress=progress)


def run_pages(designs=None, data_dir=None, notebook_dir: str | os.PathLike = "book/runs") -> list[str]:
    """Each design's run page, as the grid's: ``notebooks/train.ipynb`` executed by papermill
    with the design's parameters into ``notebook_dir/<run name>.ipynb`` (a finished run is
    reported, not trained again). Returns the run names."""
    from mtbc_lib.grid import execute_training, portable_data_dir

    return [execute_training({**BASE, "split": DESIGNS[d], "run_name": design_config(d).run_name,
                              "data_dir": portable_data_dir(data_dir)}, notebook_dir)
            for d in designs or list(DESIGNS)]


# ----------------------------------------------------------------------------- per image

def _test_outputs(run_dir: Path) -> pd.DataFrame:
    tables = [pd.read_csv(p).assign(fold=int(p.name[4:].split("_")[0]))
              for p in sorted(run_dir.glob("fold*_test.csv"))]
    if not tables:
        raise FileNotFoundError(f"{run_dir}: no fold*_test.csv; expected a finished run of the leakage study "
                                "(python -m mtbc_lib.leakage)")
    return pd.concat(tables, ignore_index=True)


def per_image(results_dir: str | os.PathLike = "results/leakage", data_dir=None, **overrides) -> pd.DataFrame:
    """One row per image tested in both designs (index (class, id)): ``label``, its scan
    ``group`` (-1: in none) and whether that group is a ``label_conflict`` (members filed
    under two classes); per design (suffix ``_image`` / ``_scan``) its test ``fold``,
    ``dice``, ``pred`` and ``correct`` (1/0); ``copy_in_train``: in the image-level design,
    another member of its scan group was in that fold's training split; ``frame_in_train``:
    in the scan-level design, another member of its lesion group was. Only images tested
    in both designs (all of them once both runs are finished)."""
    from mtbc_lib import train
    from mtbc_lib.dedup import audit_groups
    from mtbc_lib.splits import make_splits

    parts = []
    for design, split in DESIGNS.items():
        cfg = design_config(design, out_dir=str(results_dir), **overrides)
        t = _test_outputs(Path(results_dir) / cfg.run_name)
        t = t.assign(correct=(t["pred"] == t["label"]).astype(float))
        parts.append(t.set_index(["class", "id"])[["label", "fold", "dice", "pred", "correct"]]
                     .add_suffix(f"_{split}"))
    both = parts[0].join(parts[1], how="inner")
    both = both.rename(columns={"label_image": "label"}).drop(columns="label_scan")
    cfg = design_config("image-level", out_dir=str(results_dir), **overrides)
    data_dir = data_dir or cfg.data_dir or None
    arrays = train.run_arrays(cfg.to_dict(), data_dir)
    keys = arrays.keys
    group, lesion = (np.asarray([g.get(k, -1) for k in keys])
                     for g in (audit_groups(data_dir, "scan"), audit_groups(data_dir, "lesion")))
    n_classes = pd.Series([c for c, _ in keys]).groupby(group).nunique()

    def partner_in_train(design, group):  # per image: a member of its group in its fold's training split
        out = np.zeros(len(keys), bool)
        c = design_config(design, **{**overrides, "out_dir": str(results_dir), "data_dir": str(data_dir or "")})
        for split in make_splits(c, arrays):
            in_train = set(group[split.train]) - {-1}
            out[split.test] = [g != -1 and g in in_train for g in group[split.test]]
        return out

    info = pd.DataFrame({"group": group, "copy_in_train": partner_in_train("image-level", group),
                         "frame_in_train": partner_in_train("scan-level", lesion),
                         "label_conflict": [g != -1 and n_classes[g] > 1 for g in group]},
                        index=pd.MultiIndex.from_tuples(keys, names=["class", "id"]))
    return both.join(info, how="left").sort_index()


def _metrics(t: pd.DataFrame, split: str) -> dict[str, float]:
    m = segmentation_metrics(t[f"dice_{split}"], t["label"]) | classification_metrics(t["label"], t[f"pred_{split}"])
    return {k: m[k] for k in METRICS}


def fold_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The metrics per fold (columns design, fold, n_images, METRICS) of each design, and
    of the image-level design's test images with and without a copy in training."""
    rows = []
    subsets = [(d, s, np.ones(len(table), bool)) for d, s in DESIGNS.items()] + \
        [(COPY_GROUPS[0], "image", table["copy_in_train"].to_numpy()),
         (COPY_GROUPS[1], "image", ~table["copy_in_train"].to_numpy())]
    for name, split, sel in subsets:
        for k, t in table[sel].groupby(f"fold_{split}"):
            rows.append({"design": name, "fold": int(k), "n_images": len(t)} | _metrics(t, split))
    return pd.DataFrame(rows)


def leakage_table(table: pd.DataFrame) -> pd.DataFrame:
    """``results/leakage.csv``: per design (and copy group) and metric, the mean over folds,
    their SD and the number of test images (:data:`LEAKAGE_COLUMNS`)."""
    folds = fold_metrics(table)
    rows = [{"design": design, "metric": m, "value": f[m].mean(), "sd": f[m].std(ddof=1),
             "n_images": int(f["n_images"].sum())} for design, f in folds.groupby("design", sort=False) for m in METRICS]
    return pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)


def _values(t: pd.DataFrame, metric: str, split: str) -> np.ndarray:
    if metric == "acc":
        return t[f"correct_{split}"].to_numpy(float)
    if metric != "dsc_avg":
        t = t[t["label"] == CLASSES.index(metric.removeprefix("dsc_"))]
    return t[f"dice_{split}"].to_numpy(float)


PAIRED_METRICS = SEG_METRICS + ("acc",)
#: The comparison of scan-level test images with another frame of their lesion in training.
FRAMES = "another frame in training − none (scan-level)"
#: The comparisons inside one design: name -> (the column that picks the first group, design's split).
INSIDE = {"copy in training − no copy (image-level)": ("copy_in_train", "image"), FRAMES: ("frame_in_train", "scan")}


def paired_table(table: pd.DataFrame) -> pd.DataFrame:
    """Image-level minus scan-level, image by image: per metric the two means, their
    difference with a 95 % bootstrap interval and the paired test's p value (Wilcoxon on
    the Dice, exact McNemar on correctness; :mod:`mtbc_lib.claims`); then the comparisons
    inside one design (:data:`INSIDE`): test images with a copy in training against those
    without (image-level), with another frame of their lesion in training against those
    without (scan-level); other images: Mann-Whitney U on the Dice, Fisher's exact test on
    correctness, an unpaired bootstrap. A comparison with an empty side is left out."""
    from scipy import stats

    from mtbc_lib.claims import bootstrap_ci, paired_test

    rows = []
    for m in PAIRED_METRICS:
        a, b = _values(table, m, "image"), _values(table, m, "scan")  # _values keeps a class's images
        p, test = paired_test(a, b, m)
        lo, hi = bootstrap_ci(a, b)
        rows.append({"comparison": "image-level − scan-level", "metric": m, "a": a.mean(), "b": b.mean(),
                     "diff": a.mean() - b.mean(), "ci_low": lo, "ci_high": hi, "p_value": p, "test": test,
                     "n_a": len(a), "n_b": len(b)})
    for comparison, (column, split) in INSIDE.items():
        sel = table[column].to_numpy(bool)
        for m in ("dsc_avg", "acc"):
            a, b = _values(table[sel], m, split), _values(table[~sel], m, split)
            if not len(a) or not len(b):
                continue
            if m == "acc":
                p = stats.fisher_exact([[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]]).pvalue
                test = "Fisher's exact"
            else:
                p, test = stats.mannwhitneyu(a, b).pvalue, "Mann-Whitney U"
            lo, hi = _unpaired_ci(a, b)
            rows.append({"comparison": comparison, "metric": m, "a": a.mean(), "b": b.mean(),
                         "diff": a.mean() - b.mean(), "ci_low": lo, "ci_high": hi, "p_value": float(p),
                         "test": test, "n_a": len(a), "n_b": len(b)})
    return pd.DataFrame(rows)


def _unpaired_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile interval of mean(a) − mean(b), resampling each group on its own."""
    rng = np.random.default_rng(seed)
    d = a[rng.integers(0, len(a), (n, len(a)))].mean(1) - b[rng.integers(0, len(b), (n, len(b)))].mean(1)
    return float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))


def conflict_table(table: pd.DataFrame) -> pd.DataFrame:
    """The images of label-conflict groups (one scan filed under two classes): the label
    it is filed under and each design's answer, group by group."""
    t = table[table["label_conflict"]].reset_index()
    name = [f"{c} ({i})" for c, i in zip(t["class"], t["id"])]
    return pd.DataFrame({"group": t["group"], "image": name, "filed as": t["class"],
                         "copy in training": t["copy_in_train"].map({True: "yes", False: "no"}),
                         "image-level answer": [CLASSES[k] for k in t["pred_image"]],
                         "scan-level answer": [CLASSES[k] for k in t["pred_scan"]]}).sort_values(["group", "image"])


def design_table(design_runs: dict, table: pd.DataFrame) -> pd.DataFrame:
    """What each design trained (``design_runs``: design -> :func:`mtbc_lib.runs.load_run`):
    the shared configuration, folds, epochs, training hours, and the test images that
    have a copy (image-level) or another frame of their lesion (scan-level) in their
    fold's training split."""
    from mtbc_lib.models import backbone_entry

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
    """The reader's table of :func:`leakage_table`: one row per metric, one column per
    design, "mean ± SD" over folds, and the number of test images."""
    t = summary[summary["design"].isin(designs)]
    view = t.pivot(index="metric", columns="design", values="value").loc[list(METRICS), list(designs)]
    sd = t.pivot(index="metric", columns="design", values="sd").loc[list(METRICS), list(designs)]
    out = pd.DataFrame({d: [f"{a:.3f} ± {b:.3f}" for a, b in zip(view[d], sd[d])] for d in designs},
                       index=[metric_label(m) for m in view.index])
    n = t.groupby("design")["n_images"].first()
    out.loc["test images"] = [str(n[d]) for d in designs]
    return out


def paired_view(paired: pd.DataFrame, comparison: str) -> pd.DataFrame:
    """The reader's rows of :func:`paired_table` for one comparison."""
    t = paired[paired["comparison"] == comparison]
    a, b = comparison.split(" − ")
    return pd.DataFrame({
        "metric": t["metric"].map(metric_label), a: t["a"].map("{:.3f}".format), b.split(" (")[0]: t["b"].map("{:.3f}".format),
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


def conclusion(paired: pd.DataFrame) -> str:
    """A sentence on the inflation, computed from :func:`paired_table`; when neither
    difference is significant, a second one bounding it by the intervals' upper ends."""
    t = paired[paired["comparison"] == "image-level − scan-level"].set_index("metric")
    parts, bounds = [], []
    for m, what in (("dsc_avg", "the DSC average"), ("acc", "the accuracy")):
        r = t.loc[m]
        ci = f"95 % CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}, {r['test']} p = {r['p_value']:.2g}"
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
    """Markdown: each design's training Dice and accuracy at the tested epoch beside its test
    scores; when no network fits its training images ``gap`` better, it has little to remember."""
    parts, gaps = [], []
    for design, run in design_runs.items():
        h, split = run.history, DESIGNS[design]
        best = h[h["epoch"] == h["fold"].map({k: m["best_epoch"] for k, m in run.metrics.items()})]
        for what, train, test in (("Dice", best["train_dice"].mean(), table[f"dice_{split}"].mean()),
                                  ("accuracy", best["train_acc"].mean(), table[f"correct_{split}"].mean())):
            parts.append(f"{design} {what} {train:.3f} on its training images against {test:.3f} on its test images")
            gaps.append(train - test)
    text = ("At the epoch whose weights were tested (mean over the folds; the training images augmented, as training "
            "saw them): " + "; ".join(parts) + ".")
    if max(gaps) >= gap:
        return text + f" The networks fit their training images up to {max(gaps):.3f} better than unseen ones."
    return text + (f" Neither network fits its training images {gap:.2f} better than unseen ones, so neither has "
                   "much to remember: the difference above measures the inflation at this training budget, not that "
                   "of a network trained until it fits its training images.")


def frames_note(table: pd.DataFrame, paired: pd.DataFrame) -> str:
    """Markdown: how many scan-level test images have another frame of their lesion in
    training, how they scored against the others (from :func:`paired_table`), and why a
    lesion-level design was not trained."""
    n, total = int(table["frame_in_train"].sum()), len(table)
    text = (f"In the scan-level folds, {n} of the {total} test images have another frame of their lesion in "
            "their fold's training split (a same-lesion group of the audit; never a copy, which shares its fold).")
    if n == 0:
        return text + (" A lesion-level design (`split=\"lesion\"`) would therefore test exactly what the "
                       "scan-level design tests, so it was not trained for this chapter.")
    t = paired[paired["comparison"] == FRAMES].set_index("metric")
    parts = []
    for m, what in (("dsc_avg", "Dice"), ("acc", "accuracy")):
        if m in t.index:
            r = t.loc[m]
            parts.append(f"{what} {r['a']:.3f} against {r['b']:.3f} ({r['diff']:+.3f}, 95 % CI {r['ci_low']:+.3f} "
                         f"to {r['ci_high']:+.3f}, {r['test']} p = {r['p_value']:.2g})")
    if parts:
        text += " Against the other test images of that design: " + "; ".join(parts) + "."
    return text + (f" A lesion-level design (`split=\"lesion\"`: the frames of one lesion kept in one fold too) "
                   f"would take that exposure away from these {n} images only ({n / total:.1%} of the test "
                   "images), so it was not trained for this chapter.")


def write_leakage_csv(results_dir: str | os.PathLike = "results/leakage", out: str | os.PathLike | None = None,
                      **overrides) -> Path:
    """(Re)write ``results/leakage.csv`` (next to ``results_dir`` by default). Atomic."""
    table = leakage_table(per_image(results_dir, **overrides))
    out = Path(out) if out else Path(results_dir).parent / "leakage.csv"
    return atomic_write(out, lambda p: table.to_csv(p, index=False, float_format="%.4f"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtbc_lib.leakage", description=__doc__.split("\n\n")[0])
    p.add_argument("designs", nargs="*", metavar="DESIGN",
                   help=f"designs to train (default: all): {', '.join(DESIGNS)}")
    p.add_argument("--data-dir", default="", help="raw BUSI folder (default: $MTBC_DATA or ../shared/data/BUSI)")
    a = p.parse_args(argv)
    try:
        run_study(a.designs or None, data_dir=a.data_dir)
        print(write_leakage_csv(data_dir=a.data_dir))
        print("run pages:", ", ".join(run_pages(a.designs or None, a.data_dir)))
    except (ValueError, OSError) as e:
        print(f"leakage: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
