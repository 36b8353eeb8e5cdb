"""The paper's other findings, measured: how often label and mask disagree, and the false
positives and negatives of each output, before prediction refinement.

The paper argues that a multi-task network gives labels and masks that agree more often,
and fewer false positives and negatives, than single-task networks; PR then forces the
agreement. These measures are taken on the raw outputs (no PR), per configuration of a
grid (:data:`CONFIGURATIONS`), over all test images of the four folds. Each is a share in
[0, 1] of the images named below, NaN where the configuration lacks the output it needs:

- ``inconsistent``: label and mask disagree — a normal label with a non-empty mask, or a
  lesion (benign or malignant) label with an empty mask; over all test images; only for
  a configuration with both a label and a mask;
- ``false_positive_mask``: a drawn (non-empty) mask, over the normal images;
- ``false_positive_label``: a lesion label, over the normal images;
- ``false_negative_mask``: an empty mask, over the lesion (benign or malignant) images;
- ``false_negative_label``: a normal label, over the lesion images.

``results/consistency.csv`` has one row per (backbone, profile, configuration)
(:data:`CONSISTENCY_COLUMNS`); ``mtbc claims BACKBONE PROFILE [BACKBONE PROFILE ...]``
writes it beside ``claims.csv``. :func:`mt_against_single_task` sets MT
beside the best single-task configuration, measure by measure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtbc_lib.core import NORMAL, atomic_write
from mtbc_lib.studies.ablation import ROWS, Row, complete_grids, row_outputs, runs_of

#: The measures, in the file's column order (lower is better for every one).
MEASURES: tuple[str, ...] = ("inconsistent", "false_positive_mask", "false_positive_label", "false_negative_mask",
                             "false_negative_label")
#: Columns of ``results/consistency.csv``.
CONSISTENCY_COLUMNS = ["backbone", "profile", "configuration", *MEASURES, "n_images"]

_TABLE5 = {r.configuration: r for r in ROWS}
#: The configurations measured: Table 5's rows with their own outputs, and the separately
#: trained segmenter and classifier side by side without PR (ST(Seg+Cls), likewise +DO).
CONFIGURATIONS: tuple[Row, ...] = (
    _TABLE5["ST(Seg)"], _TABLE5["ST(Seg)+DO"], _TABLE5["ST(Cls)"], _TABLE5["ST(Cls)+DO"],
    Row("ST(Seg+Cls)", "st-seg", "st-cls"), Row("ST(Seg+Cls)+DO", "st-seg-do", "st-cls-do"),
    _TABLE5["MT"], _TABLE5["MT+DO"],
)
#: The multi-task configurations; every other one of :data:`CONFIGURATIONS` is single-task.
MULTI_TASK = ("MT", "MT+DO")


def consistency_measures(outputs: pd.DataFrame) -> dict[str, float]:
    """The five measures (:data:`MEASURES`, module docstring) of one configuration's per-image outputs.

    A measure whose output is absent, or whose images are absent (no normal image, no lesion image),
    is NaN.

    Args:
        outputs: per-image outputs with column ``label`` (true class) and ``pred`` (predicted class)
            and/or ``mask_empty`` (bool), as :func:`mtbc_lib.studies.ablation.row_outputs` gives them
            for a row without PR.

    Returns:
        ``{measure: share in [0, 1] or NaN}`` for every measure, and ``n_images``.

    Raises:
        ValueError: ``outputs`` lacks ``label``, or has neither ``pred`` nor ``mask_empty``.
    """
    if "label" not in outputs or not ({"pred", "mask_empty"} & set(outputs.columns)):
        raise ValueError("outputs: expected a label column and a pred and/or mask_empty column "
                         "(ablation.row_outputs of a row without PR)")
    truth_normal = outputs["label"].to_numpy() == NORMAL
    label_normal = outputs["pred"].to_numpy() == NORMAL if "pred" in outputs else None
    empty = outputs["mask_empty"].to_numpy().astype(bool) if "mask_empty" in outputs else None

    def share(hit, among):
        return float(hit[among].mean()) if hit is not None and among.any() else float("nan")

    everything = np.ones(len(outputs), bool)
    return {"inconsistent": share(None if label_normal is None or empty is None else label_normal != empty,
                                  everything),
            "false_positive_mask": share(None if empty is None else ~empty, truth_normal),
            "false_positive_label": share(None if label_normal is None else ~label_normal, truth_normal),
            "false_negative_mask": share(empty, ~truth_normal),
            "false_negative_label": share(label_normal, ~truth_normal),
            "n_images": len(outputs)}


def consistency_table(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """The measures of every configuration of one grid whose runs are complete.

    Args:
        backbone: the grid's backbone.
        profile: the grid's profile.
        results_dir: the results folder.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`CONSISTENCY_COLUMNS`, in :data:`CONFIGURATIONS`
        order.
    """
    rows = []
    for row in CONFIGURATIONS:
        runs = runs_of(row, backbone, profile, results_dir)
        if runs is not None:
            rows.append({"backbone": backbone, "profile": profile, "configuration": row.configuration}
                        | consistency_measures(row_outputs(row, runs)))
    return pd.DataFrame(rows, columns=CONSISTENCY_COLUMNS)


def consistency_tables(grids, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """:func:`consistency_table` of every complete grid, one after the other.

    An incomplete grid is skipped with a one-line note on stderr.

    Args:
        grids: ``(backbone, profile)`` pairs.
        results_dir: the results folder.

    Returns:
        A ``pandas.DataFrame`` with columns :data:`CONSISTENCY_COLUMNS` (empty when no grid is
        complete).
    """
    tables = [consistency_table(b, p, results_dir) for b, p in complete_grids(grids, results_dir, "consistency")]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CONSISTENCY_COLUMNS)


def write_consistency_csv(grids, results_dir: str | os.PathLike = "results") -> Path:
    """(Re)write ``results_dir/consistency.csv`` from every complete grid, atomically.

    Args:
        grids: ``(backbone, profile)`` pairs.
        results_dir: the results folder.

    Returns:
        The path of ``consistency.csv``.

    Raises:
        ValueError: no grid is complete (the file is left as it was).
    """
    grids = [tuple(g) for g in grids]
    table = consistency_tables(grids, results_dir)
    if table.empty:
        raise ValueError(f"grids: none of {', '.join('/'.join(g) for g in grids) or 'no grid'} has its six "
                         f"trainings finished under {results_dir}")
    return atomic_write(Path(results_dir) / "consistency.csv",
                        lambda p: table.to_csv(p, index=False, float_format="%.4f"))


def mt_against_single_task(table: pd.DataFrame, mt: str = "MT") -> pd.DataFrame:
    """"MT beats every single-task configuration", measure by measure, for one grid.

    Args:
        table: :func:`consistency_table` rows of one backbone and profile.
        mt: the multi-task configuration to set against them (``MT`` or ``MT+DO``).

    Returns:
        A ``pandas.DataFrame``, one row per measure of :data:`MEASURES`: ``measure``, ``mt`` (its name),
        ``mt_value``, ``best_single_task`` (the single-task configuration with the lowest value; ties:
        the first in :data:`CONFIGURATIONS` order), ``best_single_task_value``, and ``mt_lower`` (True
        when MT's value is strictly lower — better; NA when either value is missing).

    Raises:
        ValueError: ``table`` holds more than one backbone and profile, or lacks ``mt``.
    """
    if table[["backbone", "profile"]].drop_duplicates().shape[0] > 1:
        raise ValueError("table: expected the rows of one backbone and profile")
    t = table.set_index("configuration")
    if mt not in t.index:
        raise ValueError(f"mt: {mt!r} is not in the table; expected one of {', '.join(t.index)}")
    single = t.loc[[c for c in t.index if c not in MULTI_TASK]]
    rows = []
    for m in MEASURES:
        values = single[m].dropna()
        best = values.idxmin() if len(values) else None
        mine = t.at[mt, m]
        rows.append({"measure": m, "mt": mt, "mt_value": mine, "best_single_task": best,
                     "best_single_task_value": values.min() if best is not None else np.nan,
                     "mt_lower": pd.NA if best is None or np.isnan(mine) else bool(mine < values.min())})
    return pd.DataFrame(rows)

