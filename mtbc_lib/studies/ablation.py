"""The ablation grid of the paper's Table 5: six trainings per backbone, ten rows.

Only six trainings are needed per backbone — ST(Seg), ST(Seg)+DO, ST(Cls), ST(Cls)+DO,
MT, MT+DO; every "+PR" row, and the ST(Seg+Cls)+PR rows that combine a separately
trained segmenter and classifier, are computed here from the per-image test outputs
that :mod:`mtbc_lib.engine.train` saves (``fold<k>_test.csv``), without retraining.

:func:`ablation_table` assembles ``results/ablation.csv`` (columns: :data:`ABLATION_COLUMNS`);
what the training budget bought (other profiles, probes, the target) is :mod:`mtbc_lib.studies.budget`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtbc_lib.core import CLASSES, NORMAL, atomic_write
from mtbc_lib.engine.config import TrainConfig
from mtbc_lib.engine.runs import fold_files
from mtbc_lib.metrics import (
    CLS_METRICS,
    SEG_METRICS,
    TABLE_METRICS,
    aggregate,
    classification_metrics,
    metric_label,
    segmentation_metrics,
)
from mtbc_lib.networks.registry import BACKBONES
from mtbc_lib.refine import refine_labels, refined_dice

#: The six trainings per backbone: setting name -> train.ipynb parameters.
SETTINGS: dict[str, dict] = {
    "st-seg": {"task": "seg", "oversampling": False},
    "st-seg-do": {"task": "seg", "oversampling": True},
    "st-cls": {"task": "cls", "oversampling": False},
    "st-cls-do": {"task": "cls", "oversampling": True},
    "mt": {"task": "mt", "oversampling": False},
    "mt-do": {"task": "mt", "oversampling": True},
}


@dataclass(frozen=True)
class Row:
    """One configuration of Table 5: which run gives the mask, which the label, and whether prediction
    refinement (PR) is applied on top.

    Attributes:
        configuration: the name exactly as in the paper's Table 5.
        seg: the setting (:data:`SETTINGS`) whose masks are scored; None: no DSC columns.
        cls: the setting whose labels are scored; None: no F1/ACC columns.
        pr: apply prediction refinement.
    """

    configuration: str  # name exactly as in the paper's Table 5
    seg: str | None  # setting whose masks are scored (None: no DSC columns)
    cls: str | None  # setting whose labels are scored (None: no F1/ACC columns)
    pr: bool = False


#: The ten rows of Table 5, in the paper's order.
ROWS: tuple[Row, ...] = (
    Row("ST(Seg)", "st-seg", None),
    Row("ST(Seg)+DO", "st-seg-do", None),
    Row("ST(Cls)", None, "st-cls"),
    Row("ST(Cls)+DO", None, "st-cls-do"),
    Row("ST(Seg+Cls)+PR", "st-seg", "st-cls", pr=True),
    Row("ST(Seg+Cls)+PR+DO", "st-seg-do", "st-cls-do", pr=True),
    Row("MT", "mt", "mt"),
    Row("MT+PR", "mt", "mt", pr=True),
    Row("MT+DO", "mt-do", "mt-do"),
    Row("MT+PR+DO", "mt-do", "mt-do", pr=True),
)

#: How the book names the backbones.
BACKBONE_TITLES = {name: entry.title for name, entry in BACKBONES.items()}


def name_list(param: str, value, valid=None, empty_ok: bool = False) -> list[str]:
    """A list-valued notebook parameter (``other_profiles``, ``probes``) as a list.

    Args:
        param: the parameter's name, for the message.
        value: a list, or one name or a comma-separated string (what ``papermill -p other_profiles
            steady`` passes).
        valid: the allowed names; None: any name.
        empty_ok: accept an empty list.

    Returns:
        The names, blanks stripped.

    Raises:
        ValueError: a name not in ``valid``, or an empty list without ``empty_ok`` (naming the
            parameter).
    """
    names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    unknown = [n for n in names if valid is not None and n not in valid]
    if unknown or not (names or empty_ok):
        raise ValueError(f"{param}: unknown {unknown or 'empty list'}; expected names out of {', '.join(valid or [])}")
    return names


def grid_list(param: str, value) -> list[tuple[str, str]]:
    """A list of grids as ``(backbone, profile)`` pairs.

    Args:
        param: the parameter's name, for the message.
        value: ``"backbone/profile"`` entries: a list, or a comma-separated string.

    Returns:
        The ``(backbone, profile)`` pairs.

    Raises:
        ValueError: an empty list, or an entry that is not a known backbone and profile (naming the
            parameter and the first such entry).
    """
    from mtbc_lib.engine.config import PROFILES

    out = []
    for entry in name_list(param, value):
        backbone, _, profile = entry.partition("/")
        if backbone not in BACKBONE_TITLES or profile not in PROFILES:
            raise ValueError(f"{param}: {entry!r} is not backbone/profile; expected e.g. 'unetplusplus/cpu' with a "
                             f"backbone out of {', '.join(BACKBONE_TITLES)} and a profile out of {', '.join(PROFILES)}")
        out.append((backbone, profile))
    return out


#: The published Table 5 (U-Net++, Curated BUSI): configuration -> {metric: (mean, sd)}.
PAPER_TABLE5: dict[str, dict[str, tuple[float, float]]] = {}
_PAPER_ROWS = """
ST(Seg)            .799 .036 .731 .040 .000 .000 .661 .017 - - - - - - - - - -
ST(Seg)+DO         .797 .056 .730 .052 .234 .469 .692 .044 - - - - - - - - - -
ST(Cls)            - - - - - - - - .707 .057 .673 .069 .694 .048 .693 .038 .698 .038
ST(Cls)+DO         - - - - - - - - .745 .018 .717 .077 .643 .088 .720 .042 .725 .036
ST(Seg+Cls)+PR     .744 .051 .726 .041 .719 .081 .734 .031 .707 .057 .673 .069 .694 .048 .693 .038 .698 .038
ST(Seg+Cls)+PR+DO  .770 .046 .730 .052 .656 .231 .739 .023 .751 .025 .717 .077 .679 .116 .729 .049 .733 .043
MT                 .806 .055 .713 .066 .000 .000 .658 .025 .788 .018 .687 .070 .643 .162 .730 .036 .742 .028
MT+PR              .787 .057 .707 .062 .594 .277 .731 .025 .788 .018 .687 .070 .643 .162 .730 .036 .742 .028
MT+DO              .773 .050 .717 .058 .703 .156 .742 .018 .830 .015 .789 .023 .721 .094 .799 .018 .802 .027
MT+PR+DO           .773 .050 .711 .057 .781 .157 .751 .018 .826 .029 .791 .025 .741 .060 .801 .026 .802 .018
"""
for _line in _PAPER_ROWS.strip().splitlines():
    _name, *_vals = _line.split()
    PAPER_TABLE5[_name] = {m: (float(_vals[2 * i]), float(_vals[2 * i + 1]))
                           for i, m in enumerate(TABLE_METRICS) if _vals[2 * i] != "-"}


def run_name(backbone: str, setting: str, profile: str) -> str:
    """The name of one training of the grid: its results folder and executed notebook.

    The one scheme of :meth:`TrainConfig.derived_run_name`, e.g. ``unetplusplus-mt-do-fast``.

    Args:
        backbone: a backbone name.
        setting: a setting of :data:`SETTINGS`.
        profile: a training profile.

    Returns:
        The run name.

    Raises:
        ValueError: an unknown setting, or a backbone or profile :meth:`TrainConfig.resolve` rejects.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting: unknown {setting!r}; valid: {', '.join(SETTINGS)}")
    return TrainConfig(backbone=backbone, profile=profile, **SETTINGS[setting]).resolve().run_name


