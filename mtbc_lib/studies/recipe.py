"""The recipe study: which training recipe learns most per CPU-minute on two cores?

Every candidate trains the same setting (MT+DO, fold 0 of the paper's splits) for about the
same CPU time, and is judged on the **validation** split only: the best-validation-loss
weights are evaluated on it with and without prediction refinement (``evaluate_on="val"``),
so the test fold stays unread until the chosen recipe's final grid.

    mtbc recipe                 # run every candidate not yet finished, in order
    mtbc recipe cosine lowres   # only these
    mtbc recipe cls-paper cls-clsbn   # the classifier probe (CLASSIFIER_PROBE)

Results: ``results/recipe/<run name>/`` (the usual run files, fold 0 only). Candidates are
:class:`~mtbc_lib.engine.config.TrainConfig` overrides of :data:`BASE`. The budget is set in
epochs, chosen so that each candidate costs about :data:`BUDGET_MINUTES` on two cores at the
speeds of ``benchmarks/results/bench_models.md``. The study measures the cost as the process's
CPU time ÷ 2 (less sensitive than wall time to other work on the machine; each history row
records the load) and compares the candidates from their per-epoch histories.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtbc_lib.core import CLASSES, atomic_write
from mtbc_lib.engine.config import TrainConfig

__all__ = ["BUDGET_MINUTES", "BASE", "CANDIDATES", "candidate_config", "train_candidates", "study_histories",
           "study_table", "study_curves", "candidates_table", "fit_check", "fit_table", "loss_balance", "fit_verdict",
           "UNDER_FIT_GAP", "score", "ranking", "RECIPE_FIELDS", "profile_choice", "CLASSIFIER_PROBE",
           "classifier_probe",
           "classifier_curves", "classifier_verdict"]

#: Minutes on two idle cores (train + validation epochs) each candidate is planned to cost.
BUDGET_MINUTES = 24.0
#: What every candidate shares: the paper's U-Net++, MT+DO, fold 0, batch 8, fp32 (the same
#: arithmetic on any CPU), validation-only evaluation.
BASE = dict(backbone="unetplusplus", task="mt", oversampling=True, profile="steady", folds=[0],
            amp="off", channels_last="off", evaluate_on="val", out_dir="results/recipe")
_COSINE = dict(optimizer="adamw", weight_decay=0.01, schedule="cosine", warmup_epochs=0.5, lr=3e-4)
#: name -> (what it tests, overrides of BASE)
CANDIDATES: dict[str, tuple[str, dict]] = {
    "paper": ("the published recipe at batch 8: Adam 1e-4, ReduceLROnPlateau",
              dict(epochs=3, patience=3)),
    "cosine": ("AdamW (weight decay .01), warm-up half an epoch, cosine decay from 3e-4",
               dict(epochs=3, patience=3, **_COSINE)),
    "lowres": ("cosine, with the first 6 of 7 epochs at 64² (progressive resizing)",
               dict(epochs=7, patience=7, low_res_epochs=6, **_COSINE)),
    "ema": ("cosine, validated and tested with an exponential moving average of the weights (decay .99; "
            "batch-norm statistics recomputed for the averaged weights)",
            dict(epochs=3, patience=3, ema=0.99, **_COSINE)),
    "r34": ("cosine on the ResNet-34 U-Net++ (1.5× the paper's network's throughput here)",
            dict(backbone="unetplusplus-r34", epochs=4, patience=4, **_COSINE)),
    "batch4": ("cosine at batch 4 (twice the steps per epoch, same peak rate)",
               dict(epochs=3, patience=3, batch_size=4, **_COSINE)),
    "batch16": ("cosine at batch 16 (half the steps per epoch, same peak rate)",
                dict(epochs=3, patience=3, batch_size=16, **_COSINE)),
    "clip": ("cosine with the gradient's norm clipped at 1",
             dict(epochs=3, patience=3, grad_clip=1.0, **_COSINE)),
    "peak": ("cosine from a peak rate of 1e-3 (3.3× cosine's)",
             dict(epochs=3, patience=3, **(_COSINE | dict(lr=1e-3)))),
    "adam": ("cosine with Adam instead of AdamW (no weight decay)",
             dict(epochs=3, patience=3, **(_COSINE | dict(optimizer="adam", weight_decay=0.0)))),
    "zscore": ("cosine, each input image standardised (zero mean, unit SD) instead of [0, 1] grey levels",
               dict(backbone="unetplusplus-std", epochs=3, patience=3, **_COSINE)),
}


#: A probe beside the study, run only when named: the classifier alone (ST(Cls), no DO)
#: under the ``cpu`` profile, fold 0, validation only: the paper's U-Net++ against the same
#: network with BatchNorm in the classification branch's last block (``unetplusplus-clsbn``),
#: to see whether the branch's InstanceNorm before its average pool holds the classifier back.
CLASSIFIER_PROBE: dict[str, tuple[str, dict]] = {
    "cls-paper": ("the paper's U-Net++, classifier alone (ST(Cls)), the cpu profile",
                  dict(task="cls", oversampling=False, profile="cpu")),
    "cls-clsbn": ("the same with BatchNorm in the classification branch's last block",
                  dict(backbone="unetplusplus-clsbn", task="cls", oversampling=False, profile="cpu")),
}


def candidate_config(name: str, **overrides) -> TrainConfig:
    """The resolved TrainConfig of candidate (or classifier probe) ``name`` (``overrides``:
    e.g. data_dir)."""
    known = CANDIDATES | CLASSIFIER_PROBE
    if name not in known:
        raise ValueError(f"recipe candidate {name!r}: expected one of {', '.join(known)}")
    return TrainConfig(**{**BASE, **known[name][1], **overrides}).resolve()


def train_candidates(names: list[str] | None = None, progress: bool = True, **overrides) -> None:
    """Train the candidates ``names`` (all by default) one after the other; finished ones
    are skipped, an interrupted one resumes (the usual run files and holds)."""
    from mtbc_lib.engine import train

    arrays = None
    for name in names or list(CANDIDATES):
        cfg = candidate_config(name, **overrides)
        if progress:
            print(f"== {name}: {(CANDIDATES | CLASSIFIER_PROBE)[name][0]} -> {cfg.run_name}", flush=True)
        arrays = train.load_data(cfg, progress=progress) if arrays is None else arrays
        train.run(cfg, arrays=arrays, progress=progress)
        if name in CANDIDATES:
            fit_check(name, cfg.out_dir, arrays=arrays, **overrides)


def _run_dir(name: str, results_dir: str | os.PathLike, **overrides) -> Path:
    cfg = candidate_config(name, **({"out_dir": str(results_dir)} | overrides))
    return Path(results_dir) / cfg.run_name


def candidates_table() -> pd.DataFrame:
    """What each candidate is: what it tests and the recipe fields it resolves to."""
    rows = []
    for name, (what, _) in CANDIDATES.items():
        c = candidate_config(name)
        rows.append({"candidate": name, "tests": what, "network": c.backbone, "batch": c.batch_size,
                     "optimizer": c.optimizer, "peak lr": c.lr, "schedule": c.schedule,
                     "epochs (at 64²)": f"{c.epochs} ({c.low_res_epochs})", "gradient clip": c.grad_clip or "–",
                     "EMA decay": c.ema or "–"})
    return pd.DataFrame(rows).set_index("candidate")


def study_histories(results_dir: str | os.PathLike = "results/recipe", **overrides) -> pd.DataFrame:
    """Every candidate's per-epoch history with its cumulative cost ``minutes`` (process CPU
    time ÷ 2: minutes on two idle cores)."""
    frames = []
    for name in CANDIDATES:
        path = _run_dir(name, results_dir, **overrides) / "fold0_history.csv"
        if path.is_file():
            h = pd.read_csv(path)
            h.insert(0, "candidate", name)
            h["minutes"] = h["cpu_seconds"].cumsum() / 120  # CPU time of two cores, in minutes
            frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def study_table(results_dir: str | os.PathLike = "results/recipe") -> pd.DataFrame:
    """One row per finished candidate: what it tests, epochs, minutes, the best epoch and
    the validation metrics of its best weights, raw and with PR (DSC avg, accuracy)."""
    import json

    rows = []
    for name, (what, _) in CANDIDATES.items():
        path = _run_dir(name, results_dir) / "fold0_metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        h = pd.read_csv(path.parent / "fold0_history.csv")
        rows.append({"candidate": name, "recipe": what, "epochs": m["epochs"], "best epoch": m["best_epoch"],
                     "minutes": h["cpu_seconds"].sum() / 120,  # CPU time of two cores, as study_histories
                     "machine load": h["load"].mean() if "load" in h else float("nan"),  # NaN: not yet recorded
                     "val images": m["n_val"], "val DSC avg": m["raw"]["dsc_avg"],
                     "val DSC avg (PR)": m["pr"]["dsc_avg"], "val accuracy": m["raw"]["acc"],
                     "val accuracy (PR)": m["pr"]["acc"]})
    return pd.DataFrame(rows).set_index("candidate") if rows else pd.DataFrame()


FIT_FILE = "fold0_fit.csv"


def fit_check(name: str, results_dir: str | os.PathLike = "results/recipe", arrays=None, **overrides) -> pd.DataFrame | None:
    """How well a candidate's best weights fit its own training images: DSC per class and
    accuracy on the fold's training split as it is (not augmented, not oversampled) beside
    the validation split. Computed once from the best weights (which are not committed)
    and written to ``FIT_FILE`` in the run folder (read back on later calls); None while
    the run is unfinished or, without that file, its best weights are gone."""
    from mtbc_lib.engine import train
    from mtbc_lib.engine.evaluate import predict, scored_outputs
    from mtbc_lib.engine.runs import run_paths

    cfg = candidate_config(name, **({"out_dir": str(results_dir)} | overrides))
    run_dir, ck_dir = run_paths(cfg)
    out, best = run_dir / FIT_FILE, ck_dir / "fold0.best.pt"
    if out.is_file():
        return pd.read_csv(out)
    if not (run_dir / "fold0_metrics.json").is_file() or not best.is_file():
        return None
    import torch

    arrays = train.load_data(cfg, progress=False) if arrays is None else arrays
    split = train.run_splits(cfg, arrays)[0]
    t = train.FoldTrainer(cfg, arrays, split, 0)
    t.model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
    rows = []
    for part, idx in (("train", split.train), ("val", split.val)):
        sub = arrays.subset(idx)
        _, _, m = scored_outputs(cfg, sub, predict(t.model, t.X[idx], cfg.eval_batch_size, t.device, t.amp, t.cl))
        conf = np.asarray(m["raw"]["confusion"])
        rows.append({"split": part, "images": len(idx), **{k: m["raw"][k] for k in ("dsc_benign", "dsc_malignant",
                                                                                   "dsc_normal", "dsc_avg", "acc")},
                     **{f"acc_{c}": conf[k, k] / max(conf[k].sum(), 1) for k, c in enumerate(CLASSES)}})
    table = pd.DataFrame(rows)
    atomic_write(out, lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    return table


def fit_table(results_dir: str | os.PathLike = "results/recipe", **overrides) -> pd.DataFrame:
    """Every candidate's :func:`fit_check` rows that exist, one row per candidate and split
    (``overrides``: those the study was run with, as in :func:`train_candidates`)."""
    frames = []
    for name in CANDIDATES:
        path = _run_dir(name, results_dir, **overrides) / FIT_FILE
        if path.is_file():
            frames.append(pd.read_csv(path).assign(candidate=name))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).set_index(["candidate", "split"])


def loss_balance(histories: pd.DataFrame, lam: float = 0.35) -> pd.DataFrame:
    """Per candidate, its last epoch's training loss split into its two weighted terms:
    λ·Dice (summed over the deep-supervision outputs) and (1 − λ)·focal, and the Dice
    term's share of the loss. ``histories``: :func:`study_histories`."""
    if histories.empty or "train_dice_term" not in histories:
        return pd.DataFrame()
    last = histories.dropna(subset=["train_dice_term"]).groupby("candidate", sort=False).tail(1).set_index("candidate")
    dice, focal = lam * last["train_dice_term"], (1 - lam) * last["train_focal_term"]
    return pd.DataFrame({"epoch": last["epoch"], "λ·Dice term": dice, "(1 − λ)·focal term": focal,
                         "Dice share of the loss": dice / (dice + focal)})


