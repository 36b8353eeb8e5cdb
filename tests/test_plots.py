"""mtbc_lib.plots: plotly output for the book and the execution-time figure."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import pytest

from mtbc_lib import plots


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
    fig = plots.execution_time_figure(_runs({"a.ipynb": 30.0, "runs/b.ipynb": 90.0, "c.ipynb": None}))
    (bar,) = fig.data
    assert list(bar.y) == ["a.ipynb", "runs/b.ipynb"] and list(bar.x) == [30.0, 90.0]
    assert fig.layout.xaxis.title.text == "seconds" and fig.layout.xaxis.type == "linear"


def test_execution_time_figure_uses_hours_and_a_log_axis_for_long_runs():
    fig = plots.execution_time_figure(_runs({"audit.ipynb": 60.0, "train.ipynb": 5 * 3600.0}))
    assert fig.layout.xaxis.title.text == "hours (log scale)" and fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == pytest.approx([60 / 3600, 5.0])


def test_execution_time_figure_colours_failed_runs_apart():
    runs = pd.concat([_runs({"ok.ipynb": 10.0}), _runs({"bad.ipynb": 5.0}, status="failed")], ignore_index=True)
    fig = plots.execution_time_figure(runs)
    assert sorted(t.name for t in fig.data) == ["completed", "failed"] and fig.layout.showlegend


def test_execution_time_figure_needs_a_duration():
    with pytest.raises(ValueError, match="papermill"):
        plots.execution_time_figure(_runs({"a.ipynb": None}))