def _fold_tables(run_dir: Path) -> dict[int, pd.DataFrame]:
    """The per-image test outputs of a finished run, by fold (index = (class, id))."""
    tables = {k: pd.read_csv(f).set_index(["class", "id"]).sort_index()
              for k, f in fold_files(run_dir, "test.csv").items()}
    if not tables:
        raise FileNotFoundError(f"{run_dir}: no fold*_test.csv; expected the results of a finished training run")
    return tables


def row_outputs(row: Row, runs: dict[str, Path]) -> pd.DataFrame:
    """Per-image test outputs of one configuration over all folds.

    With PR the final label is normal when the classifier says normal or the segmenter's mask is
    empty, and a normal label empties the mask (so its Dice is 1 for a normal image, 0 otherwise).

    Args:
        row: the configuration.
        runs: each setting the row needs -> its results folder.

    Returns:
        A ``pandas.DataFrame`` with columns ``class``, ``id``, ``fold``, ``label``, ``pred`` (the final
        label; absent without a classifier), ``dice`` (the final per-image Dice) and ``mask_empty``
        (bool: the final binarised mask is empty; both absent without a segmenter).

    Raises:
        FileNotFoundError: a results folder holds no ``fold*_test.csv``.
        ValueError: the segmenter and the classifier were tested on different images in a fold.
    """
    seg = _fold_tables(runs[row.seg]) if row.seg else None
    cls = _fold_tables(runs[row.cls]) if row.cls else None
    out = []
    for k in sorted(set(seg or cls) & set(cls or seg)):
        s, c = (seg[k] if seg else None), (cls[k] if cls else None)
        if s is not None and c is not None and not s.index.equals(c.index):
            raise ValueError(f"fold {k}: {row.seg} and {row.cls} were tested on different images; "
                             "expected the same splits (same curation and seed)")
        ref = s if s is not None else c
        t = pd.DataFrame({"fold": k, "label": ref["label"].to_numpy()}, index=ref.index)
        if c is not None:
            t["pred"] = c["pred"].to_numpy().astype(np.int64)
        if s is not None:
            t["dice"] = s["dice"].to_numpy()
            t["mask_empty"] = s["mask_empty"].to_numpy().astype(bool)
        if row.pr:
            t["pred"] = refine_labels(t["pred"].to_numpy(), t["mask_empty"].to_numpy())
            t["dice"] = refined_dice(t["dice"], t["pred"], t["label"])
            t["mask_empty"] = t["pred"].to_numpy() == NORMAL  # PR empties the mask of a normal label
        out.append(t)
    return pd.concat(out).reset_index()