#: A candidate under-fits when its training images score less than this much better than its
#: validation images (mean of the DSC average's and the accuracy's differences).
UNDER_FIT_GAP = 0.05


def fit_verdict(fit: pd.DataFrame, balance: pd.DataFrame) -> str:
    """Sentences on :func:`fit_table` and :func:`loss_balance`, computed for the chapter: each
    candidate's scores, then which under-fit (:data:`UNDER_FIT_GAP`), said once for all."""
    if fit.empty:
        return "No candidate's best weights have been checked on their training images yet."
    parts, under, fitted = [], [], []
    for name in fit.index.get_level_values("candidate").unique():
        tr, va = fit.loc[(name, "train")], fit.loc[(name, "val")]
        gap = (tr["dsc_avg"] - va["dsc_avg"] + tr["acc"] - va["acc"]) / 2
        parts.append(f"**{name}**: DSC avg {tr['dsc_avg']:.3f} and accuracy {tr['acc']:.3f} on its training images, "
                     f"{va['dsc_avg']:.3f} and {va['acc']:.3f} on validation")
        (under if gap < UNDER_FIT_GAP else fitted).append((name, gap))
    text = "; ".join(parts) + "."
    if under:  # the verdict once, for every candidate it applies to
        who = (f"All {len(under)} candidates under-fit" if not fitted else
               ", ".join(f"**{n}**" for n, _ in under) + (" under-fits" if len(under) == 1 else " under-fit"))
        text += (f" {who}: {'its' if len(under) == 1 else 'their'} own training images are hardly better fitted "
                 f"than unseen ones (by less than {UNDER_FIT_GAP:.2f} on average).")
    if fitted:
        text += " " + "; ".join(f"**{n}** fits its training images better by {g:.2f} on average"
                                for n, g in fitted) + "."
    if not balance.empty:
        lo, hi = balance["Dice share of the loss"].min(), balance["Dice share of the loss"].max()
        share = f"{lo:.0%}" if abs(hi - lo) < 0.005 else f"{lo:.0%} to {hi:.0%}"
        text += (f" At the last epoch the Dice term (summed over the deep-supervision outputs where there are "
                 f"several) makes up {share} of the training loss; the rest is the classifier's focal term.")
    return text


