"""mtbc_lib.report.plots: plotly output for the book and the execution-time figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from mtbc_lib import provenance
from mtbc_lib.report import plots


def _runs(durations: dict[str, float | None], status: str = "completed") -> pd.DataFrame:
    return pd.DataFrame([{"notebook": name, "title": name.upper(), "status": status,
                          "started": "2025-01-01 10:00 UTC", "duration": f"{s} s", "duration_s": s,
                          "hardware": "2 cores CPU, 8 GiB, no GPU"} for name, s in durations.items()])


def test_show_plotly_emits_html_without_plotly_js_and_the_json(monkeypatch):
    shown = []
    monkeypatch.setattr(plots, "display", lambda obj, raw=False: shown.append((obj, raw)))
    plots.show_plotly(go.Figure(go.Bar(x=[1, 2], y=[3, 4])))
    (bundle, raw), = shown
    assert raw and set(bundle) == {"text/html", plots.PLOTLY_MIME}
    html = bundle["text/html"]
    assert 'class="plotly-graph-div"' in html and "Plotly.newPlot(" in html
    assert len(html) < 100_000, "plotly.js must not be embedded in every figure"
    assert bundle[plots.PLOTLY_MIME]["data"][0]["type"] == "bar"


class _Renderer:
    """Stands in for myst-nb's element renderer: records what it is asked to render."""

    def render_text_html(self, data):
        return [("html", data.mime_type, data.string)]


def test_mime_renderer_turns_plotly_json_into_the_book_html():
    from myst_nb.core.render import MimeData

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    data = MimeData(plots.PLOTLY_MIME, json.loads(fig.to_json()), cell_index=0, output_index=0)
    (kind, mime, html), = plots.PlotlyMimeRenderer.handle_mime(_Renderer(), data, False)
    assert (kind, mime) == ("html", "text/html")
    assert 'class="plotly-graph-div"' in html and '"type":"scatter"' in html
    # other types and inline use are left to myst-nb
    assert plots.PlotlyMimeRenderer.handle_mime(_Renderer(), MimeData("text/html", "<b>x</b>"), False) is None
    assert plots.PlotlyMimeRenderer.handle_mime(_Renderer(), data, True) is None


def test_mime_renderer_ranks_plotly_json_after_html():
    from myst_nb.core.render import get_mime_priority

    order = get_mime_priority("html", plots.PlotlyMimeRenderer.mime_priority_overrides)
    assert order.index("text/html") < order.index(plots.PLOTLY_MIME) < order.index("text/plain")


def test_execution_time_figure_one_bar_per_timed_notebook():
    fig = provenance.execution_time_figure(_runs({"a.ipynb": 30.0, "runs/b.ipynb": 90.0, "c.ipynb": None}))
    (bar,) = fig.data
    assert list(bar.y) == ["a.ipynb", "runs/b.ipynb"] and list(bar.x) == [30.0, 90.0]
    assert fig.layout.xaxis.title.text == "seconds" and fig.layout.xaxis.type == "linear"


def test_execution_time_figure_uses_hours_and_a_log_axis_for_long_runs():
    fig = provenance.execution_time_figure(_runs({"audit.ipynb": 60.0, "train.ipynb": 5 * 3600.0}))
    assert fig.layout.xaxis.title.text == "hours (log scale)" and fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == pytest.approx([60 / 3600, 5.0])


def test_execution_time_figure_colours_failed_runs_apart():
    runs = pd.concat([_runs({"ok.ipynb": 10.0}), _runs({"bad.ipynb": 5.0}, status="failed")], ignore_index=True)
    fig = provenance.execution_time_figure(runs)
    assert sorted(t.name for t in fig.data) == ["completed", "failed"] and fig.layout.showlegend


def test_execution_time_figure_needs_a_duration():
    with pytest.raises(ValueError, match="papermill"):
        provenance.execution_time_figure(_runs({"a.ipynb": None}))