def fold_metrics(row: Row, runs: dict[str, Path]) -> pd.DataFrame:
    """Table 5's metrics of one configuration, one row per fold.

    Args:
        row: the configuration.
        runs: each setting the row needs -> its results folder.

    Returns:
        A ``pandas.DataFrame``: ``fold`` and the configuration's DSC and/or F1/ACC columns.

    Raises:
        FileNotFoundError: as :func:`row_outputs`.
        ValueError: as :func:`row_outputs`.
    """
    per_fold = []
    for k, t in row_outputs(row, runs).groupby("fold"):
        m = {"fold": k}
        if "dice" in t:
            m.update({n: v for n, v in segmentation_metrics(t["dice"], t["label"]).items() if n in SEG_METRICS})
        if "pred" in t:
            m.update({n: v for n, v in classification_metrics(t["label"], t["pred"]).items() if n in CLS_METRICS})
        per_fold.append(m)
    return pd.DataFrame(per_fold)


def row_metrics(row: Row, runs: dict[str, Path]) -> dict[str, float]:
    """Fold mean and SD (``metrics.aggregate``) of Table 5's metrics for one configuration.

    Args:
        row: the configuration.
        runs: each setting the row needs -> its results folder.

    Returns:
        ``{metric: mean, metric + "_sd": sd}`` for the configuration's metrics, and ``folds`` (the
        number of folds).

    Raises:
        FileNotFoundError: as :func:`row_outputs`.
        ValueError: as :func:`row_outputs`.
    """
    per_fold = fold_metrics(row, runs)
    names = (SEG_METRICS if row.seg else ()) + (CLS_METRICS if row.cls else ())
    return aggregate(per_fold.to_dict("records"), names) | {"folds": len(per_fold)}


