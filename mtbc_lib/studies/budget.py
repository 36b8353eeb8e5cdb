"""What a grid's training budget bought: how each run used its epochs (:func:`budget_table`,
:func:`run_budget`), the proposal row against the paper's target (:func:`target_summary`), the
same configurations under other profiles side by side (:func:`profile_table`,
:func:`profile_runs`), and a probe, one setting trained otherwise (e.g. longer), beside its grid
run (:func:`probe_comparison`, :func:`probe_summary`). Read from the runs that :mod:`mtbc_lib.studies.ablation` assembles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtbc_lib.metrics import metric_label
from mtbc_lib.studies.ablation import PAPER_TABLE5, ROWS, SETTINGS, ablation_table, finished_runs, is_complete, run_name

__all__ = ["budget_table", "run_budget", "target_summary", "profile_table", "profile_runs", "probe_comparison",
           "probe_summary", "scale_check", "scale_choice"]


def profile_table(backbone: str, profiles, results_dir: str | os.PathLike = "results",
                  metrics=("dsc_avg", "dsc_normal", "f1_weighted", "acc")) -> pd.DataFrame:
    """The configurations finished under at least two of ``profiles``, side by side:
    index = configuration (the paper's order), columns = (metric, profile | "paper"),
    our fold means (NaN where a profile has not run it) and the paper's U-Net++ mean."""
    tables = {p: ablation_table(backbone, p, results_dir).set_index("configuration") for p in profiles}
    confs = [r.configuration for r in ROWS if sum(r.configuration in t.index for t in tables.values()) >= 2]
    out = pd.DataFrame(index=confs, columns=pd.MultiIndex.from_product([metrics, [*profiles, "paper"]]), dtype=float)
    for conf in confs:
        for m in metrics:
            for p, t in tables.items():
                out.loc[conf, (m, p)] = t.at[conf, m] if conf in t.index else np.nan
            out.loc[conf, (m, "paper")] = PAPER_TABLE5[conf].get(m, (np.nan,))[0]
    return out


def profile_runs(backbone: str, profiles, results_dir: str | os.PathLike = "results") -> dict[str, dict[str, Path]]:
    """The settings finished under at least two of ``profiles``: setting -> {profile:
    results folder}, for the profiles that finished it."""
    done = {p: finished_runs(backbone, p, results_dir) for p in profiles}
    out = {}
    for setting in SETTINGS:
        dirs = {p: d[setting] for p, d in done.items() if setting in d}
        if len(dirs) >= 2:
            out[setting] = dirs
    return out


def probe_comparison(probe_dir: str | os.PathLike, results_dir: str | os.PathLike = "results",
                     metrics=("dsc_avg", "dsc_normal", "f1_weighted", "acc")):
    """A probe (a run of one grid setting with other epochs or folds, e.g. one fold trained
    longer) beside the grid run of the same setting and profile, on the probe's folds.

    Returns (table, histories), or None while the probe has no finished fold: table has
    one row per run, fold and refinement ("none", "PR") with the best epoch out of the
    epochs run and ``metrics``; histories maps each run's label to its per-epoch history
    on those folds (for :func:`plots.profile_curves`). Raises FileNotFoundError when the
    grid run to compare with is not finished."""
    from mtbc_lib.engine.runs import load_run

    probe = load_run(probe_dir)
    if not probe.metrics or probe.config is None:
        return None
    c = probe.config
    setting = next(s for s, v in SETTINGS.items() if v == {"task": c["task"], "oversampling": c["oversampling"]})
    base_dir = Path(results_dir) / run_name(c["backbone"], setting, c["profile"])
    if not is_complete(base_dir):
        raise FileNotFoundError(f"{base_dir}: not a finished run; the probe {probe_dir} is compared with it")
    base = load_run(base_dir)
    folds = sorted(probe.metrics)
    runs = {f"{base_dir.name} ({base.config['epochs']} epochs)": base,
            f"{Path(probe_dir).name} ({c['epochs']} epochs)": probe}
    rows = []
    for label, run in runs.items():
        for k in folds:
            m = run.metrics[k]
            for key, name in (("raw", "none"), ("pr", "PR")):
                rows.append({"run": label, "fold": k, "refinement": name,
                             "best epoch": f"{m['best_epoch']}/{m['epochs']}"} | {x: m[key].get(x, np.nan) for x in metrics})
    histories = {label: run.history[run.history["fold"].isin(folds)] for label, run in runs.items()}
    return pd.DataFrame(rows), histories


def probe_summary(table: pd.DataFrame, metrics=("dsc_avg", "acc")) -> str:
    """One sentence on a :func:`probe_comparison` table: on the probe's folds, each metric
    with PR in the grid run and in the probe (means over those folds)."""
    pr = table[table["refinement"] == "PR"]
    folds = sorted(pr["fold"].unique())
    grid, probe = pr["run"].unique()
    means = pr.groupby("run", sort=False)[[m for m in metrics if m in pr]].mean()
    changes = [f"{metric_label(m)} from {means.at[grid, m]:.3f} to {means.at[probe, m]:.3f}" for m in means
               if not means[m].isna().all()]
    where = f"fold {folds[0]}" if len(folds) == 1 else "folds " + ", ".join(map(str, folds)) + " (means)"
    return f"On {where}, with PR, the longer run changes " + " and ".join(changes) + "."


def run_budget(run_dir: str | os.PathLike) -> pd.DataFrame:
    """How each finished fold of one run used its budget: epochs run, the best epoch, why
    training stopped and the training minutes."""
    from mtbc_lib.engine.runs import load_run

    m = load_run(run_dir).metrics
    return pd.DataFrame([{"fold": k, "epochs run": f["epochs"], "best epoch": f["best_epoch"],
                          "stopped by": f["stopped"], "training minutes": round(f["train_seconds"] / 60, 1)}
                         for k, f in sorted(m.items())])


def _bf16(run_dir: Path, fold: int) -> bool:
    """Whether a fold trained under bf16 autocast (its metrics file's ``amp``; a machine with
    AMX under ``amp="auto"``), else in float32."""
    try:
        return bool(json.loads((run_dir / f"fold{fold}_metrics.json").read_text()).get("amp"))
    except (OSError, ValueError):
        return False


def budget_table(backbone: str, profile: str, results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """How a backbone's finished runs used their training budget, one row per setting:
    the epoch of the best validation loss in each fold (out of the epochs run), in how
    many folds it was the last epoch run (the network was still improving when the budget
    ran out), the training minutes summed over folds, and how many folds trained under
    bf16 autocast (the others in float32: the sessions' machines differ)."""
    rows = []
    for setting, d in finished_runs(backbone, profile, results_dir).items():
        m = json.loads((d / "summary.json").read_text())["per_fold"]
        rows.append({"setting": setting,
                     "best epoch per fold": ", ".join(f"{f['best_epoch']}/{f['epochs']}" for f in m),
                     "folds still improving": sum(f["best_epoch"] == f["epochs"] for f in m),
                     "folds": len(m), "training minutes": round(sum(f["train_seconds"] for f in m) / 60, 1),
                     "folds in bf16": sum(_bf16(d, f["fold"]) for f in m)})
    return pd.DataFrame(rows, columns=["setting", "best epoch per fold", "folds still improving", "folds",
                                       "training minutes", "folds in bf16"])


def target_summary(table: pd.DataFrame, backbone: str, profile: str, results_dir: str | os.PathLike = "results",
                   row: str = "MT+PR+DO", metrics=("dsc_avg", "acc")) -> str:
    """A Markdown paragraph: the proposal row (``row``) of a grid against the paper's values
    (reached, or missed by how much), and what the budget tables say about more epochs: in
    how many of the grid's trainings the best validation loss came at the last epoch, and
    the profile's epochs against the paper's. Computed from the runs; says so when the grid
    is not complete yet."""
    from mtbc_lib.engine.config import PROFILES

    runs = finished_runs(backbone, profile, results_dir)
    if len(runs) < len(SETTINGS):
        return (f"The grid is not complete ({len(runs)} of {len(SETTINGS)} trainings finished): the target is read "
                "once every training has run.")
    r = table.set_index("configuration").loc[row]
    parts = []
    for m in metrics:
        paper = PAPER_TABLE5[row][m][0]
        verdict = "reached" if r[m] >= paper else f"missed by {paper - r[m]:.3f}"
        parts.append(f"{metric_label(m)} {r[m]:.3f} ± {r[f'{m}_sd']:.3f} against the paper's {paper:.3f} ({verdict})")
    folds = [(d, f) for d in runs.values() for f in json.loads((d / "summary.json").read_text())["per_fold"]]
    last = sum(f["best_epoch"] == f["epochs"] for _, f in folds)
    bf16 = sum(_bf16(d, f["fold"]) for d, f in folds)
    epochs, paper_epochs = PROFILES[profile]["epochs"], PROFILES["paper"]["epochs"]
    return (f"**The target**, the paper's {row}: ours {'; '.join(parts)}, over {int(r['folds'])} folds. "
            f"In {last} of the grid's {len(folds)} trainings ({len(runs)} settings of {len(folds) // len(runs)} folds) the best "
            f"validation loss came at the last epoch run: those networks were still improving when the "
            f"`{profile}` profile's {epochs} epochs ran out, where the paper allows up to {paper_epochs} "
            f"({paper_epochs / epochs:.0f}× more). The curves below show how steeply each was still climbing. "
            + (f"All {len(folds)} trainings ran in float32." if bf16 == 0 else
               f"All {len(folds)} trainings ran under bf16 autocast (on the sessions' machines with AMX)."
               if bf16 == len(folds) else
               f"{bf16} of the {len(folds)} trainings ran under bf16 autocast (on the sessions' machines with AMX), "
               "the others in float32 (the budget tables say which)."))


def scale_check(run_dirs) -> pd.DataFrame:
    """The replica's scale check: runs of one setting, fold 0, evaluated on the validation
    split only, that differ in their width factor (``run_dirs``). One row per run: width,
    parameters, epochs (best), minutes of training and per epoch, the best weights' validation
    DSC avg and accuracy (raw and with PR) beside the same weights on their training images."""
    from mtbc_lib.engine.runs import load_run
    from mtbc_lib.networks import build_model, count_parameters

    rows = []
    for d in run_dirs:
        r = load_run(d)
        if 0 not in r.metrics:
            continue
        m, c = r.metrics[0], r.config
        fit = m.get("train_fit", {})
        rows.append({"width": c["width"], "image size": f"{c['image_size']}²",
                     "parameters": count_parameters(build_model(c["backbone"], c["task"], width=c["width"])),
                     "epochs (best)": f"{m['epochs']} ({m['best_epoch']})", "minutes": m["train_seconds"] / 60,
                     "s / epoch": m["train_seconds"] / m["epochs"],
                     "val DSC avg": m["raw"]["dsc_avg"], "val DSC avg (PR)": m["pr"]["dsc_avg"],
                     "val accuracy": m["raw"]["acc"], "train DSC avg": fit.get("dsc_avg", np.nan),
                     "train accuracy": fit.get("acc", np.nan), "val images": m["n_val"]})
    return pd.DataFrame(rows).set_index("width") if rows else pd.DataFrame()


def scale_choice(table: pd.DataFrame) -> str:
    """Sentences on :func:`scale_check`: the two widths' validation scores, costs and fit, and
    the width the ``replica`` profile uses."""
    from mtbc_lib.engine.config import PROFILES

    if len(table) < 2:
        return "The scale check has not finished both widths yet."
    small, large = table.index.min(), table.index.max()
    s, b = table.loc[small], table.loc[large]
    images, chosen = int(s["val images"]), PROFILES["replica"]["width"]
    gap = round((b["val accuracy"] - s["val accuracy"]) * images)
    return (f"At width {large:g} the network reaches validation DSC avg {b['val DSC avg']:.3f} and accuracy "
            f"{b['val accuracy']:.3f}, at width {small:g} {s['val DSC avg']:.3f} and {s['val accuracy']:.3f}: "
            f"{abs(gap)} of the {images} validation images {'more' if gap > 0 else 'fewer'} classified right at "
            f"width {large:g}, at {b['s / epoch'] / s['s / epoch']:.1f} times the cost of an epoch. On its training "
            f"images each scores little better (accuracy {s['train accuracy']:.3f} and {b['train accuracy']:.3f}). "
            f"The replica profile uses width {chosen:g}.")
