"""The built book in a real browser: every page of the table of contents opened in
headless Chromium at 1280 × 800, served from loopback only, and checked for what a
reader sees: nothing wider than the window or cut off at the text column's edge, no
parameters cell, no code shown above a figure, no two pages with the same title in the
sidebar, every plotly figure drawn and every table of the notebook shown, no printed output
over 25 lines, no missing value shown as ``<NA>`` or ``NaN``, the CSV files behind the
results linked and served, the results chapter within 12 screens and the verdict table on
the first screen of the introduction and of the results chapter.

Uses ``_build/html`` as built by ``make book``; when it is absent the fixture builds it
with the same command (``mtbc_lib.report.book.build``). Screenshots go to ``_build/screenshots/``.
Chromium is the system one (``/usr/bin/chromium``, or ``$MTBC_CHROMIUM``), driven by
playwright (never ``playwright install``).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import CHROMIUM_FLAGS, LOOPBACK, chromium

from mtbc_lib.report import book, reader

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / book.HTML_DIR
SCREENSHOTS = ROOT / "_build" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output readable
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of the built book served by http.server on 127.0.0.1 (random port)."""
    if not (HTML / "index.html").is_file():  # fresh clone: build as `make book` does
        proc = book.build(ROOT, capture=True, timeout=1800)
        assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _pages_or_empty() -> list[str]:
    try:
        return [f"{doc}.html" for doc in book.toc_docnames(ROOT)]
    except FileNotFoundError:
        return []


def test_toc_is_not_empty():
    assert _pages_or_empty(), "_toc.yml lists no page"


# Wait until every plotly figure has drawn its SVG and MathJax has typeset every formula.
_READY = """() => {
  const figs = [...document.querySelectorAll('.plotly-graph-div')];
  const math = document.querySelectorAll('div.math, span.math').length;
  const typeset = document.querySelectorAll('mjx-container').length;
  return figs.every(d => d.querySelector('.main-svg')) && typeset >= math;
}"""

_IMAGES = """async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.currentSrc || i.src);
}"""


@pytest.mark.parametrize("page_path", _pages_or_empty())
def test_page_renders_offline(site, browser, page_path):
    """HTTP 200, no console error, every image loaded, every plotly figure drew its
    SVG, every formula typeset without error, and no request left loopback."""
    context = browser.new_context(viewport=VIEWPORT)
    requests: list[str] = []
    outside: list[str] = []
    errors: list[str] = []
    bad_status: list[str] = []

    def route(r):
        host = urlsplit(r.request.url).hostname or ""
        if urlsplit(r.request.url).scheme in ("data", "blob", "about") or host in LOOPBACK:
            r.continue_()
        else:  # never let the book reach the network, and fail the test below
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda req: requests.append(req.url))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("response", lambda resp: bad_status.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    try:
        response = page.goto(site + page_path, wait_until="load", timeout=60_000)
        assert response is not None and response.status == 200, f"{page_path}: HTTP {response and response.status}"
        # (no "networkidle": with plotly.js on the page, this Chromium never reports it)
        try:
            page.wait_for_function(_READY, timeout=30_000)
        except Exception:  # the asserts below say what did not render
            pass
        page.evaluate("document.fonts.ready.then(() => true)")
        page.wait_for_timeout(500)  # late requests (lazy assets) still hit the route above
        broken_images = page.evaluate(_IMAGES)
        figures = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
        drawn = page.evaluate(
            "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('.main-svg')).length")
        math = page.evaluate("document.querySelectorAll('div.math, span.math').length")
        typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
        math_errors = page.evaluate("[...document.querySelectorAll('mjx-merror')].map(e => e.textContent)")
        layout = page.evaluate(_LAYOUT, MAX_OUTPUT_LINES)
        broken_downloads = [f"{r.status} {u}" for u in dict.fromkeys(layout["downloads"])
                            if (r := context.request.get(u)).status != 200]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / (page_path.replace("/", "__").removesuffix(".html") + ".png")),
                        full_page=True)
    finally:
        context.close()

    assert not outside, f"{page_path}: requests outside loopback: {outside}"
    assert all((urlsplit(u).hostname or "") in LOOPBACK or urlsplit(u).scheme in ("data", "blob")
               for u in requests), f"{page_path}: {requests}"
    assert not bad_status, f"{page_path}: failed responses: {bad_status}"
    assert not errors, f"{page_path}: JavaScript errors: {errors}"
    assert not broken_images, f"{page_path}: images that did not load: {broken_images}"
    assert drawn == figures, f"{page_path}: {figures} plotly figures, {drawn} drew their SVG"
    assert typeset >= math, f"{page_path}: {math} formulas, {typeset} typeset by MathJax"
    assert not math_errors, f"{page_path}: MathJax errors: {math_errors}"

    assert layout["pageWidth"] <= VIEWPORT["width"], f"{page_path}: the page scrolls sideways ({layout['pageWidth']} px)"
    assert not layout["wide"], f"{page_path}: elements wider than the {VIEWPORT['width']} px window: {layout['wide']}"
    assert not layout["clipped"], f"{page_path}: content cut off at the edge of its box: {layout['clipped']}"
    assert not layout["parameterCells"], f"{page_path}: parameters cells on the page: {layout['parameterCells']}"
    assert not layout["figureCode"], f"{page_path}: code shown above a figure: {layout['figureCode']}"
    duplicated = sorted({t for t in layout["sidebar"] if layout["sidebar"].count(t) > 1})
    assert not duplicated, f"{page_path}: page titles repeated in the sidebar: {duplicated}"
    assert not layout["emptyTables"], f"{page_path}: tables drawn empty or invisible: {layout['emptyTables']}"
    assert not layout["longOutputs"], \
        f"{page_path}: output blocks over {MAX_OUTPUT_LINES} lines: {layout['longOutputs']}"
    missing = _MISSING.findall(layout["text"])
    assert not missing, f"{page_path}: missing values shown as {sorted(set(missing))}"
    assert not broken_downloads, f"{page_path}: download links that do not answer 200: {broken_downloads}"
    if page_path in SCREEN_LIMITS:
        limit = SCREEN_LIMITS[page_path] * VIEWPORT["height"]
        assert layout["height"] <= limit, f"{page_path}: {layout['height']} px tall, over {limit} px " \
                                          f"({SCREEN_LIMITS[page_path]} screens of {VIEWPORT['height']} px)"
    if page_path in VERDICT_PAGES:
        assert layout["verdicts"], f"{page_path}: no verdict table"
        assert len(layout["headings"]) < 2 or layout["verdicts"][0] < layout["headings"][1], \
            f"{page_path}: the verdict table comes after the second heading"
        assert layout["verdicts"][0] < VIEWPORT["height"], \
            f"{page_path}: the verdict table starts below the first screen"
    wanted = CSV_LINKS.get(page_path, ())
    linked = {Path(urlsplit(u).path).name for u in layout["downloads"]}
    assert set(wanted) <= linked, f"{page_path}: no download link to {sorted(set(wanted) - linked)}"
    expected = _expected_view(page_path)
    if expected is not None:
        tables, hidden_lines = expected
        assert layout["tables"] == tables, f"{page_path}: {layout['tables']} tables shown, the notebook has {tables}"
        shown = [ln for ln in hidden_lines if ln in layout["text"]]
        assert not shown, f"{page_path}: parameter lines visible: {shown}"


