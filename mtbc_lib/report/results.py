"""What the results chapter (and the introduction's first screen) show of the paper's claims:
which grid the verdicts are read on, the verdict table, the headline against the paper's, how
the verdicts change from one grid to the next, the label-mask consistency figure and table,
and the download links of the CSVs behind them.

Every function reads committed tables (``results/claims.csv``, ``results/ablation.csv``,
``results/consistency.csv``, a run's ``fold<k>_history.csv``) or frames built like them, so
the introduction can compute its table while the book builds, without data or network.

**The grid.** The verdicts are read on one grid: a complete grid of the paper's networks
(:data:`PAPER_NETWORKS`, U-Net++ first) under the most faithful profile we have, in the order
of :data:`PROFILE_PREFERENCE` — ``paper`` (the published protocol, GPU runs), then
``replica`` (that protocol on the networks at half their widths and 64² images), then
``cpu`` (the 7-epoch recipe chosen for two CPU cores). :func:`pick_grid` makes the choice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from mtbc_lib.engine.runs import fold_files
from mtbc_lib.metrics import metric_label
from mtbc_lib.studies import claims as claims_study
from mtbc_lib.studies.ablation import BACKBONE_TITLES, PAPER_TABLE5, ROWS, SETTINGS, finished_runs, run_name
from mtbc_lib.studies.consistency import CONFIGURATIONS, MEASURES, mt_against_single_task

__all__ = ["paper_facts", "PROFILE_PREFERENCE", "PAPER_NETWORKS", "grids_in", "pick_grid", "shown_grids",
           "grid_title", "verdict_rule", "verdict_table", "verdict_styler", "verdict_changes", "epochs_trained",
           "headline", "grid_note", "verdict_overview", "consistency_figure", "consistency_view", "consistency_summary",
           "downloads", "fold_downloads", "per_image_downloads"]

#: Profiles whose grids the verdicts may be read on, most faithful to the paper first.
PROFILE_PREFERENCE: tuple[str, ...] = ("paper", "replica", "cpu")
#: The paper's own networks, in the order the book reads them (Table 5 is U-Net++'s).
PAPER_NETWORKS: tuple[str, ...] = ("unetplusplus", "nnunet")
#: The paper's proposal, the row of its headline numbers.
PROPOSAL = "MT+PR+DO"
#: The headline's metrics (the paper's abstract: image-weighted Dice and accuracy).
HEADLINE_METRICS: tuple[str, ...] = ("dsc_avg", "acc")
#: Background of each verdict in the tables.
VERDICT_COLOURS = {"holds": "#c8e6c9", "reversed": "#ffcdd2", "not shown": "#eeeeee", "untestable": "#ffffff"}
#: What each consistency measure counts, in words (a share of the images named).
MEASURE_WORDS = {
    "inconsistent": "label and mask disagree (all images)",
    "false_positive_mask": "mask drawn on a normal image",
    "false_positive_label": "lesion label on a normal image",
    "false_negative_mask": "empty mask on a lesion image",
    "false_negative_label": "normal label on a lesion image",
}


# --------------------------------------------------------------------------- which grid

def grids_in(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The (backbone, profile) pairs of a table with those columns (claims.csv,
    ablation.csv, consistency.csv), in order of appearance."""
    return list(dict.fromkeys(zip(table["backbone"], table["profile"])))


def pick_grid(grids, profiles=PROFILE_PREFERENCE, backbones=PAPER_NETWORKS) -> tuple[str, str]:
    """The grid the verdicts are read on: out of ``grids`` ((backbone, profile) pairs), the
    one whose profile comes first in ``profiles``, ties broken by the order of ``backbones``.
    Raises ValueError when no grid is of those networks and profiles."""
    ranked = [g for g in grids if g[0] in backbones and g[1] in profiles]
    if not ranked:
        have = ", ".join("/".join(g) for g in grids) or "none"
        raise ValueError(f"grids: no grid of {', '.join(backbones)} under a profile out of {', '.join(profiles)} "
                         f"(have: {have}); run mtbc claims on a complete grid")
    return min(ranked, key=lambda g: (profiles.index(g[1]), backbones.index(g[0])))