def score(table: pd.DataFrame) -> pd.Series:
    """The study's one number per candidate: the mean of the validation DSC avg and the
    validation accuracy, both with PR (the two numbers of the paper's headline row)."""
    return (table["val DSC avg (PR)"] + table["val accuracy (PR)"]) / 2


def ranking(table: pd.DataFrame) -> str:
    """A paragraph on the finished candidates: the ranking by :func:`score`, the winner's
    gain over the published recipe and how that compares with the sampling noise of an
    accuracy on the validation images."""
    if table.empty:
        return "No candidate has finished yet: run `mtbc recipe`."
    s = score(table).sort_values(ascending=False)
    best = s.index[0]
    acc, n_val = table.loc[best, "val accuracy (PR)"], int(table.loc[best, "val images"])
    se = (acc * (1 - acc) / n_val) ** 0.5
    scores = (f"DSC avg {table.loc[best, 'val DSC avg (PR)']:.3f}, accuracy {acc:.3f} after "
              f"{table.loc[best, 'minutes']:.0f} minutes")
    if len(s) == 1:
        text = f"Only **{best}** ({CANDIDATES[best][0]}) has finished: {scores}; there is nothing to rank yet. "
    else:
        ranking = ", ".join(f"{n} ({v:.3f})" for n, v in s.items())
        text = (f"Ranked by the mean of validation DSC avg and accuracy (both with PR): {ranking}. "
                f"The best is **{best}** ({CANDIDATES[best][0]}): {scores}. ")
    if "paper" in s.index and best != "paper":
        gain = s[best] - s["paper"]
        text += (f"It scores {gain:+.3f} above the published recipe at the same budget. ")
    text += (f"On {n_val} validation images one accuracy has a standard error of about {se:.3f}, so "
             f"differences smaller than about {2 * se:.2f} between candidates are within the noise of one fold.")
    missing = [n for n in CANDIDATES if n not in table.index]
    if missing:
        text += f" Not run yet: {', '.join(missing)}."
    return text