#: Printed output longer than this many lines is a log, not a result: it belongs in the notebook.
MAX_OUTPUT_LINES = 25
#: Missing values as pandas prints them: a reader should never see them.
_MISSING = re.compile(r"<NA>|\bNaN\b")
#: Pages a reader should finish: at most this many screens of the viewport's height.
SCREEN_LIMITS = {"book/results.html": 12}
#: Pages whose first screen holds the verdict table, before their second heading.
VERDICT_PAGES = ("book/intro.html", "book/results.html")
#: The CSV files each page that shows per-image results, claims or consistency links.
CSV_LINKS = {
    "book/intro.html": ("claims.csv", "ablation.csv", "consistency.csv"),
    "book/results.html": ("claims.csv", "ablation.csv", "consistency.csv", "fold0_test.csv"),
    "book/appendix.html": ("ablation.csv", "fold0_test.csv"),
    "book/leakage.html": ("leakage.csv", "fold0_test.csv"),
}


# What the reader sees of the page's layout (1280 px window).
_LAYOUT = """(maxLines) => {
  const W = window.innerWidth;
  const visible = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && e.checkVisibility({visibilityProperty: true}); };
  const skip = e => e.closest('.plotly-graph-div, mjx-container, span.math, div.math');
  const label = e => e.tagName.toLowerCase() + (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : '')
                     + ' «' + (e.innerText || '').trim().slice(0, 60) + '»';
  const all = [...document.querySelectorAll('body *')].filter(e => !skip(e));
  const wide = all.filter(e => visible(e) && e.getBoundingClientRect().right > W + 1).map(label).slice(0, 10);
  const clipped = [...document.querySelectorAll('article *')].filter(e => {
    if (skip(e) || e.clientWidth === 0) return false;
    const o = getComputedStyle(e).overflowX;
    return ['auto', 'scroll', 'hidden', 'clip'].includes(o) && e.scrollWidth > e.clientWidth + 1;
  }).map(e => label(e) + ` ${e.scrollWidth}>${e.clientWidth}`).slice(0, 10);
  const parameterCells = [...document.querySelectorAll('.tag_parameters, .tag_injected-parameters')].filter(visible).map(label);
  const figureCode = [...document.querySelectorAll('article div.cell')].filter(c =>
      c.querySelector('.plotly-graph-div, .cell_output img') &&
      [...c.querySelectorAll('.cell_input')].some(visible)).map(label);
  const sidebar = [...document.querySelectorAll('.bd-sidebar-primary nav a.reference')].map(a => a.textContent.trim());
  // (a table inside a [hidden] box is a deliberate fallback: the static preview of an interactive table)
  const tables = [...document.querySelectorAll('article table')].filter(t => !t.closest('[hidden]'));
  // (a table in a closed <details> is an output folded on purpose, "Show code cell outputs": it needs rows, not visibility)
  const folded = t => t.closest('details:not([open])');
  const emptyTables = tables.filter(t => (!folded(t) && !visible(t)) || t.rows.length === 0).map(label);
  // printed output (text, logs) longer than a reader scrolls through: its line count
  const longOutputs = [...document.querySelectorAll('article .cell_output pre, article .output pre')]
      .map(e => [label(e), (e.innerText || '').replace(/\\n$/, '').split('\\n').length]).filter(([, n]) => n > maxLines)
      .map(([l, n]) => `${l} (${n} lines)`).slice(0, 10);
  const top = e => e.getBoundingClientRect().top + window.scrollY;
  const headings = [...document.querySelectorAll('article h1, article h2, article h3')].map(top);
  const verdicts = [...document.querySelectorAll('article table.mtbc-verdicts')].map(top);
  const downloads = [...document.querySelectorAll('article a.download')].map(a => a.href);
  return {pageWidth: document.documentElement.scrollWidth, wide, clipped, parameterCells, figureCode, sidebar,
          tables: tables.length, emptyTables, text: document.querySelector('article').innerText, longOutputs,
          height: document.documentElement.scrollHeight, headings, verdicts, downloads};
}"""