def shown_grids(grids, profiles=PROFILE_PREFERENCE, backbones=PAPER_NETWORKS) -> list[tuple[str, str]]:
    """For each backbone of ``backbones`` that has a grid among ``grids``, the grid
    :func:`pick_grid` prefers: what the results chapter shows, one grid a network (the
    others go to the appendix). In the order of ``backbones``."""
    out = []
    for b in backbones:
        mine = [g for g in grids if g[0] == b and g[1] in profiles]
        if mine:
            out.append(pick_grid(mine, profiles, (b,)))
    return out


def _rows_of(table: pd.DataFrame, grid: tuple[str, str]) -> pd.DataFrame:
    """The rows of one (backbone, profile) grid of a table with those columns."""
    return table[(table["backbone"] == grid[0]) & (table["profile"] == grid[1])]


def grid_title(grid: tuple[str, str]) -> str:
    """How the book names a grid: ``U-Net++, cpu profile``."""
    backbone, profile = grid
    return f"{BACKBONE_TITLES.get(backbone, backbone)}, {profile} profile"


# --------------------------------------------------------------------------- the paper's numbers

def paper_facts() -> dict[str, int | float]:
    """The numbers the introduction cites, from the library's own data (the page glues them
    into its prose): BUSI's release (``*_busi``), the published Curated BUSI keep-list
    (``*_curated``), the paper's Table 5 means (``<metric>_<configuration>``, the configuration in
    lower case with ``_`` for other characters: ``dsc_avg_mt_pr_do``) and its epoch
    budget (the ``paper`` profile)."""
    from collections import Counter

    from mtbc_lib.data.busi import PUBLISHED_KEEP_LIST, RELEASE_COUNTS, read_keep_list
    from mtbc_lib.engine.config import PROFILES

    curated = Counter(c for c, _ in read_keep_list(PUBLISHED_KEEP_LIST))
    facts: dict[str, int | float] = {"n_busi": sum(RELEASE_COUNTS.values()), "n_curated": sum(curated.values()),
                                     "paper_epochs": PROFILES["paper"]["epochs"]}
    facts |= {f"{c}_busi": n for c, n in RELEASE_COUNTS.items()} | {f"{c}_curated": curated[c] for c in RELEASE_COUNTS}
    facts |= {f"{m}_{re.sub('[^a-z]+', '_', conf.lower()).strip('_')}": mean  # f1_weighted_st_cls_do
              for conf, row in PAPER_TABLE5.items() for m, (mean, _) in row.items()}
    return facts


# --------------------------------------------------------------------------- verdicts

def verdict_rule(alpha: float = claims_study.ALPHA) -> str:
    """The verdict rule of :mod:`mtbc_lib.studies.claims` in Markdown, one paragraph, for the
    one place the book states it."""
    level = f"{alpha:.0%}".replace("%", " %")
    return (f"Each claim reads \"a is better than b\" on a mean over the test images. Every image is tested once "
            f"over the folds, so a and b are compared on the same images: our difference with its 95 % "
            f"bootstrap interval, and a paired two-sided test (sign-flip permutation on the Dice, exact McNemar on "
            f"the accuracy). A claim **holds** when our difference is positive, the test rejects \"no difference\" "
            f"at the {level} level and the interval excludes 0; it is **reversed** when the test rejects and the "
            f"interval lies below 0; **untestable** when the comparison is degenerate (a classifier that answers "
            f"one class for every image, refinement that cannot act, identical outputs); **not shown** otherwise. "
            f"The Holm-adjusted p says which verdicts survive testing all the claims of a grid together.")


def _p(p: float) -> str:
    """<.001, .23, 1: a p value in two significant digits without the leading zero."""
    return "<.001" if p < 0.001 else f"{p:.2g}".replace("0.", ".", 1)


def _short_reason(row, with_p: bool = True) -> str:
    """A claims.csv row's reason without what the table's other columns already say: for an
    untestable row, what makes it degenerate; otherwise the test's evidence (its p values
    only ``with_p``)."""
    if row["verdict"] == "untestable":
        return str(row["reason"]).removeprefix("untestable: ")
    return claims_study.evidence(row["verdict"], float(row["p_value"]), float(row["p_holm"]), str(row["test"]),
                                 with_p)


def verdict_table(claims: pd.DataFrame, grid: tuple[str, str], p_values: bool = False) -> pd.DataFrame:
    """The reader's verdict table of one grid: one row per claim of ``claims`` (rows of
    ``results/claims.csv``) in the file's order — the claim (written once for its
    comparisons), what is compared on which metric, the paper's difference, ours with its
    95 % interval, (with ``p_values`` the raw and Holm-adjusted p), the verdict and its
    reason. Raises ValueError when ``claims`` has no row of ``grid``."""
    t = _rows_of(claims, grid)
    if t.empty:
        raise ValueError(f"claims: no row of {'/'.join(grid)}; run mtbc claims {' '.join(grid)}")
    first = ~t["claim"].duplicated()
    view = pd.DataFrame({
        "claim": t["claim"].where(first, ""),
        "compared": [f"{a} vs {b}, {metric_label(m)}" for a, b, m in zip(t["config_a"], t["config_b"], t["metric"])],
        "paper": t["paper_diff"].map(claims_study.signed),
        "ours [95 % CI]": [f"{claims_study.signed(d)} [{claims_study.signed(lo)}, {claims_study.signed(hi)}]"
                           for d, lo, hi in zip(t["our_diff"], t["ci_low"], t["ci_high"])]})
    if p_values:
        view["p"] = t["p_value"].map(_p)
        view["p (Holm)"] = t["p_holm"].map(lambda p: "–" if pd.isna(p) else _p(p))
    view["verdict"] = t["verdict"]
    view["reason"] = [_short_reason(r, with_p=not p_values) for _, r in t.iterrows()]
    return view.reset_index(drop=True)


def verdict_styler(view: pd.DataFrame, caption: str | None = None):
    """A :func:`verdict_table` (or :func:`verdict_changes`) frame as an HTML table: the claim
    in bold above its first comparison (one column for both), no index, each verdict on its
    colour (:data:`VERDICT_COLOURS`); the column widths are the book's stylesheet's
    (``table.mtbc-verdicts``)."""
    import html

    shown = view.drop(columns="claim")
    shown["compared"] = [f"<b>{html.escape(c)}</b><br>{html.escape(x)}" if c else html.escape(x)
                         for c, x in zip(view["claim"], view["compared"])]
    shown = shown.rename(columns={"compared": "claim: what is compared"})
    verdict_columns = [c for c in shown.columns if c == "verdict" or shown[c].isin(VERDICT_COLOURS).all()]

    def colour(v):
        return f"background-color: {VERDICT_COLOURS[v]}; font-weight: 600" if v in VERDICT_COLOURS else ""

    kind = "mtbc-with-p" if "p" in view.columns else "" if "verdict" in view.columns else "mtbc-changes"
    styler = (shown.style.hide(axis="index").map(colour, subset=verdict_columns)
              .set_table_attributes(f'class="mtbc-verdicts {kind}"'))
    return styler.set_caption(caption) if caption else styler


def verdict_changes(claims: pd.DataFrame, backbone: str = PAPER_NETWORKS[0],
                    profiles=("cpu", "replica", "paper")) -> tuple[pd.DataFrame, str]:
    """How each claim's verdict changes from grid to grid of one network: one row per
    comparison (claim, compared), one column per profile of ``profiles`` (in that order:
    shortest training first) that ``claims`` holds, and a Markdown sentence naming the
    profiles not trained yet (empty when all are there). Raises ValueError when none is."""
    have = [p for p in profiles if not _rows_of(claims, (backbone, p)).empty]
    if not have:
        raise ValueError(f"claims: no row of {backbone} under {', '.join(profiles)}; run mtbc claims")
    keys = ["claim", "metric", "config_a", "config_b"]
    mine = claims[claims["backbone"] == backbone]
    order = list(dict.fromkeys(mine.loc[mine["profile"].isin(have), keys].itertuples(index=False, name=None)))
    out = pd.DataFrame(order, columns=keys)
    for p in have:  # a left join on the comparisons in order of appearance keeps that order
        t = mine[mine["profile"] == p][keys + ["verdict"]].rename(columns={"verdict": f"{p} profile"})
        out = out.merge(t, on=keys, how="left")
        out[f"{p} profile"] = out[f"{p} profile"].fillna("not tested")
    first = ~out["claim"].duplicated()
    view = pd.DataFrame({"claim": out["claim"].where(first, ""),
                         "compared": [f"{a} vs {b}, {metric_label(m)}"
                                      for a, b, m in zip(out["config_a"], out["config_b"], out["metric"])]})
    for p in have:
        view[f"{p} profile"] = out[f"{p} profile"].to_numpy()
    missing = [p for p in profiles if p not in have]
    name = BACKBONE_TITLES.get(backbone, backbone)
    note = ""
    if missing:
        listed = " and ".join(f"`{p}`" for p in missing)
        many = len(missing) > 1
        note = (f"The {listed} grid{'s' if many else ''} of {name} {'are' if many else 'is'} not trained yet: "
                f"{'their columns appear' if many else 'its column appears'} here once {'their' if many else 'its'} "
                "six trainings have finished and `mtbc claims` has tested them.")
    return view, note


