"""Sphinx extension of the mtbc book: the reader's view of every notebook, and
plotly.js served from the book itself.

Every stored notebook is shown as ``mtbc_lib.report.reader.reader_view`` makes it (parameters and
set-up code removed, the code of figures and tables collapsed, training runs titled by
their configuration), for every notebook of the book at once: the change is made to the
notebook text Sphinx reads (``source-read``), never to the files, so the ``.ipynb``
offered for download is the executed notebook as papermill stored it. The book's own
stylesheet (``_static/mtbc.css``: tables that fit the text column) is added to every page.

Notebook figures are stored as HTML that calls the page's ``Plotly`` global
(``mtbc_lib.report.plots.show_plotly`` never embeds plotly.js). This extension

* adds ``_static/plotly.min.js`` to every page whose body holds a plotly figure
  (other pages do not pay for the 4.6 MB script), ahead of the other scripts so that
  ``Plotly`` exists before the figures' inline scripts run;
* copies ``plotly.min.js`` from the installed plotly package into the build output,
  so the file is never committed and always matches the plotly that made the figures;
* re-reads the pages computed at build time (``mtbc_reread_always``) on every build;
* drops the duplicated inline scripts of Sphinx 7.4 (a JavaScript error otherwise).

Loaded through ``sphinx.local_extensions`` in ``_config.yml``.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from importlib import resources
from pathlib import Path

PLOTLY_JS = "plotly.min.js"
FIGURE_MARKER = 'class="plotly-graph-div"'


def plotly_js_source() -> Path:
    """Path of plotly.min.js inside the installed plotly package."""
    path = Path(str(resources.files("plotly") / "package_data" / PLOTLY_JS))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: plotly.min.js missing from the installed plotly package")
    return path


def _add_plotly_to_page(app, pagename, templatename, context, doctree) -> None:
    if FIGURE_MARKER in context.get("body", ""):
        # priority < 200: before Sphinx's own scripts and far before MathJax/require.js,
        # so plotly registers the global even if an AMD loader is added to the page later
        app.add_js_file(PLOTLY_JS, priority=100)


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Sphinx 7.4 lists an inline script twice when an extension adds it after the
    builder started (once with filename None, once with ""): sphinx-thebe's
    ``const THEBE_JS_URL`` then throws "already been declared" in the browser."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _copy_plotly_js(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = plotly_js_source()
    target = Path(app.outdir) / "_static" / PLOTLY_JS
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def _reread_build_time_pages(app, env, added, changed, removed) -> list[str]:
    """Pages computed at build time (the reproducibility page reads the stored notebooks'
    metadata) must be re-read on every build, or an incremental build would keep a
    table that no longer matches the notebooks in book/."""
    return [doc for doc in app.config.mtbc_reread_always if doc in env.found_docs]


def _reader_view(app, docname, source) -> None:
    """Apply ``mtbc_lib.report.reader.reader_view`` to a notebook as Sphinx reads it."""
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    from mtbc_lib.report.reader import reader_view

    nb = json.loads(source[0])
    source[0] = json.dumps(reader_view(nb, root=Path(app.srcdir), name=path.stem), ensure_ascii=False)


def setup(app):
    app.connect("source-read", _reader_view)
    app.add_css_file("mtbc.css")
    app.add_config_value("mtbc_reread_always", ["book/intro", "book/reproducibility", "book/figures"], "env")
    app.connect("env-get-outdated", _reread_build_time_pages)
    app.connect("html-page-context", _add_plotly_to_page)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)  # after every add
    app.connect("build-finished", _copy_plotly_js)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
