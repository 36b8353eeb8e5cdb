"""Build the book: the one command behind ``make book``, CI and the book tests.

``python -m mtbc_lib.book build`` runs ``jupyter-book build`` on the repository in
strict mode (warnings are errors, nitpicky, every warning reported before failing).
It executes no stored notebook and needs neither the BUSI data nor the network: only
the reproducibility page is computed, from the stored notebooks' metadata. The HTML
lands in ``_build/html``; plotly.js and MathJax are copied into ``_build/html/_static``
by the build itself (``book/_ext/mtbc_book.py``, ``sphinx-mathjax-offline``).

What a reader sees is decided here, for every notebook at once, not cell by cell in the
notebooks: :func:`reader_view` is applied by the book's Sphinx extension to each stored
notebook as it is read (the ``.ipynb`` offered for download stays as papermill wrote it):
parameters cells and the code of set-up cells are removed, the code of cells that display
a figure or a table is collapsed, and a training run's page is titled by what it is
(:func:`run_title`, from the run's own configuration). :func:`sync_toc` groups the run
pages under their backbone in ``_toc.yml`` before each build.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mtbc_lib.config import REPO_ROOT

#: Where the HTML lands, relative to the repository root.
HTML_DIR = Path("_build") / "html"
#: Strict flags: -W warnings are errors, -n nitpicky, --keep-going reports them all.
STRICT_FLAGS: tuple[str, ...] = ("-W", "-n", "--keep-going")


def toc_docnames(root: str | Path = REPO_ROOT) -> list[str]:
    """Every page of ``root/_toc.yml`` as a Sphinx docname (``"book/intro"``), in reading
    order; ``glob`` entries are expanded against the ``.md``/``.ipynb`` files under
    ``root``. The built page of docname ``d`` is ``_build/html/d.html``."""
    import yaml

    root = Path(root)
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise FileNotFoundError(f"{toc_path}: no table of contents")
    docs: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    docs.append(Path(node[key]).with_suffix("").as_posix()
                                if Path(node[key]).suffix in (".md", ".ipynb") else str(node[key]))
            if "glob" in node:
                matches = {p.relative_to(root).with_suffix("").as_posix()
                           for suffix in (".md", ".ipynb") for p in root.glob(node["glob"] + suffix)}
                docs.extend(d for d in sorted(matches) if d not in docs and ".ipynb_checkpoints" not in d)
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)

    walk(yaml.safe_load(toc_path.read_text()))
    return docs


def jupyter_book() -> str:
    """The ``jupyter-book`` executable of this environment (beside ``sys.executable``,
    else on PATH)."""
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if not found:
        raise FileNotFoundError("jupyter-book not found: install the project (pip install -e '.[test]')")
    return found


def command(root: str | Path = REPO_ROOT, rebuild_all: bool = False) -> list[str]:
    """The build command line (a list for subprocess)."""
    return [jupyter_book(), "build", str(root), *STRICT_FLAGS, *(["--all"] if rebuild_all else [])]


def build(root: str | Path = REPO_ROOT, rebuild_all: bool = False, capture: bool = False,
          timeout: float | None = None) -> subprocess.CompletedProcess:
    """Build the book under ``root``; returns the finished process (``returncode`` 0 on
    success; output captured as text when ``capture``). The run pages' block of
    ``_toc.yml`` is brought up to date first (:func:`sync_toc`)."""
    sync_toc(root)
    return subprocess.run(command(root, rebuild_all), cwd=root, capture_output=capture,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- the reader's view

#: Cells papermill writes the parameters into: removed from the page.
PARAMETER_TAGS = frozenset({"parameters", "injected-parameters"})
#: Tag that marks a set-up cell anywhere in a notebook (besides the cells right after the
#: parameters, which are set-up cells by position).
SETUP_TAG = "setup"
#: Tag that keeps a cell's code visible on the page.
SHOW_TAG = "show-input"
#: Tags that already decide how a cell's code is shown.
_DECIDED = frozenset({"remove-cell", "remove_cell", "remove-input", "remove_input", "hide-input",
                      "hide-cell", SHOW_TAG})
_FIGURE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif", "application/vnd.plotly.v1+json")
_DISPLAY_MIMES = _FIGURE_MIMES + ("text/html", "text/markdown", "text/latex")


def _tags(cell: dict) -> list[str]:
    return cell.setdefault("metadata", {}).setdefault("tags", [])


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def shows_figure(cell: dict) -> bool:
    """Whether a code cell's outputs hold a figure (an image or a plotly figure)."""
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        html = data.get("text/html", "")
        if any(m in data for m in _FIGURE_MIMES) or "plotly-graph-div" in ("".join(html) if isinstance(html, list) else html):
            return True
    return False