# --------------------------------------------------------------------------- the headline

def epochs_trained(results_dir: str | os.PathLike, backbone: str, profile: str, setting: str = "mt-do") -> list[int]:
    """The epochs each fold of one grid training ran, from its ``fold<k>_history.csv``
    (folds in order). Raises FileNotFoundError when the run has no history."""
    run_dir = Path(results_dir) / run_name(backbone, setting, profile)
    files = fold_files(run_dir, "history.csv")
    if not files:
        raise FileNotFoundError(f"{run_dir}: no fold*_history.csv; expected a finished training run")
    return [int(pd.read_csv(f)["epoch"].max()) for f in files.values()]


def _plain(x: float) -> str:
    """.751: three decimals without the leading zero, as the paper writes them."""
    return f"{x:.3f}".replace("0.", ".", 1)


def headline(ablation: pd.DataFrame, grid: tuple[str, str], epochs: list[int], budget: int,
             paper_epochs: int, paper_patience: int) -> str:
    """Markdown: our proposal row (:data:`PROPOSAL`, from ``ablation``: rows of
    ``results/ablation.csv``) beside the paper's headline numbers, then one sentence on why
    they differ in training length: ``epochs`` (what each fold of our MT+DO training ran,
    :func:`epochs_trained`) against our profile's ``budget`` and the paper's ``paper_epochs``
    with early stopping after ``paper_patience`` epochs without improvement. Raises
    ValueError when ``ablation`` lacks the grid's proposal row."""
    rows = _rows_of(ablation, grid)
    rows = rows[rows["configuration"] == PROPOSAL]
    if rows.empty:
        raise ValueError(f"ablation: no {PROPOSAL} row of {'/'.join(grid)}; expected its complete grid")
    r = rows.iloc[0]
    ours = [float(r[m]) for m in HEADLINE_METRICS]
    paper = [PAPER_TABLE5[PROPOSAL][m][0] for m in HEADLINE_METRICS]
    names = [metric_label(m).replace("ACC", "accuracy") for m in HEADLINE_METRICS]
    text = (f"**Our {PROPOSAL}** ({grid_title(grid)}): "
            + ", ".join(f"{n} **{_plain(o)}**" for n, o in zip(names, ours))
            + "; the paper's " + " and ".join(f"**{_plain(p)}**" for p in paper) + ". ")
    gaps = [p - o for o, p in zip(ours, paper)]
    lo, hi = min(epochs), max(epochs)
    ran = f"{lo} epochs in each of the {len(epochs)} folds" if lo == hi else f"{lo} to {hi} epochs a fold"
    cut = sum(e < budget for e in epochs)
    stop = (f" (early stopping ended {cut} of them before the profile's {budget})" if cut else
            f" (all the `{grid[1]}` profile allows)")
    times = f" ({paper_epochs / hi:.0f}× as many)" if paper_epochs / hi >= 1.5 else ""
    lead = ("Ours reaches both" if all(g <= 0 for g in gaps) else
            "Ours falls short by " + " and ".join(_plain(g) for g in gaps))
    return text + (f"{lead}; the largest difference is training length: our {PROPOSAL.replace('PR+', '')} "
                   f"networks trained {ran}{stop}, the paper's up to {paper_epochs} a fold with early stopping "
                   f"after {paper_patience} epochs without improvement{times}.")


def grid_note(grid: tuple[str, str], profiles=PROFILE_PREFERENCE) -> str:
    """Markdown: which grid the verdicts are read on and, when it is not the most faithful
    profile, which better ones are not complete yet (:data:`PROFILE_PREFERENCE`)."""
    from mtbc_lib.engine.config import PROFILES

    words = {"paper": f"the published protocol, up to {PROFILES['paper']['epochs']} epochs a fold, on a GPU",
             "replica": f"that protocol at width {PROFILES['replica']['width']:g} on "
                        f"{PROFILES['replica']['image_size']}² images",
             "cpu": f"{PROFILES['cpu']['epochs']} epochs a fold"}
    name = BACKBONE_TITLES.get(grid[0], grid[0])
    better = profiles[:profiles.index(grid[1])] if grid[1] in profiles else ()
    text = f"Verdicts on {name} under the `{grid[1]}` profile ({words.get(grid[1], 'our own recipe')})"
    if not better:
        return text + "."
    return text + ", the best grid we have: " + " and ".join(f"the `{p}` grid ({words.get(p, p)})" for p in better) \
        + f" {'are' if len(better) > 1 else 'is'} not complete yet."