def runs_of(row: Row, backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> dict[str, Path] | None:
    """The results folders a configuration needs.

    Args:
        row: the configuration.
        backbone: the grid's backbone.
        profile: the grid's profile.
        results_dir: the results folder.

    Returns:
        Setting -> results folder for the row's settings, or None while any is incomplete.
    """
    done, needed = finished_runs(backbone, profile, results_dir), [s for s in (row.seg, row.cls) if s]
    return {s: done[s] for s in needed} if all(s in done for s in needed) else None


#: Columns of ``results/ablation.csv``.
ABLATION_COLUMNS = ["backbone", "profile", "configuration"] + [c for m in TABLE_METRICS for c in (m, m + "_sd")] \
    + ["folds"]


def ablation_table(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Table 5 for one backbone from the finished runs under ``results_dir``.

    Args:
        backbone: the grid's backbone.
        profile: the grid's profile.
        results_dir: the results folder.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`ABLATION_COLUMNS`, one row per configuration whose
        runs are complete (metrics and ``_sd`` twins; NaN where the configuration has no such metric).
    """
    results_dir = Path(results_dir)
    rows = []
    for row in ROWS:
        runs = runs_of(row, backbone, profile, results_dir)
        if runs is None:
            continue
        rows.append({"backbone": backbone, "profile": profile, "configuration": row.configuration}
                    | row_metrics(row, runs))
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def run_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The Table 5 rows one finished run gives on its own, for a run outside the grid.

    An MT+DO run gives MT+DO and MT+PR+DO; backbone and profile come from its ``config.json``.

    Args:
        run_dir: the run's results folder.

    Returns:
        A ``pandas.DataFrame`` in :func:`ablation_table`'s columns.

    Raises:
        FileNotFoundError: the folder has no ``config.json``, or no ``fold*_test.csv``.
    """
    from mtbc_lib.engine.runs import read_config

    run_dir = Path(run_dir)
    c = read_config(run_dir)
    if c is None:
        raise FileNotFoundError(f"{run_dir}: no config.json; expected the results folder of a training run")
    setting = c.setting()
    rows = [{"backbone": c.backbone, "profile": c.profile, "configuration": r.configuration}
            | row_metrics(r, {setting: run_dir}) for r in ROWS if {r.seg, r.cls} - {None} == {setting}]
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def comparison_runs(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> tuple[Path, Path] | None:
    """The segmentation-only run and the multi-task run the results chapter sets side by side.

    Args:
        backbone: the grid's backbone.
        profile: the grid's profile.
        results_dir: the results folder.

    Returns:
        ``(ST run folder, MT run folder)`` of the first complete pair of (ST(Seg)+DO, MT+DO),
        (ST(Seg), MT), (ST(Seg), MT+DO), (ST(Seg)+DO, MT); None while there is none.
    """
    done = finished_runs(backbone, profile, results_dir)
    pairs = (("st-seg-do", "mt-do"), ("st-seg", "mt"), ("st-seg", "mt-do"), ("st-seg-do", "mt"))
    return next(((done[st], done[mt]) for st, mt in pairs if st in done and mt in done), None)


def finished_runs(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> dict[str, Path]:
    """The complete trainings of a grid.

    Args:
        backbone: the grid's backbone.
        profile: the grid's profile.
        results_dir: the results folder.

    Returns:
        Setting -> results folder of every complete training, in :data:`SETTINGS` order.
    """
    dirs = {s: Path(results_dir) / run_name(backbone, s, profile) for s in SETTINGS}
    return {s: d for s, d in dirs.items() if is_complete(d)}


def complete_grids(grids, results_dir: str | os.PathLike = "results",
                   what: str | None = "results") -> list[tuple[str, str]]:
    """The grids whose six trainings (:data:`SETTINGS`) are all complete.

    For each other grid one line on stderr says which settings are missing and that ``what`` skips
    it.

    Args:
        grids: ``(backbone, profile)`` pairs.
        results_dir: the results folder.
        what: who skips an incomplete grid, for the line; None: no line (the book simply does not
            show an unfinished grid).

    Returns:
        The complete ``(backbone, profile)`` pairs, in the order given.
    """
    import sys

    out = []
    for backbone, profile in grids:
        done = finished_runs(backbone, profile, results_dir)
        missing = [s for s in SETTINGS if s not in done]
        if missing and what:
            print(f"{what}: skipping {backbone}/{profile}: {', '.join(missing)} not finished under {results_dir}",
                  file=sys.stderr)
        elif not missing:
            out.append((backbone, profile))
    return out


def is_complete(run_dir: Path) -> bool:
    """Whether a run is complete: its ``summary.json`` exists (the engine writes it after the last fold).

    Args:
        run_dir: the run's results folder.

    Returns:
        True when complete.
    """
    return (Path(run_dir) / "summary.json").is_file()


def write_ablation_csv(results_dir: str | os.PathLike = "results") -> Path:
    """(Re)write ``results_dir/ablation.csv``, atomically.

    The rows are those of every backbone and profile with complete grid runs there (a run whose name is
    not the grid's scheme is a variant and is left out).

    Args:
        results_dir: the results folder (must exist).

    Returns:
        The path of ``ablation.csv``.
    """
    from mtbc_lib.engine.runs import read_config

    results_dir = Path(results_dir)
    pairs = set()
    for p in results_dir.iterdir():
        c = read_config(p) if is_complete(p) else None
        if c is not None and p.name == run_name(c.backbone, c.setting(), c.profile):  # a grid run, not a variant
            pairs.add((c.backbone, c.profile))
    pairs = sorted(pairs)
    tables = [ablation_table(b, prof, results_dir) for b, prof in pairs]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=ABLATION_COLUMNS)
    path = results_dir / "ablation.csv"
    return atomic_write(path, lambda p: table.to_csv(p, index=False, float_format="%.4f"))


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our Table 5 beside the paper's, cell by cell.

    Args:
        table: one backbone and profile's table, as :func:`ablation_table` gives it.

    Returns:
        A float ``pandas.DataFrame`` indexed by configuration (all ten, in the paper's order), columns
        ``(metric, "ours" | "paper" | "diff")``, diff = ours − paper (NaN where either is missing).
    """
    ours = table.set_index("configuration")
    cols = pd.MultiIndex.from_product([TABLE_METRICS, ["ours", "paper", "diff"]])
    out = pd.DataFrame(index=[r.configuration for r in ROWS], columns=cols, dtype=float)
    for conf in out.index:
        for m in TABLE_METRICS:
            paper = PAPER_TABLE5[conf].get(m, (np.nan, np.nan))[0]
            mine = ours.at[conf, m] if conf in ours.index else np.nan
            out.loc[conf, (m, "ours")], out.loc[conf, (m, "paper")] = mine, paper
            out.loc[conf, (m, "diff")] = mine - paper
    return out


def _short(x: float) -> str:
    """.751: three decimals without the leading zero, as the paper's tables write them."""
    return f"{x:.3f}".replace("0.", ".", 1)


def comparison_styler(table: pd.DataFrame):
    """An HTML view of :func:`compare_with_paper`.

    Each cell reads "ours±SD (paper)", coloured by the difference (green: ours higher, red: lower;
    white within ±.02).

    Args:
        table: one backbone and profile's table, as :func:`ablation_table` gives it.

    Returns:
        A ``pandas`` ``Styler`` with a caption.
    """
    cmp = compare_with_paper(table)
    ours = table.set_index("configuration")
    text = pd.DataFrame(index=cmp.index, columns=list(TABLE_METRICS), dtype=object)
    diff = cmp.xs("diff", axis=1, level=1)
    for conf in cmp.index:
        for m in TABLE_METRICS:
            o, p = cmp.at[conf, (m, "ours")], cmp.at[conf, (m, "paper")]
            sd = ours.at[conf, m + "_sd"] if conf in ours.index else np.nan
            if np.isnan(p) and np.isnan(o):
                text.at[conf, m] = "–"
            elif np.isnan(o):
                text.at[conf, m] = f"not run ({_short(p)})"
            else:
                text.at[conf, m] = f"{_short(o)}±{_short(sd)} ({_short(p)})"

    def colour(col):
        d = diff[col.name]
        return ["" if np.isnan(v) or abs(v) <= 0.02 else
                f"background-color: {'#c8e6c9' if v > 0 else '#ffcdd2'}" for v in d]

    who = ", ".join(f"{BACKBONE_TITLES.get(b, b)}, {p} profile" for b, p in
                    table[["backbone", "profile"]].drop_duplicates().itertuples(index=False))
    return text.style.apply(colour, axis=0).set_caption(
        f"Ours ({who or 'no finished run'}: mean ± SD over folds), the paper's U-Net++ value in brackets; "
        "green: we score over .02 higher, red: over .02 lower")


def gap_summary(table: pd.DataFrame, metrics=("dsc_avg", "acc"), outputs: dict | None = None) -> str:
    """One Markdown line per finished configuration: our mean of ``metrics`` against the paper's and the
    gap.

    Args:
        table: an :func:`ablation_table` result.
        metrics: the metrics to report.
        outputs: configuration -> :func:`row_outputs`, to flag a classifier that gave every test image
            one class; None: no flag.

    Returns:
        The lines joined by newlines, or one line saying no configuration has finished runs yet.
    """
    lines = []
    for _, r in table.iterrows():
        parts = []
        for m in metrics:
            paper = PAPER_TABLE5[r["configuration"]].get(m)
            if paper is not None and np.isfinite(r[m]):
                parts.append(f"{metric_label(m)} {r[m]:.3f} vs {paper[0]:.3f} ({r[m] - paper[0]:+.3f})")
        pred = (outputs or {}).get(r["configuration"], pd.DataFrame()).get("pred")
        if parts and pred is not None and pred.nunique() == 1:
            parts[-1] += (f" — every test image called *{CLASSES[int(pred.iloc[0])]}*, so the accuracy is that "
                          "class's share of the test images")
        if parts:
            lines.append(f"- **{r['configuration']}** ({r['folds']} folds): " + "; ".join(parts))
    return "\n".join(lines) or "- no configuration has finished runs yet"
