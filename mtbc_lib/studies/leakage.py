"""The leakage study: how much do BUSI's duplicates inflate a model's test scores?

The same network, task and recipe are trained twice on the raw BUSI (780 images, folder
labels, union masks), with two split designs (:data:`DESIGNS`): **image-level** folds
(stratified on the label, as most BUSI papers split) and **scan-level** folds (a stratified
group k-fold on the same-scan groups of the duplicate audit, so no scan is on both sides of
a split). Every image is a test image once in each design, so the two are compared image by
image: the paired tests and bootstrap intervals of :mod:`mtbc_lib.studies.claims`. Inside the
image-level design, a test image *has a copy in training* when another member of its
same-scan group is in that fold's training split; inside the scan-level design, it *has
another frame in training* when another member of its same-lesion group is (the audit's
second level: a frame of the same lesion, never a copy, since copies share a fold).

    mtbc leakage            # train both designs (resumable), write results/leakage.csv
                                          # and the two runs' pages (book/runs/, as the grid's)

Results: ``results/leakage/<run name>/`` (the usual run files) and ``results/leakage.csv``
(:data:`LEAKAGE_COLUMNS`). The scores are the multi-task network's own (no refinement). What
the chapter shows of them (tables, figure, computed sentences): :mod:`mtbc_lib.report.leakage`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtbc_lib.core import CLASSES, SEED, atomic_write
from mtbc_lib.engine import runs
from mtbc_lib.engine.config import TrainConfig
from mtbc_lib.metrics import SEG_METRICS, classification_metrics, segmentation_metrics

__all__ = ["DESIGNS", "BASE", "METRICS", "LEAKAGE_COLUMNS", "design_config", "train_designs", "run_pages", "per_image",
           "fold_metrics", "leakage_table", "paired_table", "DESIGNS_DIFF", "COPY", "FRAMES", "INSIDE",
           "write_leakage_csv", "finished", "finished_studies", "STUDIES"]

#: Design name -> TrainConfig.split.
DESIGNS: dict[str, str] = {"image-level": "image", "scan-level": "scan"}
#: What both designs share: MT without DO on the raw BUSI under the ``cpu`` profile (7 epochs),
#: with the ResNet-34 U-Net++ (under that budget the paper's U-Net++ classifier does not leave
#: the majority class, which would hide any inflation of accuracy; the book's leakage chapter
#: says why). ``backbone`` and ``profile`` may be overridden (the replica study: the paper's
#: U-Net++ under ``replica``).
BASE = dict(backbone="unetplusplus-r34", task="mt", oversampling=False, curation="none", profile="cpu",
            out_dir="results/leakage")
#: The metrics compared (Table 5's DSC, weighted F1 and accuracy).
METRICS: tuple[str, ...] = SEG_METRICS + ("f1_weighted", "acc")
#: Columns of ``results/leakage.csv``: value = mean over the four folds, sd = their SD.
LEAKAGE_COLUMNS = ["backbone", "profile", "design", "metric", "value", "sd", "n_images"]
#: The studies ``results/leakage.csv`` holds, (backbone, profile) each, the most faithful first:
#: the paper's U-Net++ at the paper's protocol (the GPU route), at the replica scale (trained to
#: convergence on the CPU), and the first study (BASE, 7 epochs).
STUDIES: tuple[tuple[str, str], ...] = (("unetplusplus", "paper"), ("unetplusplus", "replica"),
                                        (BASE["backbone"], BASE["profile"]))
#: Rows of the inside-image-level comparison (design column of leakage.csv).
COPY_GROUPS = ("copy-in-train", "no-copy-in-train")


def design_config(design: str, **overrides) -> TrainConfig:
    """The resolved config of a design.

    Args:
        design: a design of :data:`DESIGNS`.
        **overrides: TrainConfig fields over :data:`BASE` (e.g. data_dir, epochs, backbone,
            profile); ``split`` is the design's.

    Returns:
        The resolved :class:`~mtbc_lib.engine.config.TrainConfig`.

    Raises:
        ValueError: an unknown design, or a config :meth:`TrainConfig.resolve` rejects.
    """
    if design not in DESIGNS:
        raise ValueError(f"leakage design {design!r}: expected one of {', '.join(DESIGNS)}")
    return TrainConfig(**{**BASE, **overrides, "split": DESIGNS[design]}).resolve()


def train_designs(designs=None, progress: bool = True, **overrides) -> None:
    """Train the designs one after the other.

    Finished folds are skipped, an interrupted one resumes. The default data folder is stored as ""
    in the runs' configurations (:func:`mtbc_lib.studies.grid.portable_data_dir`: committed files hold
    no local path). The arrays are loaded once, for the first design.

    Args:
        designs: designs of :data:`DESIGNS`; None: both.
        progress: whether to show progress and a line per design.
        **overrides: as :func:`design_config`'s.

    Returns:
        None.

    Raises:
        ValueError: as :func:`design_config`; as :func:`mtbc_lib.engine.train.run`.
    """
    from mtbc_lib.engine import train
    from mtbc_lib.studies.grid import portable_data_dir

    overrides["data_dir"] = portable_data_dir(overrides.get("data_dir"))
    arrays = None
    for design in designs or list(DESIGNS):
        cfg = design_config(design, **overrides)
        if progress:
            print(f"== {design}: {cfg.run_name}", flush=True)
        arrays = train.load_data(cfg, progress=progress) if arrays is None else arrays
        train.run(cfg, arrays=arrays, progress=progress)


def run_pages(designs=None, data_dir=None, notebook_dir: str | os.PathLike = "book/runs", **overrides) -> list[str]:
    """Each design's run page, as the grid's.

    ``notebooks/train.ipynb`` executed by papermill with the design's parameters into
    ``notebook_dir/<run name>.ipynb`` (a finished run is reported, not trained again).

    Args:
        designs: designs of :data:`DESIGNS`; None: both.
        data_dir: the raw BUSI folder; None: the default.
        notebook_dir: where the executed notebooks go.
        **overrides: as :func:`design_config`'s (e.g. backbone, profile).

    Returns:
        The run names.

    Raises:
        ValueError: as :func:`design_config`.
        PapermillExecutionError: a notebook failed.
    """
    from mtbc_lib.studies.grid import execute_training, portable_data_dir

    return [execute_training({**BASE, **overrides, "split": DESIGNS[d],
                              "run_name": design_config(d, **overrides).run_name,
                              "data_dir": portable_data_dir(data_dir)}, notebook_dir)
            for d in designs or list(DESIGNS)]


# ----------------------------------------------------------------------------- per image

def per_image(results_dir: str | os.PathLike = "results/leakage", data_dir=None, **overrides) -> pd.DataFrame:
    """One row per image tested in both designs, with what leaked to its training split.

    Only images tested in both designs are kept (all of them once both runs are finished).

    Args:
        results_dir: the study's results folder.
        data_dir: the raw BUSI folder (for the arrays and the audit's groups); None: the stored one,
            else the default.
        **overrides: as :func:`design_config`'s (e.g. backbone, profile).

    Returns:
        A ``pandas.DataFrame`` indexed by ``(class, id)``, sorted: ``label``, its scan ``group`` (-1: in
        none) and whether that group is a ``label_conflict`` (members filed under two classes); per
        design (suffix ``_image`` / ``_scan``) its test ``fold``, ``dice``, ``pred`` and ``correct``
        (1/0); ``copy_in_train``: in the image-level design, another member of its scan group was in
        that fold's training split; ``frame_in_train``: in the scan-level design, another member of its
        lesion group was.

    Raises:
        FileNotFoundError: a design's run has no finished fold.
    """
    from mtbc_lib.dedup import audit_groups
    from mtbc_lib.engine import train

    parts = []
    for design, split in DESIGNS.items():
        cfg = design_config(design, out_dir=str(results_dir), **overrides)
        t = runs.load_run(Path(results_dir) / cfg.run_name).test
        if t.empty:
            raise FileNotFoundError(f"{Path(results_dir) / cfg.run_name}: no finished fold; expected a run of the "
                                    "leakage study (mtbc leakage)")
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
        for split in train.run_splits(c, arrays):
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
    """The metrics per fold of each design, and of the image-level design's test images with and without a
    copy in training.

    Args:
        table: a :func:`per_image` table.

    Returns:
        A ``pandas.DataFrame`` with columns ``design`` (a design, ``copy-in-train`` or
        ``no-copy-in-train``), ``fold``, ``n_images`` and :data:`METRICS`.
    """
    rows = []
    subsets = [(d, s, np.ones(len(table), bool)) for d, s in DESIGNS.items()] + \
        [(COPY_GROUPS[0], "image", table["copy_in_train"].to_numpy()),
         (COPY_GROUPS[1], "image", ~table["copy_in_train"].to_numpy())]
    for name, split, sel in subsets:
        for k, t in table[sel].groupby(f"fold_{split}"):
            rows.append({"design": name, "fold": int(k), "n_images": len(t)} | _metrics(t, split))
    return pd.DataFrame(rows)


def leakage_table(table: pd.DataFrame, backbone: str = BASE["backbone"], profile: str = BASE["profile"]) -> pd.DataFrame:
    """The rows of one study in ``results/leakage.csv``.

    Args:
        table: the study's :func:`per_image` table.
        backbone: the study's backbone, for its column.
        profile: the study's profile, for its column.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`LEAKAGE_COLUMNS`: per design (and copy group) and
        metric, the mean over folds, their SD (ddof=1) and the number of test images.
    """
    folds = fold_metrics(table)
    rows = [{"backbone": backbone, "profile": profile, "design": design, "metric": m, "value": f[m].mean(),
             "sd": f[m].std(ddof=1), "n_images": int(f["n_images"].sum())}
            for design, f in folds.groupby("design", sort=False) for m in METRICS]
    return pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)


def _values(t: pd.DataFrame, metric: str, split: str) -> np.ndarray:
    if metric == "acc":
        return t[f"correct_{split}"].to_numpy(float)
    if metric != "dsc_avg":
        t = t[t["label"] == CLASSES.index(metric.removeprefix("dsc_"))]
    return t[f"dice_{split}"].to_numpy(float)


PAIRED_METRICS = SEG_METRICS + ("acc",)
#: The names of the comparisons in :func:`paired_table`: the two designs image by image; inside the
#: image-level design, test images with a copy in training against the others; inside the
#: scan-level design, those with another frame of their lesion in training against the others.
DESIGNS_DIFF = "image-level − scan-level"
COPY = "copy in training − no copy (image-level)"
FRAMES = "another frame in training − none (scan-level)"
#: The comparisons inside one design: name -> (the column that picks the first group, design's split).
INSIDE = {COPY: ("copy_in_train", "image"), FRAMES: ("frame_in_train", "scan")}


def paired_table(table: pd.DataFrame) -> pd.DataFrame:
    """Image-level minus scan-level, image by image, then the comparisons inside one design.

    Per metric: the two means, their difference with a 95 % bootstrap interval and the paired test's p
    value (Wilcoxon on the Dice, exact McNemar on correctness; :mod:`mtbc_lib.studies.claims`). Then the
    comparisons of :data:`INSIDE`: test images with a copy in training against those without
    (image-level), with another frame of their lesion in training against those without (scan-level),
    on ``dsc_avg`` and ``acc``: Mann-Whitney U on the Dice, Fisher's exact test on correctness, an
    unpaired bootstrap. A comparison with an empty side is left out.

    Args:
        table: a :func:`per_image` table.

    Returns:
        A ``pandas.DataFrame`` with columns ``comparison``, ``metric``, ``a``, ``b``, ``diff``,
        ``ci_low``, ``ci_high``, ``p_value``, ``test``, ``n_a``, ``n_b``.
    """
    from scipy import stats

    from mtbc_lib.studies.claims import bootstrap_ci, paired_test

    rows = []
    for m in PAIRED_METRICS:
        a, b = _values(table, m, "image"), _values(table, m, "scan")  # _values keeps a class's images
        p, test = paired_test(a, b, m)
        lo, hi = bootstrap_ci(a, b)
        rows.append({"comparison": DESIGNS_DIFF, "metric": m, "a": a.mean(), "b": b.mean(),
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


def finished(results_dir: str | os.PathLike = "results/leakage", data_dir=None, **overrides) -> bool:
    """Whether both designs of a study have all their folds.

    Args:
        results_dir: the study's results folder.
        data_dir: unused (it plays no part in a run's name).
        **overrides: as :func:`design_config`'s (e.g. backbone, profile).

    Returns:
        True when both designs' runs are complete.

    Raises:
        ValueError: as :func:`design_config`.
    """
    from mtbc_lib.studies.ablation import is_complete

    return all(is_complete(Path(results_dir) / design_config(d, **overrides).run_name) for d in DESIGNS)


def finished_studies(studies=STUDIES, results_dir: str | os.PathLike = "results/leakage",
                     **overrides) -> list[tuple[str, str]]:
    """The studies whose two designs are finished.

    Args:
        studies: ``(backbone, profile)`` pairs, in the order wanted.
        results_dir: the study's results folder.
        **overrides: as :func:`finished`'s.

    Returns:
        The finished pairs, in the order given.

    Raises:
        ValueError: none is finished (the message names them).
    """
    done = [(b, p) for b, p in studies if finished(results_dir, backbone=b, profile=p, **overrides)]
    if not done:
        raise ValueError(f"studies: none of {', '.join('/'.join(s) for s in studies) or 'no study'} has both designs "
                         f"finished under {results_dir}; expected the runs of mtbc leakage")
    return done


def write_leakage_csv(results_dir: str | os.PathLike = "results/leakage", out: str | os.PathLike | None = None,
                      studies=STUDIES, **overrides) -> Path:
    """(Re)write ``leakage.csv`` with the rows of every finished study, atomically.

    A study still training is left out with a note on stderr.

    Args:
        results_dir: the study's results folder.
        out: the file to write; None: ``leakage.csv`` next to ``results_dir``.
        studies: ``(backbone, profile)`` pairs.
        **overrides: as :func:`design_config`'s.

    Returns:
        The path written.

    Raises:
        ValueError: no study is finished.
    """
    import sys

    parts = []
    for backbone, profile in studies:
        if not finished(results_dir, backbone=backbone, profile=profile, **overrides):
            print(f"leakage: skipping {backbone}/{profile}: its two designs are not finished under {results_dir}",
                  file=sys.stderr)
            continue
        parts.append(leakage_table(per_image(results_dir, backbone=backbone, profile=profile, **overrides),
                                   backbone, profile))
    if not parts:
        raise ValueError(f"leakage: no study of {', '.join('/'.join(s) for s in studies)} has both designs "
                         f"finished under {results_dir}")
    table = pd.concat(parts, ignore_index=True)
    out = Path(out) if out else Path(results_dir).parent / "leakage.csv"
    return atomic_write(out, lambda p: table.to_csv(p, index=False, float_format="%.4f"))