def _run_dir(root, name, test: pd.DataFrame, masks: dict):
    """A finished one-fold run folder as the engine writes it (test table and packed masks)."""
    import numpy as np

    d = root / name
    d.mkdir()
    test.to_csv(d / "fold0_test.csv", index=False)
    (d / "config.json").write_text(json.dumps({"config": {"task": "mt" if name == "mt" else "seg", "oversampling": name == "mt",
                                                               "image_size": 16}}))
    pd.DataFrame({"epoch": [1], "loss": [0.5]}).to_csv(d / "fold0_history.csv", index=False)
    (d / "fold0_metrics.json").write_text("{}")
    m = np.stack([masks[n] for n in test["name"]])
    np.savez_compressed(d / "fold0_masks.npz", masks=np.packbits(m, axis=-1), shape=np.asarray(m.shape),
                        names=test["name"].to_numpy(str), classes=test["class"].to_numpy(str), ids=test["id"].to_numpy())
    return d


def test_comparison_examples_picks_best_typical_worst_and_refinement_cases(tmp_path):
    import numpy as np

    from mtbc_lib import data
    from mtbc_lib.engine import runs

    names = ["benign (1)", "benign (2)", "malignant (3)", "normal (4)", "normal (5)"]
    lesion = np.zeros((16, 16), bool)
    lesion[4:10, 4:10] = True
    empty = np.zeros((16, 16), bool)
    truth = [lesion, lesion, lesion, empty, empty]
    base = {"class": [n.split()[0] for n in names], "id": [1, 2, 3, 4, 5], "name": names, "label": [0, 0, 1, 2, 2]}
    st = pd.DataFrame(base | {"dice": [0.9, 0.5, 0.1, 1.0, 0.0], "mask_empty": [False] * 4 + [False]})
    # MT: benign 2 called normal (refinement empties a good mask: hurts), normal 5 has a
    # spurious mask but is called normal (refinement empties it: helps)
    mt = pd.DataFrame(base | {"p_normal": 0.1, "pred": [0, 2, 1, 2, 2], "label_pr": [0, 2, 1, 2, 2],
                              "dice": [0.8, 0.7, 0.3, 1.0, 0.0], "dice_pr": [0.8, 0.0, 0.3, 1.0, 1.0]})
    spurious = np.zeros((16, 16), bool)
    spurious[0:3, 0:3] = True
    st_run = runs.load_run(_run_dir(tmp_path, "st", st, dict(zip(names, truth[:4] + [spurious]))))
    mt_run = runs.load_run(_run_dir(tmp_path, "mt", mt, dict(zip(names, truth[:4] + [spurious]))))
    cases = plots.comparison_cases(st_run.test, mt_run.test)
    assert [(c, r["name"]) for c, r in cases] == [
        ("best", "benign (1)"), ("typical", "malignant (3)"), ("worst, refinement hurts", "benign (2)"),
        ("refinement helps", "normal (5)")]
    arrays = data.BusiArrays(images=np.full((5, 16, 16), 100, np.uint8), masks=np.stack(truth),
                             labels=np.array([0, 0, 1, 2, 2]), classes=np.array(base["class"]),
                             ids=np.arange(1, 6), names=names, orig_sizes=np.full((5, 2), 16))
    fig = plots.comparison_examples(arrays, st_run, mt_run)
    assert len(fig.axes) == 4 * 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("image, ground truth\nbest: benign (1)")
    assert [t.split("\n")[0] for t in titles[1:4]] == ["ST(Seg)", "MT+DO", "MT+PR+DO"]
    assert "DSC 0.00, says normal" in titles[2 * 4 + 3]  # worst case after refinement
    across = plots.comparison_examples(arrays, st_run, mt_run, cases_as_columns=True)  # one case a column
    grid = np.array(across.axes).reshape(4, 4)
    assert [ax.get_ylabel() for ax in grid[:, 0]] == ["image, ground truth", "ST(Seg)", "MT+DO", "MT+PR+DO"]
    assert grid[0, 2].get_title().startswith("worst, refinement hurts: benign (2)")
    assert grid[3, 2].get_title() == titles[2 * 4 + 3]
    # the segmentation-only slot refuses a run with class scores
    with pytest.raises(ValueError, match="segmentation-only"):
        plots.comparison_examples(arrays, mt_run, mt_run)
    # images of another size than the runs' are refused, not drawn under masks that do not fit
    small = data.BusiArrays(images=arrays.images[:, ::2, ::2], masks=arrays.masks[:, ::2, ::2], labels=arrays.labels,
                            classes=arrays.classes, ids=arrays.ids, names=names, orig_sizes=arrays.orig_sizes)
    with pytest.raises(ValueError, match="arrays: images are 8x8 px; st was trained at 16x16"):
        plots.comparison_examples(small, st_run, mt_run)