def _expected_view(page_path: str):
    """For a page made from a stored notebook: how many tables its shown outputs hold, and
    the assignment lines of its parameters cells (which must not be visible); None for a
    Markdown page."""
    source = ROOT / page_path.replace(".html", ".ipynb")
    if not source.is_file():
        return None
    nb = reader.reader_view(json.loads(source.read_text(encoding="utf-8")), ROOT, source.stem)
    tables, hidden = 0, []
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if reader.PARAMETER_TAGS & tags:
            hidden += [ln.strip() for ln in reader.cell_source(cell).splitlines() if "=" in ln and len(ln.strip()) > 12]
        if cell["cell_type"] == "markdown":
            tables += len(_PIPE_TABLE_RULE.findall(reader.cell_source(cell)))
        if cell["cell_type"] != "code" or tags & {"remove-cell", "remove-output"}:
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                html = data["text/html"]
                html = _SCRIPT.sub("", "".join(html) if isinstance(html, list) else html)
                tables += html.count("<table") - html.count('_fallback"><table')  # itables' static preview
            elif "text/markdown" in data:
                md = data["text/markdown"]
                tables += len(_PIPE_TABLE_RULE.findall("".join(md) if isinstance(md, list) else md))
    return tables, hidden


_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
# The rule under a Markdown table's header: |---|:--:|---|
_PIPE_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", re.M)


def test_long_tables_are_browsable_whole(site, browser):
    """The results chapter's per-image table holds every test image of the proposal's row
    on the verdicts' grid, and a reader can search it and sort it by a column, offline."""
    import pandas as pd

    from mtbc_lib.report import results
    from mtbc_lib.studies import ablation

    nb = json.loads((ROOT / "book" / "results.ipynb").read_text(encoding="utf-8"))
    params = reader.notebook_parameters(nb)
    row = next(r for r in ablation.ROWS if r.configuration == "MT+PR+DO")
    grid = results.pick_grid(results.grids_in(pd.read_csv(ROOT / params["results_dir"] / "claims.csv")))
    runs = ablation.runs_of(row, *grid, ROOT / params["results_dir"])
    assert runs, f"no finished MT+PR+DO run of {grid}: nothing to browse"
    expected = [book.per_image_view(ablation.row_outputs(row, runs))]  # the verdicts' grid

    context = browser.new_context(viewport=VIEWPORT)
    context.route("**/*", lambda r: r.continue_() if (urlsplit(r.request.url).hostname or "") in LOOPBACK
                  or urlsplit(r.request.url).scheme in ("data", "blob") else r.abort())
    page = context.new_page()
    try:
        page.goto(site + "book/results.html", wait_until="load", timeout=60_000)
        page.wait_for_selector("table.dataTable tbody tr", timeout=30_000)
        tables = page.locator("div.dt-container")
        assert tables.count() == len(expected)
        for k, view in enumerate(expected):
            box = tables.nth(k)
            assert f"of {len(view)} entries" in box.locator(".dt-info").inner_text()
            name = view["image"].iloc[len(view) // 2]
            box.locator("input[type=search]").fill(name)
            page.wait_for_function("([el, n]) => el.querySelectorAll('tbody tr').length === n",
                                   arg=[box.element_handle(), int((view["image"] == name).sum())])
            assert name in box.locator("tbody tr").first.inner_text()
            box.locator("input[type=search]").fill("")
            header = box.locator("thead th", has_text="Dice")
            for order, best in (("ascending", view["Dice"].min()), ("descending", view["Dice"].max())):
                header.locator(".dt-column-order").click()  # the sort arrows (header text stays selectable)
                page.wait_for_function("([th, o]) => th.getAttribute('aria-sort') === o",
                                       arg=[header.element_handle(), order])
                first = box.locator("tbody tr").first.locator("td").last.inner_text()
                assert float(first) == best, (order, first, best)
    finally:
        context.close()
