"""Build-level checks of the book (mtbc_lib.report.book): the strict build succeeds offline,
every stored notebook is in the table of contents and in the reproducibility page, figures
survive, nothing is loaded from outside."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from mtbc_lib import provenance
from mtbc_lib.report import book, reader

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / book.HTML_DIR
BOOK_DIR = ROOT / "book"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
FIGURE_DIV = 'class="plotly-graph-div"'


@pytest.fixture(scope="module")
def built() -> Path:
    """The freshly built HTML folder (fails the tests with the build log if the strict
    build fails)."""
    proc = book.build(ROOT, capture=True, timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"strict book build failed:\n{log[-8000:]}"
    assert "build succeeded" in log
    return HTML


def _stored() -> list[Path]:
    return provenance.stored_notebooks(BOOK_DIR)


def _docname(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").as_posix()


def plotly_outputs(nb) -> int:
    """Plotly figures among a notebook's outputs: one per output holding plotly's JSON
    MIME type or an HTML plotly div (what show_plotly emits carries both)."""
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                count += 1
            elif FIGURE_DIV in "".join(data.get("text/html", "")):
                count += "".join(data["text/html"]).count(FIGURE_DIV)
    return count


# --------------------------------------------------------------------------- the build


def test_every_toc_page_is_built(built):
    docs = book.toc_docnames(ROOT)
    assert docs[0] == "book/intro", "the introduction must be the root page"
    missing = [d for d in docs if not (built / f"{d}.html").is_file()]
    assert not missing, f"pages of _toc.yml without HTML: {missing}"
    assert (built / "index.html").is_file()


def test_every_stored_notebook_is_in_the_toc():
    docs = set(book.toc_docnames(ROOT))
    absent = [p.relative_to(ROOT).as_posix() for p in _stored() if _docname(p) not in docs]
    assert not absent, f"executed notebooks stored in book/ but not in _toc.yml (never rendered): {absent}"


def test_stored_notebooks_ran_to_completion_under_papermill():
    bad = {}
    for path in _stored():
        run = provenance.read_run(path, BOOK_DIR)
        if run.status != "completed" or not run.duration_s:
            bad[run.path] = run.status
    assert not bad, f"stored notebooks not cleanly executed by papermill: {bad}"


def test_plotting_cells_hide_their_input(built):
    """Every cell that draws a figure shows the figure, not its code: on the built pages,
    each cell holding a figure has its code removed or collapsed behind a toggle (the
    reader view does it for any notebook, tagged or not)."""
    cell_re = re.compile(r'<div class="cell(?: [^"]*)? docutils container"[^>]*>(.*?)(?=<div class="cell(?: [^"]*)? docutils container"|<footer|$)', re.S)
    offenders = []
    for path in _stored():
        page = (built / f"{_docname(path)}.html").read_text(encoding="utf-8")
        for i, cell in enumerate(cell_re.findall(page)):
            figure = FIGURE_DIV in cell or "<img " in cell
            code = '<div class="cell_input docutils container">' in cell
            if figure and code and '<details class="admonition hide above-input"' not in cell:
                offenders.append(f"{_docname(path)} cell {i}")
    assert not offenders, f"figure cells whose code is shown: {offenders}"


def test_no_widget_output_is_left_for_the_static_book():
    """ipywidgets need a live kernel (and the book loads no widget JavaScript): a widget
    output would be an empty box. Cells that display widgets carry ``remove-output``
    (or ``remove-cell``) and the notebook shows a static figure for the book."""
    offenders = []
    for path in _stored():
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if tags & {"remove-output", "remove-cell"}:
                continue
            if any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.get("outputs", [])):
                offenders.append(f"{path.relative_to(ROOT)} cell {i}")
    assert not offenders, f"widget outputs that would render empty in the book: {offenders}"


def test_no_plotly_figure_disappears(built):
    """Each stored notebook's page shows exactly as many plotly figures as the
    notebook stores (an output that only carries plotly's own MIME type is dropped by
    the book: use mtbc_lib.report.plots.show_plotly)."""
    mismatches = {}
    for path in _stored():
        expected = plotly_outputs(nbformat.read(path, as_version=4))
        page = built / f"{_docname(path)}.html"
        shown = page.read_text(encoding="utf-8").count(FIGURE_DIV) if page.is_file() else 0
        if shown != expected:
            mismatches[path.relative_to(ROOT).as_posix()] = (expected, shown)
    assert not mismatches, f"plotly figures (stored, shown in the book): {mismatches}"


def test_reproducibility_page_lists_every_stored_notebook(built):
    """One table row per stored notebook with its path, status and papermill duration,
    and the execution-time figure whenever a duration exists."""
    page = (built / "book" / "reproducibility.html").read_text(encoding="utf-8")
    rows = [re.sub(r"<[^>]+>", " ", r) for r in re.findall(r"<tr.*?</tr>", page, flags=re.S)]
    rows = [" ".join(html_lib.unescape(r).split()) for r in rows]
    table = provenance.runs_table(BOOK_DIR)
    for rec in table.itertuples(index=False):
        hits = [r for r in rows if rec.notebook in r.split()]
        assert hits, f"{rec.notebook} missing from the reproducibility page"
        assert rec.duration in hits[0] and rec.status in hits[0], \
            f"{rec.notebook}: row {hits[0]!r} does not show {rec.status} / {rec.duration}"
    expected = 1 if table["duration_s"].notna().any() else 0
    assert page.count(FIGURE_DIV) == expected
    if table.empty:
        assert "No executed notebook is stored" in page


def test_plotly_js_is_served_once_by_the_book(built):
    """Pages with figures load _static/plotly.min.js (the installed plotly's own copy);
    no page embeds the 4.6 MB library."""
    sys_copy = Path(book_ext_plotly_js())
    served = built / "_static" / "plotly.min.js"
    assert served.is_file() and served.read_bytes() == sys_copy.read_bytes()
    for page in built.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert len(text) < 2_000_000, f"{page}: {len(text)} characters, is plotly.js embedded?"
        tags = re.findall(r'<script[^>]+src="[^"]*plotly\.min\.js[^"]*"', text)
        assert len(tags) == (1 if FIGURE_DIV in text else 0), f"{page}: {len(tags)} plotly.min.js tags"


def book_ext_plotly_js() -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mtbc_book", BOOK_DIR / "_ext" / "mtbc_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.plotly_js_source())


def test_pages_load_nothing_from_outside(built):
    """No script, stylesheet, image, font or frame of any page comes from a URL
    (links to papers are fine, loading is not); MathJax is served from _static."""
    external = re.compile(r'<(?:script|img|iframe|source|link[^>]*rel="(?:stylesheet|preload|icon)")[^>]*'
                          r'(?:src|href)="(?:https?:)?//', re.I)
    for page in built.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not external.search(text), f"{page.relative_to(built)} loads {external.search(text).group(0)}"
    methods = (built / "book" / "methods.html").read_text(encoding="utf-8")
    assert re.search(r'<script[^>]+src="\.\./_static/mathjax/tex-chtml\.js', methods)
    assert (built / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (built / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_methods_page_has_formulas_and_the_diagram(built):
    text = (built / "book" / "methods.html").read_text(encoding="utf-8")
    assert text.count('class="math') >= 10, "the methods page lost its formulas"
    assert "multitask_overview.svg" in text
    assert (built / "_images" / "multitask_overview.svg").is_file()


# --------------------------------------------------------------------------- pipeline

def test_plotly_figure_survives_papermill_and_the_build(tmp_path):
    """End to end on a one-page book made with this repository's configuration: a
    notebook executed by papermill keeps its plotly figures in the built HTML (one shown
    with show_plotly, one left as plotly's bare JSON output), with plotly.js loaded
    once from _static."""
    papermill = pytest.importorskip("papermill")
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(BOOK_DIR / "_ext", tmp_path / "book" / "_ext",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BOOK_DIR / "_static", tmp_path / "book" / "_static")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/figure\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A plotly figure"),
        nbformat.v4.new_code_cell("n_bars: int = 3  # bars to draw", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import plotly.graph_objects as go\nfrom mtbc_lib.report.plots import show_plotly\n"
            "show_plotly(go.Figure(go.Bar(x=list(range(n_bars)), y=list(range(n_bars)))))",
            metadata={"tags": ["hide-input"]}),
        # what fig.show() leaves under nbclient: plotly's JSON MIME type alone
        nbformat.v4.new_code_cell(
            "import json\nfrom IPython.display import display\nfrom mtbc_lib.report.plots import PLOTLY_MIME\n"
            "fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))\n"
            "display({PLOTLY_MIME: json.loads(fig.to_json())}, raw=True)",
            metadata={"tags": ["hide-input"]}),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    template = tmp_path / "template.ipynb"
    nbformat.write(nb, template)
    stored = tmp_path / "book" / "figure.ipynb"
    papermill.execute_notebook(str(template), str(stored), parameters={"n_bars": 4},
                               kernel_name="python3", progress_bar=False)
    assert plotly_outputs(nbformat.read(stored, as_version=4)) == 2

    proc = book.build(tmp_path, capture=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    page = (tmp_path / "_build" / "html" / "book" / "figure.html").read_text(encoding="utf-8")
    assert page.count(FIGURE_DIV) == 2, "a plotly output was dropped (is PlotlyMimeRenderer registered?)"
    assert re.search(r'<script[^>]+src="\.\./_static/plotly\.min\.js', page)
    assert (tmp_path / "_build" / "html" / "_static" / "plotly.min.js").is_file()
    assert page.count("Plotly.newPlot(") == 2 and '"type":"bar"' in page and '"type":"scatter"' in page


# --------------------------------------------------------------------------- reader's view



def test_run_pages_are_titled_from_their_own_config(built):
    """Each run page's heading is run_title of the config.json its run wrote (not the
    template's generic title), and no two run pages share a title."""
    titles = {}
    for path in sorted((BOOK_DIR / "runs").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        params = reader.notebook_parameters(nb)
        out_dir = params.get("out_dir") or "results"  # the leakage study's runs: results/leakage
        config_json = ROOT / out_dir / params.get("run_name", path.stem) / "config.json"
        assert config_json.is_file(), f"{path.name}: its run's config.json is not under {out_dir}/"
        expected = reader.run_title(json.loads(config_json.read_text())["config"])
        page = (built / f"{_docname(path)}.html").read_text(encoding="utf-8")
        h1 = re.search(r"<h1>([^<]*)<a class=\"headerlink\"", page)
        assert h1 and html_lib.unescape(h1.group(1)).strip() == expected, f"{path.name}: {h1 and h1.group(1)!r}"
        titles[expected] = titles.get(expected, 0) + 1
    assert titles and all(n == 1 for n in titles.values()), titles


def test_built_pages_hide_parameters_but_downloads_keep_them(built):
    """No parameters cell on any page; the .ipynb behind each page's download button is
    the executed notebook, parameters included."""
    for path in _stored():
        nb = json.loads(path.read_text(encoding="utf-8"))
        params = [c for c in nb["cells"] if reader.PARAMETER_TAGS & set(c["metadata"].get("tags", []))]
        page = (built / f"{_docname(path)}.html").read_text(encoding="utf-8")
        assert "tag_parameters" not in page and "tag_injected-parameters" not in page, path.name
        for cell in params:
            first = next((ln for ln in reader.cell_source(cell).splitlines() if "=" in ln), None)
            if first:
                assert html_lib.escape(first.strip()) not in page, f"{path.name} shows {first!r}"
        rel = path.relative_to(ROOT).as_posix()
        assert f'href="{"../" * rel.count("/")}_sources/{rel}"' in page, f"{path.name}: no download link"
        assert (built / "_sources" / rel).read_bytes() == path.read_bytes()


def test_figures_page_links_every_figure_to_its_section(built):
    """The figures page shows one card per figure of book_figures, and each card's link
    leads to a page of the book and an id on that page."""
    figures = book.book_figures(ROOT)
    assert len(figures) >= 5
    page = (built / "book" / "figures.html").read_text(encoding="utf-8")
    assert page.count('<figure class="mtbc-card') == len(figures)
    links = re.findall(r'<figcaption><a href="([^"]+)"', page)
    assert len(links) == len(figures)
    for href in links:
        target, _, anchor = href.partition("#")
        html_path = (built / "book" / target).resolve()
        assert html_path.is_file(), href
        if anchor:
            assert f'id="{anchor}"' in html_path.read_text(encoding="utf-8"), f"{href}: no such section"
    run_links = re.findall(r'<li><a href="(runs/[^"]+)"', page)
    assert len(run_links) == len(list((BOOK_DIR / "runs").glob("*.ipynb")))


_PATH_IN_CODE = re.compile(r"`([A-Za-z0-9_.\-/]+/[A-Za-z0-9_.\-]+\.(?:md|py|ipynb|csv|json|ya?ml|txt|npz|toml))`")


def test_pages_cite_only_files_of_the_repository():
    """A file path quoted in the prose of a page exists in the repository (no absolute
    path, nothing outside it); nothing cites PAPER.md or DESIGN.md."""
    bad = []
    for doc in book.toc_docnames(ROOT):
        src = ROOT / f"{doc}.ipynb"
        if src.is_file():
            texts = [reader.cell_source(c) for c in json.loads(src.read_text(encoding="utf-8"))["cells"]
                     if c["cell_type"] == "markdown"]
        else:
            texts = [(ROOT / f"{doc}.md").read_text(encoding="utf-8")]
        for text in texts:
            bad += [f"{doc}: {m}" for m in _PATH_IN_CODE.findall(text)
                    if m.startswith(("/", "..")) or not (ROOT / m).exists()]
            bad += [f"{doc}: {name}" for name in ("PAPER.md", "DESIGN.md") if name in text]
    assert not bad, f"pages citing files that are not in the repository: {bad}"
