"""The duplicate explorer as its user meets it: JupyterLab started on loopback as
``make lab`` starts it, the explorer notebook opened and run from Lab's Run menu in
headless Chromium, the filter, next, keep/drop and export controls clicked, and the
exported keep-list read back from disk.

The notebook is a copy of ``notebooks/duplicate_explorer.ipynb`` in a temporary folder
(Lab saves what it opens), run on the small generated BUSI folder of ``tests/synthetic.py``
(``MTBC_DATA`` points the notebook's ``data_dir=""`` at it), so the expected groups and
keep-lists are known. A screenshot of the explorer after the export is saved as
``_build/screenshots/explorer_in_jupyterlab.png``. Chromium is the system one, driven by playwright; no request may
leave loopback.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import CHROMIUM_FLAGS, LOOPBACK, chromium

from mtbc_lib import dedup
from mtbc_lib.data.busi import read_keep_list

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "notebooks" / "duplicate_explorer.ipynb"
JUPYTER = Path(sys.executable).with_name("jupyter")
SCREENSHOTS = ROOT / "_build" / "screenshots"  # not committed: for a person to look at


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def busi(synthetic_busi) -> Path:
    return synthetic_busi


@pytest.fixture(scope="module")
def lab(tmp_path_factory, busi):
    """A JupyterLab server on 127.0.0.1 serving a folder that holds a copy of the explorer
    notebook; yields (base URL with token, that folder). Its settings, workspaces and
    runtime files stay in the temporary folder."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copy(TEMPLATE, work / TEMPLATE.name)
    home = tmp_path_factory.mktemp("lab-home")
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "MTBC_DATA": str(busi), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no news toast over the widget, no request for news
    log = open(home / "lab.log", "w")
    # the command of `make lab`, kept on loopback, without a browser and with a known token
    proc = subprocess.Popen([str(JUPYTER), "lab", str(work), "--no-browser", "--ip=127.0.0.1",
                             f"--port={port}", f"--IdentityProvider.token={token}",
                             "--ServerApp.port_retries=0", "--LabApp.news_url=None",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             "--LabApp.extension_manager=readonly",  # no package index queries
                             *(["--allow-root"] if os.geteuid() == 0 else [])],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{(home / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within 120 s:\n{(home / 'lab.log').read_text()[-3000:]}")
            time.sleep(1)
        yield base, token, work
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _position(page) -> str:
    return page.locator(".widget-html:has-text('shown)'), .widget-html:has-text('no group matches')") \
        .first.inner_text()


def _wait_position(page, text: str, timeout: float = 60_000) -> str:
    # Lab renders long notebooks windowed: after "Run All" it scrolls to the last cell and a
    # cell far above (the explorer, above a long table) leaves the DOM. A user scrolls back
    # up to it; so does the test, on every poll.
    page.wait_for_function("""t => {
                              const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
                              if (outer) outer.scrollTop = 0;
                              return [...document.querySelectorAll('.widget-html')]
                                  .some(e => e.innerText.includes(t)); }""", arg=text, timeout=timeout)
    return _position(page)


def test_explorer_in_jupyterlab(lab, busi):
    from playwright.sync_api import sync_playwright

    base, token, work = lab
    result = dedup.find_groups(busi, progress=False, workers=1)  # what the notebook computes
    pair = sorted(g for g, n in result.groups.groupby("group").size().items() if n == 2)
    assert pair, "the generated folder should hold a group of two images"
    group = int(pair[0])
    members = {(c, int(i)) for c, i in result.groups.loc[result.groups["group"] == group, ["class", "id"]]
               .itertuples(index=False)}
    expected = result.keep("keep-one") ^ members  # every member of that group flipped

    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def route(r):
            host = urlsplit(r.request.url).hostname or ""
            if urlsplit(r.request.url).scheme in ("data", "blob", "about") or host in LOOPBACK:
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        try:
            page.goto(f"{base}/lab/tree/{TEMPLATE.name}?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_timeout(3000)  # let Lab connect the notebook to its kernel
            # Run > Run All Cells, as a user would
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()

            text = _wait_position(page, "shown)", timeout=240_000)
            n_groups = result.groups["group"].nunique()
            assert f"(1 of {n_groups} shown)" in text, text
            first = int(text.split("group ")[1].split(" ")[0])
            assert first == min(result.groups["group"])

            # next
            page.locator(".widget-button", has_text="next").click()
            text = _wait_position(page, f"(2 of {n_groups} shown)")
            assert f"group {sorted(result.groups['group'].unique())[1]} " in text, text

            # filter: groups of two images only
            size = page.locator(".widget-dropdown", has=page.locator("label", has_text="size")).locator("select")
            size.select_option(label="2 images")
            text = _wait_position(page, f"(1 of {len(pair)} shown)")
            assert f"group {group} " in text, text

            # keep/drop: flip every member of the group shown
            toggles = page.locator(".widget-toggle-buttons")
            assert toggles.count() == len(members)
            for k in range(toggles.count()):
                buttons = toggles.nth(k).locator("button")
                current = toggles.nth(k).locator("button.mod-active").inner_text().strip()
                target = "drop" if current == "keep" else "keep"
                buttons.filter(has_text=target).click()
                page.wait_for_function("""([el, t]) => el.querySelector('button.mod-active')?.innerText.trim() === t""",
                                       arg=[toggles.nth(k).element_handle(), target])

            # export to a file of the user's choice
            page.locator(".widget-text", has=page.locator("label", has_text="keep-list")).locator("input") \
                .fill("my_keep.csv")
            page.keyboard.press("Tab")
            page.locator(".widget-button", has_text="export").click()
            page.wait_for_function("""() => [...document.querySelectorAll('.widget-html')]
                                      .some(e => e.innerText.includes('wrote '))""", timeout=60_000)
            status = page.locator(".widget-html", has_text="wrote ").first.inner_text()
            page.locator(".widget-button", has_text="export").scroll_into_view_if_needed()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "explorer_in_jupyterlab.png"))
        finally:
            context.close()
            browser.close()

    exported = work / "my_keep.csv"
    assert exported.is_file(), f"no keep-list on disk ({status!r})"
    assert read_keep_list(exported) == expected
    assert f"wrote {len(expected)} images" in status
    assert not outside, f"JupyterLab requests outside loopback: {outside}"