def shows_display(cell: dict) -> bool:
    """Whether a code cell displays a figure, a table or formatted text (not only a log)."""
    return any(any(m in out.get("data", {}) for m in _DISPLAY_MIMES) for out in cell.get("outputs", []))


def setup_cells(nb: dict) -> list[int]:
    """Indices of the set-up cells: the code cells that follow the parameters cells up to
    the next Markdown cell, and any cell tagged ``setup``."""
    cells = nb.get("cells", [])
    found = {i for i, c in enumerate(cells) if SETUP_TAG in c.get("metadata", {}).get("tags", [])}
    last_param = max((i for i, c in enumerate(cells)
                      if PARAMETER_TAGS & set(c.get("metadata", {}).get("tags", []))), default=None)
    if last_param is not None:
        for i in range(last_param + 1, len(cells)):
            if cells[i].get("cell_type") != "code":
                break
            found.add(i)
    return sorted(found)


def notebook_parameters(nb: dict) -> dict:
    """The parameters a notebook ran with: the defaults of its ``parameters`` cell updated
    by papermill's ``injected-parameters`` cell (plain literal assignments only)."""
    params: dict = {}
    for tag in ("parameters", "injected-parameters"):
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code" or tag not in cell.get("metadata", {}).get("tags", []):
                continue
            try:
                tree = ast.parse(_source(cell))
            except SyntaxError:
                continue
            for node in tree.body:
                target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
                    node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
                if isinstance(target, ast.Name):
                    try:
                        params[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return params


def is_run_notebook(nb: dict) -> bool:
    """Whether a stored notebook is a training run (an executed ``notebooks/train.ipynb``)."""
    input_path = str(nb.get("metadata", {}).get("papermill", {}).get("input_path") or "")
    params = notebook_parameters(nb)
    return Path(input_path).name == "train.ipynb" or {"backbone", "task", "run_name"} <= set(params)


def run_config(nb: dict, root: str | Path = REPO_ROOT, fallback_name: str = "") -> dict:
    """The configuration of a training run: the ``config.json`` the run wrote under
    ``results/<run name>/`` (the run name from its parameters, else ``fallback_name``),
    else the notebook's own parameters."""
    params = notebook_parameters(nb)
    name = params.get("run_name") or fallback_name
    for base in (Path(root) / "results", Path(root) / str(params.get("out_dir") or "results")):
        path = base / name / "config.json"
        if name and path.is_file():
            return json.loads(path.read_text())["config"]
    return {**params, "run_name": name}


def run_title(config: dict) -> str:
    """How the book names a run: backbone · configuration · profile, e.g.
    ``U-Net++ · MT+DO · fast``, plus what else its run name says (``epochs24``)."""
    from mtbc_lib.ablation import ROWS
    from mtbc_lib.models import BACKBONES

    backbone, profile = str(config.get("backbone", "?")), str(config.get("profile", "?"))
    setting = {"seg": "st-seg", "cls": "st-cls", "mt": "mt"}.get(str(config.get("task")), str(config.get("task"))) \
        + ("-do" if config.get("oversampling") else "")
    label = next((r.configuration for r in ROWS if not r.pr and setting in (r.seg, r.cls)), setting)
    entry = BACKBONES.get(backbone)
    parts = [entry.title if entry else backbone, label, profile]
    base = f"{backbone}-{setting}-{profile}"
    name = str(config.get("run_name") or "")
    if name.startswith(base + "-"):
        parts.append(name[len(base) + 1:].replace("-", " "))
    return " · ".join(parts)


def _retitle(nb: dict, title: str) -> None:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        lines = _source(cell).split("\n")
        for i, line in enumerate(lines):
            if line.startswith("# "):
                lines[i] = f"# {title}"
                cell["source"] = "\n".join(lines)
                return
    nb.setdefault("cells", []).insert(0, {"cell_type": "markdown", "metadata": {}, "source": f"# {title}"})


_TH = re.compile(r"(<th\b[^>]*>)([^<]*)(</th>)")


def breakable_headers(html: str) -> str:
    """An HTML table with a line-break opportunity after every ``_`` of its header cells
    (``dsc_<wbr>malignant``), so that a table of long snake-case column names can be as
    narrow as its values, not as its names."""
    return _TH.sub(lambda m: m.group(1) + m.group(2).replace("_", "_<wbr>") + m.group(3), html)


def reader_view(nb: dict, root: str | Path = REPO_ROOT, name: str = "") -> dict:
    """What the book shows of a stored notebook (a JSON dict, changed in place and
    returned): parameters cells removed; set-up cells without their code (and removed
    when they print nothing); the code of cells that display figures or tables collapsed
    behind a toggle (``hide-input``) unless tagged ``show-input``; table headers that may
    wrap after an underscore (:func:`breakable_headers`); a training run titled by
    :func:`run_title`. ``name`` is the notebook's file stem (the run name of a run
    stored by ``mtbc grid``)."""
    cells = nb.get("cells", [])
    setup = set(setup_cells(nb))
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        tags = _tags(cell)
        if PARAMETER_TAGS & set(tags):
            tags.append("remove-cell")
        elif i in setup and not set(tags) & {SHOW_TAG, "remove-cell"}:
            tags.append("remove-input" if cell.get("outputs") else "remove-cell")
        elif not set(tags) & _DECIDED and (shows_figure(cell) or shows_display(cell)):
            tags.append("hide-input")
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html")
            if html and "<th" in (text := "".join(html) if isinstance(html, list) else html):
                out["data"]["text/html"] = breakable_headers(text)
    if is_run_notebook(nb):
        _retitle(nb, run_title(run_config(nb, root, name)))
    return nb



def page_title(path: str | Path, root: str | Path = REPO_ROOT) -> str:
    """The title a stored notebook has in the book: :func:`run_title` for a training run,
    else its first ``#`` heading (else its file stem)."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    if is_run_notebook(nb):
        return run_title(run_config(nb, root, path.stem))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _source(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem

# --------------------------------------------------------------------------- table of contents

#: Markers of the generated block of ``_toc.yml`` (the run pages, grouped by backbone).
TOC_BEGIN = "# BEGIN training runs: generated by `python -m mtbc_lib.book toc`, do not edit"
TOC_END = "# END training runs"
RUNS_DIR = Path("book") / "runs"


def run_groups(root: str | Path = REPO_ROOT) -> list[tuple[str, list[str]]]:
    """The stored run notebooks grouped by backbone: ``[(backbone title, [docname...])]``,
    backbones in the order of ``mtbc_lib.models.BACKBONES``, runs in Table 5's order of
    settings, then by profile and name."""
    from mtbc_lib.ablation import ROWS
    from mtbc_lib.models import BACKBONES

    root = Path(root)
    order = list(dict.fromkeys(s for r in ROWS for s in (r.seg, r.cls) if s))
    groups: dict[str, list[tuple]] = {}
    for path in sorted((root / RUNS_DIR).glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cfg = run_config(nb, root, path.stem)
        setting = {"seg": "st-seg", "cls": "st-cls", "mt": "mt"}.get(str(cfg.get("task")), "") \
            + ("-do" if cfg.get("oversampling") else "")
        key = (order.index(setting) if setting in order else len(order), str(cfg.get("profile")), path.stem)
        groups.setdefault(str(cfg.get("backbone")), []).append((key, (RUNS_DIR / path.stem).as_posix()))
    names = [b for b in BACKBONES if b in groups] + sorted(set(groups) - set(BACKBONES))
    return [(BACKBONES[b].title if b in BACKBONES else b, [d for _, d in sorted(groups[b])]) for b in names]


def runs_toc_block(root: str | Path = REPO_ROOT) -> str:
    """The generated part of ``_toc.yml``: one part per backbone, captioned by its title."""
    lines = [f"  {TOC_BEGIN}"]
    for title, docs in run_groups(root):
        lines += [f"  - caption: {json.dumps('Training runs: ' + title, ensure_ascii=False)}", "    chapters:"]
        lines += [f"      - file: {d}" for d in docs]
    lines.append(f"  {TOC_END}")
    return "\n".join(lines)


def sync_toc(root: str | Path = REPO_ROOT) -> bool:
    """Rewrite the generated block of ``root/_toc.yml`` from the stored run notebooks
    (the rest of the file is left as it is); returns whether the file changed. A file
    without the markers is left alone."""
    path = Path(root) / "_toc.yml"
    if not path.is_file():
        return False
    text = path.read_text()
    pattern = re.compile(r"^[ \t]*" + re.escape(TOC_BEGIN) + r".*?" + re.escape(TOC_END) + r"[^\n]*", re.S | re.M)
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda _: runs_toc_block(root), text, count=1)
    if new != text:
        path.write_text(new)
    return new != text


# --------------------------------------------------------------------------- tables

def metric_label(name: str) -> str:
    """A Table 5 metric as a column header: ``dsc_avg`` -> ``DSC avg``, ``f1_benign`` ->
    ``F1 benign``, ``acc`` -> ``ACC``."""
    head, _, rest = str(name).partition("_")
    return f"{head.upper()} {rest}" if rest else head.upper()


def column_part(styled, columns, caption: str | None = None, empty: tuple[str, ...] = ("–", "")):
    """Part of a table, so that a wide table can be shown as several that fit the text
    column: a copy of ``styled`` (a pandas Styler, or a DataFrame) showing only the
    columns whose label (or first level of a MultiIndex label) is in ``columns``, without
    the rows that are empty there (NaN or one of ``empty``), with metric names as
    headers (:func:`metric_label`) and ``caption`` (None: keep the original's)."""
    import copy

    import pandas as pd

    styler = copy.deepcopy(styled) if hasattr(styled, "data") else styled.style
    data = styler.data
    top = [c[0] if isinstance(c, tuple) else c for c in data.columns]
    keep = [c for c, t in zip(data.columns, top) if t in set(columns)]
    if not keep:
        raise ValueError(f"column_part: none of {list(columns)} among the columns {list(dict.fromkeys(top))}")
    styler = styler.hide([c for c in data.columns if c not in keep], axis="columns")
    blank = [i for i in data.index if all(pd.isna(v) or str(v) in empty for v in data.loc[i, keep])]
    if blank:
        styler = styler.hide(blank, axis="index")
    level = 0 if isinstance(data.columns, pd.MultiIndex) else None
    styler = styler.format_index(metric_label, axis="columns", level=level)
    if caption is not None:
        styler = styler.set_caption(caption)
    return styler


#: Rows per page of a browsable table.
PAGE_LENGTH = 10
_ITABLES_LOADED_IN: object = ()  # the cell execution whose output carries the DataTables library


def _cell_execution():
    """An id of the running cell execution (IPython's execution count), None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell.execution_count if shell is not None else None


def browsable_table(frame, caption: str | None = None, page_length: int = PAGE_LENGTH):
    """A long table shown whole in the book: every row, sortable by any column and
    searchable, ``page_length`` rows a page (itables, offline: the DataTables library is
    embedded in the output of the first such table of each cell execution, so the
    static book needs no network and a re-run cell still carries it). Returns an
    ``IPython.display.HTML`` to display."""
    global _ITABLES_LOADED_IN
    import itables
    from IPython.display import HTML
    from itables import javascript
    from itables import options as itables_options

    html = itables.to_html_datatable(frame, caption=caption, connected=False, pageLength=page_length,
                                     lengthMenu=[page_length, 25, 100, len(frame)], showIndex=False,
                                     classes="display compact", display_logo_when_loading=False)
    cell = _cell_execution()
    if cell is None or cell != _ITABLES_LOADED_IN:
        html = javascript.generate_init_offline_itables_html(itables_options.dt_bundle) + html
        _ITABLES_LOADED_IN = cell
    return HTML(html)


def per_image_view(outputs, classes=None):
    """Per-image test outputs (``ablation.row_outputs``: class, id, fold, label, pred,
    dice) for a reader: the image's name, fold, true and predicted class, whether the
    label is right, and the Dice of its mask."""
    import pandas as pd

    from mtbc_lib.config import CLASSES

    classes = list(classes or CLASSES)
    view = pd.DataFrame({"image": [f"{c} ({i})" for c, i in zip(outputs["class"], outputs["id"])],
                         "fold": outputs["fold"].astype(int)})
    if "label" in outputs:
        view["true class"] = [classes[int(v)] for v in outputs["label"]]
    if "pred" in outputs:
        view["predicted"] = [classes[int(v)] for v in outputs["pred"]]
        view["correct"] = ["yes" if a == b else "no" for a, b in zip(outputs["label"], outputs["pred"])]
    if "dice" in outputs:
        view["Dice"] = outputs["dice"].round(3)
    return view


# --------------------------------------------------------------------------- figures page

#: Thumbnails of image figures on the figures page: at most this wide (pixels).
THUMB_WIDTH = 640
#: Figures whose HTML is larger than this are linked, not copied, on the figures page.
MAX_FIGURE_HTML = 200_000


@dataclass
class Figure:
    """One figure of the book: the page and section that explain it, and what to show."""

    docname: str          # page, e.g. "book/results"
    page_title: str
    section: str          # heading text of the section holding it ("" before any)
    anchor: str           # HTML id of that section ("" for the page's top)
    kind: str             # "image" (data URI in ``content``), "plotly" (HTML) or "link"
    content: str


def heading_id(text: str) -> str:
    """The HTML id Sphinx gives a section titled ``text`` (inline Markdown stripped)."""
    from docutils import nodes

    plain = re.sub(r"\{[a-z]+\}`([^`]*)`", r"\1", text)
    plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", plain)
    plain = re.sub(r"[`*_]", "", plain)
    return nodes.make_id(plain)


def _thumbnail(png_b64: str, width: int = THUMB_WIDTH) -> str:
    """A PNG output as a data URI no wider than ``width`` (JPEG when that is much smaller)."""
    import base64
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(png_b64)))
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    best = None
    for fmt, kwargs in (("PNG", {"optimize": True}), ("JPEG", {"quality": 85})):
        buf = io.BytesIO()
        (img.convert("RGB") if fmt == "JPEG" else img).save(buf, fmt, **kwargs)
        if best is None or buf.tell() < 0.6 * len(best[1]):
            best = (fmt.lower(), buf.getvalue())
    return f"data:image/{best[0]};base64," + base64.b64encode(best[1]).decode()


def _heading(line: str) -> tuple[int, str] | None:
    m = re.match(r"^(#{1,6})\s+(.*\S)\s*$", line)
    return (len(m.group(1)), m.group(2)) if m else None


def book_figures(root: str | Path = REPO_ROOT, skip_runs: bool = True) -> list[Figure]:
    """The first figure of every section of every page of the table of contents, in
    reading order: notebook outputs (images, plotly figures) and Markdown ``{figure}``
    directives. Training runs are left out when ``skip_runs`` (they have a list of
    their own on the figures page)."""
    root = Path(root)
    found: list[Figure] = []
    for doc in toc_docnames(root):
        if skip_runs and doc.startswith(RUNS_DIR.as_posix() + "/"):
            continue
        ipynb, md = root / f"{doc}.ipynb", root / f"{doc}.md"
        title, section, anchor, taken = doc, "", "", set()

        def heading(text: str) -> None:
            nonlocal title, section, anchor
            for line in text.splitlines():
                h = _heading(line)
                if h and h[0] == 1 and title == doc:
                    title = re.sub(r"[`*]", "", h[1])
                elif h and h[0] > 1:
                    section, anchor = re.sub(r"[`*]", "", h[1]), heading_id(h[1])

        if ipynb.is_file():
            nb = json.loads(ipynb.read_text(encoding="utf-8"))
            if is_run_notebook(nb):
                _retitle(nb, run_title(run_config(nb, root, ipynb.stem)))
            for cell in nb.get("cells", []):
                if cell.get("cell_type") == "markdown":
                    heading(_source(cell))
                    continue
                if "remove-cell" in cell.get("metadata", {}).get("tags", []) or anchor in taken:
                    continue
                for out in cell.get("outputs", []):
                    data = out.get("data", {})
                    html = data.get("text/html", "")
                    html = "".join(html) if isinstance(html, list) else html
                    if "plotly-graph-div" in html:
                        kind, content = ("plotly", html) if len(html) <= MAX_FIGURE_HTML else ("link", "")
                    elif "image/png" in data:
                        png = data["image/png"]
                        kind, content = "image", _thumbnail("".join(png) if isinstance(png, list) else png)
                    else:
                        continue
                    found.append(Figure(doc, title, section, anchor, kind, content))
                    taken.add(anchor)
                    break
        elif md.is_file():
            text = md.read_text(encoding="utf-8")
            for line in text.splitlines():
                heading(line)
                m = re.match(r"^[`:]{3,}\{figure\}\s+(\S+)", line)
                if m and anchor not in taken:
                    src = (md.parent / m.group(1)).resolve()
                    static = root / "book" / "_static"
                    if src.is_file() and static.resolve() in src.parents:
                        found.append(Figure(doc, title, section, anchor, "static",
                                            src.relative_to(static.resolve()).as_posix()))
                        taken.add(anchor)
    return found


def figures_page_html(page: str, root: str | Path = REPO_ROOT) -> str:
    """The gallery of the figures page ``page`` (its docname, for relative links): one
    card per figure, captioned with a link to the section that explains it."""
    import html as html_lib
    import os

    here = Path(page).parent.as_posix()
    cards = []
    for fig in book_figures(root):
        href = os.path.relpath(f"{fig.docname}.html", here) + (f"#{fig.anchor}" if fig.anchor else "")
        where = html_lib.escape(fig.page_title) + (f" › {html_lib.escape(fig.section)}" if fig.section else "")
        if fig.kind == "image":
            body = f'<a href="{href}"><img src="{fig.content}" alt="{html_lib.escape(fig.section or fig.page_title)}"></a>'
        elif fig.kind == "static":
            src = os.path.relpath(f"_static/{fig.content}", here)
            body = f'<a href="{href}"><img src="{src}" alt="{html_lib.escape(fig.section or fig.page_title)}"></a>'
        elif fig.kind == "plotly":
            body = fig.content
        else:
            body = f'<p class="mtbc-card-link"><a href="{href}">An interactive figure: open it on its page</a></p>'
        wide = " mtbc-card-wide" if fig.kind == "plotly" else ""
        cards.append(f'<figure class="mtbc-card{wide}">{body}<figcaption><a href="{href}">{where}</a>'
                     "</figcaption></figure>")
    return '<div class="mtbc-gallery">' + "".join(cards) + "</div>"


def runs_list_html(page: str, root: str | Path = REPO_ROOT) -> str:
    """Every training run, grouped by backbone: lists of links titled as the run pages
    are (:func:`run_title`), relative to the page ``page`` (a docname)."""
    import html as html_lib
    import os

    root, here = Path(root), Path(page).parent.as_posix()
    parts = []
    for backbone, docs in run_groups(root):
        items = []
        for doc in docs:
            nb = json.loads((root / f"{doc}.ipynb").read_text(encoding="utf-8"))
            title = html_lib.escape(run_title(run_config(nb, root, Path(doc).name)))
            items.append(f'<li><a href="{os.path.relpath(doc + ".html", here)}">{title}</a></li>')
        parts.append(f'<p><strong>{html_lib.escape(backbone)}</strong></p><ul class="mtbc-runs">{"".join(items)}</ul>')
    return "".join(parts) or "<p>No training run is stored in the book yet.</p>"

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtbc_lib.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the HTML book into _build/html (strict)")
    p_build.add_argument("--all", action="store_true", help="re-build every page, not only changed ones")
    sub.add_parser("toc", help="group the stored run notebooks under their backbone in _toc.yml")
    args = parser.parse_args(argv)
    try:
        if args.command == "toc":
            print("_toc.yml " + ("updated" if sync_toc() else "already up to date"))
            return 0
        return build(rebuild_all=args.all).returncode
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