#: The fields that make a recipe (what the ``cpu`` profile takes from a candidate).
RECIPE_FIELDS = ("batch_size", "lr", "optimizer", "weight_decay", "schedule", "warmup_epochs", "grad_clip", "ema",
                 "low_res_epochs")


def profile_choice(table: pd.DataFrame, profile: str = "cpu") -> str:
    """Which candidate's recipe the ``profile`` takes and where that candidate ranks (by
    :func:`score`), computed from the profile's values, for the chapter."""
    prof = TrainConfig(profile=profile).resolve()
    same = [n for n in CANDIDATES if all(getattr(candidate_config(n), k) == getattr(prof, k) for k in RECIPE_FIELDS)]
    if not same:
        return f"The `{profile}` profile's recipe is none of the candidates'."
    name = same[0]
    text = f"The `{profile}` profile takes the recipe of **{name}** with {prof.epochs} epochs per fold"
    if table.empty or name not in table.index:
        return text + "."
    s = score(table)
    ours = [n for n in s.index if candidate_config(n).backbone == BASE["backbone"]]
    rank = list(s[ours].sort_values(ascending=False).index).index(name) + 1
    text += f" (ranked {rank} of {len(ours)} on the paper's U-Net++)."
    others = [n for n in s.index if n not in ours]
    if others:
        text += " " + "; ".join(f"**{n}** ({candidate_config(n).backbone}) scores {s[n]:.3f}, {s[n] - s[name]:+.3f} "
                                 f"against it" for n in others) + "."
    return text


def study_curves(histories: pd.DataFrame):
    """Training Dice, validation Dice and validation accuracy against CPU minutes, one
    colour per candidate, a marker per epoch (hollow: an epoch at half resolution), the
    budget as a dotted line. ``histories``: :func:`study_histories`. A plotly Figure."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    if histories.empty:
        raise ValueError("histories: no candidate has finished an epoch yet (run mtbc recipe)")
    panels = (("train_dice", "training Dice"), ("val_dice", "validation Dice"), ("val_acc", "validation accuracy"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    for i, (name, h) in enumerate(histories.groupby("candidate", sort=False)):
        c = qualitative.D3[i % len(qualitative.D3)]
        low = h["epoch"] <= CANDIDATES[name][1].get("low_res_epochs", 0)
        for j, (col, label) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(
                x=h["minutes"], y=h[col], mode="lines+markers", line=dict(color=c, width=1.5),
                marker=dict(size=7, color=["white" if lo else c for lo in low], line=dict(color=c, width=1.5)),
                name=name, legendgroup=name, showlegend=j == 1,
                hovertemplate=f"{name}<br>%{{x:.1f}} min<br>{label} %{{y:.3f}}<extra></extra>"), row=1, col=j)
    for j in range(1, len(panels) + 1):
        fig.add_vline(x=BUDGET_MINUTES, line=dict(color="grey", dash="dot", width=1), row=1, col=j)
    fig.update_xaxes(title_text="minutes on 2 cores", rangemode="tozero")
    fig.update_layout(height=380, template="plotly_white", margin=dict(l=10, r=10, t=40, b=40),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def classifier_probe(results_dir: str | os.PathLike = "results/recipe", **overrides) -> pd.DataFrame:
    """The classifier probe's finished runs, one row per run and epoch: training loss and
    accuracy, validation accuracy; plus, per run, its best epoch's validation accuracy and
    how many validation images it gave the class it answered most (``answers_one_class``)
    out of ``n_val``, and the validation images' largest class share (``majority``)."""
    import json

    frames = []
    for name in CLASSIFIER_PROBE:
        run = _run_dir(name, results_dir, **overrides)
        if not (run / "fold0_metrics.json").is_file():
            continue
        m = json.loads((run / "fold0_metrics.json").read_text())
        conf = np.asarray(m["raw"]["confusion"])
        h = pd.read_csv(run / "fold0_history.csv")[["epoch", "train_loss", "train_acc", "val_acc"]]
        frames.append(h.assign(candidate=name, best_epoch=m["best_epoch"], best_val_acc=m["raw"]["acc"],
                               answers_one_class=conf.sum(0).max(), n_val=conf.sum(),
                               majority=conf.sum(1).max() / conf.sum()))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def classifier_curves(probe: pd.DataFrame):
    """Training loss and validation accuracy per epoch of the classifier probe's runs, the
    validation images' majority-class share dotted. ``probe``: :func:`classifier_probe`."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    if probe.empty:
        raise ValueError("probe: no classifier probe run has finished (mtbc recipe cls-paper cls-clsbn)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training loss (focal)", "validation accuracy"])
    for i, (name, h) in enumerate(probe.groupby("candidate", sort=False)):
        for j, col in enumerate(("train_loss", "val_acc"), start=1):
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[col], mode="lines+markers", name=name, legendgroup=name,
                                     line=dict(color=qualitative.D3[i]), showlegend=j == 1), row=1, col=j)
    fig.add_hline(y=probe["majority"].iloc[0], line=dict(color="grey", dash="dot", width=1), row=1, col=2,
                  annotation_text="majority class", annotation_position="bottom right")
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(height=340, template="plotly_white", margin=dict(l=10, r=10, t=40, b=40),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def classifier_verdict(probe: pd.DataFrame) -> str:
    """Sentences on :func:`classifier_probe`, computed for the chapter."""
    if probe.empty:
        return "The classifier probe has not been run yet (`mtbc recipe cls-paper cls-clsbn`)."
    parts = []
    for name, h in probe.groupby("candidate", sort=False):
        r, lo, hi = h.iloc[-1], h["val_acc"].min(), h["val_acc"].max()
        acc = f"{lo:.3f} at every epoch" if f"{lo:.3f}" == f"{hi:.3f}" else f"between {lo:.3f} and {hi:.3f}"
        parts.append(f"**{name}**: training loss {h['train_loss'].iloc[0]:.3f} → {r['train_loss']:.3f} over "
                     f"{len(h)} epochs, validation accuracy {acc}; its best weights (epoch {r['best_epoch']}) score {r['best_val_acc']:.3f} "
                     f"and give one class to {r['answers_one_class']} of {r['n_val']} validation images")
    return ("; ".join(parts) + f". Answering the majority class for every image scores "
            f"{probe['majority'].iloc[0]:.3f}.")
