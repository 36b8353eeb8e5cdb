"""The built book in a real browser: every page of the table of contents opened in
headless Chromium, served from loopback only.

Uses ``_build/html`` as built by ``make book``; when it is absent the fixture builds it
with the same command (``mtbc_lib.book.build``). Screenshots go to ``_build/screenshots/``.
Chromium is the system one (``/usr/bin/chromium``, or ``$MTBC_CHROMIUM``), driven by
playwright (never ``playwright install``).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mtbc_lib import book

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / book.HTML_DIR
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _chromium() -> str:
    path = os.environ.get("MTBC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"{path}: Chromium not found; install it (apt-get install chromium) or set MTBC_CHROMIUM")
    return path


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
        b = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS)
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
    context = browser.new_context(viewport={"width": 1280, "height": 900})
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