def test_profile_curves_one_line_per_fold_and_panel_one_legend_entry_per_profile():
    def history(loss):
        return pd.DataFrame({"fold": [0, 0, 1, 1], "epoch": [1, 2, 1, 2], "train_loss": loss,
                             "val_loss": loss, "val_dice": [0.2, 0.4, 0.3, 0.5]})

    fig = plots.profile_curves({"fast": history([0.5, 0.6, 0.5, 0.4]), "steady": history([0.5, 0.4, 0.5, 0.3])})
    assert len(fig.data) == 2 * 2 * 3  # profiles x folds x panels
    assert sorted(t.name for t in fig.data if t.showlegend) == ["fast", "steady"]
    with pytest.raises(ValueError, match="histories: empty"):
        plots.profile_curves({})
    # a grid's settings: a classifier has no Dice line, but its legend entry; all drawn solid
    cls = history([0.5, 0.4, 0.5, 0.3]).assign(val_dice=np.nan, val_acc=[0.5, 0.6, 0.4, 0.7])
    fig = plots.profile_curves({"st-seg": history([0.5, 0.4, 0.5, 0.3]), "st-cls": cls},
                               panels=(("val_dice", "validation Dice"), ("val_acc", "validation accuracy")),
                               first_solid=False)
    assert [(t.name, t.xaxis) for t in fig.data] == [("st-seg", "x"), ("st-seg", "x"), ("st-cls", "x2"), ("st-cls", "x2")]
    assert sorted(t.name for t in fig.data if t.showlegend) == ["st-cls", "st-seg"]
    assert {t.line.dash for t in fig.data} == {"solid"}


def test_fold_points_leaves_out_metrics_no_configuration_has():
    per_fold = {"ST(Cls)": pd.DataFrame({"fold": [0, 1], "f1_weighted": [.3, .4], "acc": [.5, .6]})}
    fig = plots.fold_points(per_fold, paper={"ST(Cls)": {"acc": (.698, .038)}})
    assert [a.text for a in fig.layout.annotations] == ["f1_weighted", "acc"]
    assert sum(len(t.x) for t in fig.data if t.marker.symbol == "diamond") == 1  # the paper's accuracy only
    with pytest.raises(ValueError, match="no configuration has any of the metrics"):
        plots.fold_points({"ST(Cls)": pd.DataFrame({"fold": [0]})})


def test_fold_points_by_grid_one_row_per_grid_names_once_under_the_last():
    per_fold = {"grid A": {"MT": pd.DataFrame({"fold": [0, 1], "dsc_avg": [.5, .6], "acc": [.4, .5]})},
                "grid B": {"MT": pd.DataFrame({"fold": [0, 1], "dsc_avg": [.7, .8], "acc": [.6, .7]}),
                           "ST(Seg)": pd.DataFrame({"fold": [0, 1], "dsc_avg": [.3, .3]})}}
    fig = plots.fold_points_by_grid(per_fold, metrics=("dsc_avg", "f1_weighted", "acc"),
                                    paper={"MT": {"acc": (.742, .028)}})
    assert [a.text for a in fig.layout.annotations] == ["DSC avg", "ACC", "grid A", "grid B"]  # no F1 panel
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3", "x4"}  # two rows of two panels
    assert fig.layout.xaxis.matches == "x3" and fig.layout.xaxis.showticklabels is False  # names under the last row
    assert sum(len(t.x) for t in fig.data if t.marker.symbol == "diamond") == 2  # the paper's accuracy, per row
    with pytest.raises(ValueError, match="no configuration has any of the metrics"):
        plots.fold_points_by_grid({"grid A": {"ST(Cls)": pd.DataFrame({"fold": [0]})}})


def test_confusion_matrices_name_the_axes_once_per_column_and_row():
    t = pd.DataFrame({"label": [0, 1, 2, 2], "pred": [0, 1, 2, 0]})
    fig = plots.confusion_matrices({c: t for c in ("ST(Cls)", "ST(Cls)+DO", "MT", "MT+DO", "MT+PR+DO")}, per_row=4)
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_xlabel() for ax in shown] == ["", "predicted", "predicted", "predicted", "predicted"]
    assert [ax.get_ylabel() for ax in shown] == ["true", "", "", "", "true"]
    assert fig.get_layout_engine() is not None  # constrained: no label runs into the next row