def verdict_overview(results_dir: str | os.PathLike, p_values: bool = False) -> list:
    """The first screen of the introduction and of the results chapter, from the committed
    CSVs under ``results_dir`` (claims.csv, ablation.csv, the proposal run's histories): the
    headline (:func:`headline`) as Markdown, the verdict table (:func:`verdict_table`, styled),
    then which grid it is (:func:`grid_note`). A list to ``display(*...)``."""
    from IPython.display import Markdown

    from mtbc_lib.engine.config import PROFILES

    results_dir = Path(results_dir)
    claims = pd.read_csv(results_dir / "claims.csv")
    ablation = pd.read_csv(results_dir / "ablation.csv")
    grid = pick_grid(grids_in(claims))
    epochs = epochs_trained(results_dir, *grid)
    top = headline(ablation, grid, epochs, PROFILES[grid[1]]["epochs"], PROFILES["paper"]["epochs"],
                   PROFILES["paper"]["patience"])
    return [Markdown(top), verdict_styler(verdict_table(claims, grid, p_values)), Markdown(grid_note(grid))]


# --------------------------------------------------------------------------- label and mask

def consistency_figure(table: pd.DataFrame):
    """The paper's other findings, measured (``results/consistency.csv`` rows): for each grid
    of the table (one panel each), each configuration's share of test images on each
    measure of :data:`MEASURES` before refinement, as grouped bars labelled in per cent; a
    configuration without the output a measure needs has no bar there. A plotly Figure."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    grids = grids_in(table)
    if not grids:
        raise ValueError("table: no row; expected rows of results/consistency.csv")
    order = [r.configuration for r in CONFIGURATIONS]
    fig = make_subplots(rows=len(grids), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[grid_title(g) for g in grids])
    for k, g in enumerate(grids, start=1):
        t = _rows_of(table, g).set_index("configuration")
        confs = [c for c in order if c in t.index] + [c for c in t.index if c not in order]
        for j, m in enumerate(MEASURES):
            y = t.loc[confs, m].astype(float)
            fig.add_trace(go.Bar(x=confs, y=y, name=MEASURE_WORDS[m], legendgroup=m, showlegend=k == 1,
                                 marker_color=qualitative.Plotly[j], text=[f"{v:.0%}" if pd.notna(v) else ""
                                                                          for v in y],
                                 textposition="outside", textfont=dict(size=8), cliponaxis=False,
                                 hovertemplate="%{x}: %{y:.1%}<extra>" + MEASURE_WORDS[m] + "</extra>"),
                          row=k, col=1)
        fig.update_yaxes(range=[0, 1.15], tickformat=".0%", title_text="share of images", row=k, col=1)
    fig.update_layout(barmode="group", height=90 + 240 * len(grids), template="plotly_white",
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.12, font=dict(size=10)),
                      bargap=0.15)
    return fig


def consistency_view(table: pd.DataFrame, grids) -> pd.DataFrame:
    """"MT beats every single-task configuration", measure by measure (rows: :data:`MEASURES`
    in words), for each grid of ``grids`` (rows of ``results/consistency.csv``): the best
    single-task configuration and its share, then MT's and MT+DO's shares, "(lower)" where
    strictly lower than that best (:func:`mt_against_single_task`). Columns: (grid title,
    what). "–" where a value is missing; never NaN. Raises ValueError for a grid without rows."""
    parts = {}
    for g in grids:
        t = _rows_of(table, g)
        if t.empty:
            raise ValueError(f"table: no row of {'/'.join(g)} in consistency.csv; run mtbc claims {' '.join(g)}")
        part = {}
        for mt in ("MT", "MT+DO"):
            if mt not in set(t["configuration"]):
                continue
            c = mt_against_single_task(t, mt)
            part["best single-task"] = ["–" if b is None or pd.isna(v) else f"{b} {v:.1%}"
                                        for b, v in zip(c["best_single_task"], c["best_single_task_value"])]
            part[mt] = ["–" if pd.isna(v) else f"{v:.1%}" + (" (lower)" if w is True else "")
                        for v, w in zip(c["mt_value"], c["mt_lower"])]
        parts[grid_title(g)] = pd.DataFrame(part, index=[MEASURE_WORDS[m] for m in MEASURES])
    return pd.concat(parts, axis=1)


def consistency_summary(table: pd.DataFrame, grid: tuple[str, str]) -> str:
    """One sentence on a grid: on how many measures each multi-task configuration is lower
    than every single-task configuration (:func:`mt_against_single_task`), and which."""
    t = _rows_of(table, grid)
    parts = []
    for mt in ("MT", "MT+DO"):
        if mt not in set(t["configuration"]):
            continue
        c = mt_against_single_task(t, mt).dropna(subset=["mt_lower"])
        wins = [MEASURE_WORDS[m].split(" (")[0] for m, w in zip(c["measure"], c["mt_lower"]) if w]
        parts.append(f"{mt} on {len(wins)} of {len(c)}" + (f" ({'; '.join(wins)})" if wins else ""))
    return (f"{grid_title(grid)}: lower than every single-task configuration, " + ", ".join(parts) + ".") \
        if parts else ""


# --------------------------------------------------------------------------- downloads

def _roles(paths, root: Path) -> list[str]:
    """One MyST ``{download}`` role per file: ``paths`` a list of paths or a dict link text ->
    path, each absolute or relative to ``root`` (the repository). A file outside the
    repository (nothing the book could serve: a scratch run) is left out."""
    items = paths.items() if isinstance(paths, dict) else ((Path(p).name, p) for p in paths)
    roles = []
    for text, p in items:
        if Path(p).is_absolute() and not Path(p).resolve().is_relative_to(root.resolve()):
            continue
        rel = Path(p).resolve().relative_to(root.resolve()) if Path(p).is_absolute() else Path(p)
        if not (root / rel).is_file():
            raise FileNotFoundError(f"{root / rel}: not found; expected a committed file to link")
        roles.append(f"{{download}}`{text} </{rel.as_posix()}>`")
    return roles


def downloads(paths, root: str | os.PathLike, label: str = "Download") -> str:
    """Markdown (MyST) linking files of the repository for download with the book: ``label``,
    then one ``{download}`` role per path (served as ``/results/claims.csv`` from the
    repository root ``root``; Sphinx copies the file into the build and a strict build fails
    when it is missing). ``paths``: a list of paths, or a dict link text -> path, each
    absolute or relative to ``root``; empty when every file lies outside the repository.
    Raises FileNotFoundError for a missing file."""
    roles = _roles(paths, Path(root))
    return f"{label}: " + " · ".join(roles) if roles else ""


def fold_downloads(runs: dict, root: str | os.PathLike, what: str) -> str:
    """Markdown: the per-image test outputs (``fold<k>_test.csv``) of each run of ``runs``
    (label -> run folder, absolute or relative to the repository root ``root``), one link per
    fold named by its number, after ``what`` (the sentence's subject). Empty when no run has
    a test file; a run outside the repository (nothing the book could serve) is left out."""
    root = Path(root)
    parts = []
    for label, run_dir in runs.items():
        run_dir = (Path(run_dir) if Path(run_dir).is_absolute() else root / run_dir).resolve()
        roles = _roles({str(k): f for k, f in fold_files(run_dir, "test.csv").items()}, root)
        if roles:
            parts.append(f"{label} " + " ".join(roles))
    return (f"{what} (CSV, one file a fold): " + " · ".join(parts)) if parts else ""


def per_image_downloads(root: str | os.PathLike, results_dir: str | os.PathLike, backbone: str, profile: str,
                        settings=tuple(SETTINGS)) -> str:
    """Markdown: the per-image test outputs behind a grid (:func:`fold_downloads` of each of
    its finished trainings in ``settings``, named as Table 5 names them; ``results_dir``
    relative to the repository root ``root``). Empty when none has finished."""
    root = Path(root)
    done = finished_runs(backbone, profile, (root / results_dir).resolve())
    label = {s: next(r.configuration for r in ROWS if not r.pr and s in (r.seg, r.cls)) for s in SETTINGS}
    return fold_downloads({label[s]: done[s] for s in settings if s in done}, root,
                          f"Per-image test outputs of {grid_title((backbone, profile))}")
