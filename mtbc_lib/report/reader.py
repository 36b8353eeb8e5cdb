"""The reader's view of a stored notebook: what the book shows of it.

:func:`reader_view` is applied by the book's Sphinx extension (``book/_ext/mtbc_book.py``)
to each stored notebook as it is read, so it holds for every page at once (the ``.ipynb``
offered for download stays as papermill wrote it): parameters cells and the code of set-up
cells are removed, the code of cells that display a figure or a table is collapsed, and a
training run's page is titled by what it is (:func:`run_title`, from the run's own
configuration).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from mtbc_lib.core import REPO_ROOT

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


def cell_source(cell: dict) -> str:
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
                tree = ast.parse(cell_source(cell))
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
    ``U-Net++ · MT+DO · fast``, plus what else its run name says, in words
    (``epochs 24``: :func:`name_suffix_words`)."""
    from mtbc_lib.networks.registry import BACKBONES
    from mtbc_lib.studies.ablation import ROWS

    backbone, profile = str(config.get("backbone", "?")), str(config.get("profile", "?"))
    setting = {"seg": "st-seg", "cls": "st-cls", "mt": "mt"}.get(str(config.get("task")), str(config.get("task"))) \
        + ("-do" if config.get("oversampling") else "")
    label = next((r.configuration for r in ROWS if not r.pr and setting in (r.seg, r.cls)), setting)
    entry = BACKBONES.get(backbone)
    parts = [entry.title if entry else backbone, label, profile]
    base = f"{backbone}-{setting}-{profile}"
    name = str(config.get("run_name") or "")
    if name.startswith(base + "-"):
        parts.append(name_suffix_words(name[len(base) + 1:]))
    return " · ".join(parts)


def name_suffix_words(suffix: str) -> str:
    """A run name's suffix as words: ``curationnone-splitscan`` -> ``curation none, split
    scan``, ``batchsize4-lr0.0003`` -> ``batch size 4, lr 0.0003`` (the fields of
    ``engine.config.RUN_NAME_FIELDS``, plus ``ds`` and ``limit``); text it does not parse stays as it is."""
    import re

    from mtbc_lib.engine.config import RUN_NAME_FIELDS

    words = {f.replace("_", ""): f.replace("_", " ") for f in (*RUN_NAME_FIELDS, "limit")} | {"ds": "deep supervision"}
    fields = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    found = re.findall(rf"(?:^|-)({fields})(.+?)(?=-(?:{fields})|$)", suffix)
    if "-".join(k + v for k, v in found) != suffix:
        return suffix.replace("-", " ")
    return ", ".join(f"{words[k]} {v}" for k, v in found)


def retitle(nb: dict, title: str) -> None:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        lines = cell_source(cell).split("\n")
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
        retitle(nb, run_title(run_config(nb, root, name)))
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
            for line in cell_source(cell).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem
