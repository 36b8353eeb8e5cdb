"""Tests of mtbc_lib.report.book that need no built book: the table of contents (pages in
reading order, the generated block of run pages grouped by backbone), the build command,
the table helpers (column parts, browsable tables, the per-image view), the figures page
(the first figure of every section, its card and link) and the list of runs. The build
itself: tests/integration/test_book.py."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from PIL import Image

from mtbc_lib import networks
from mtbc_lib.report import book, reader

ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = ROOT / "book"


def _docname(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").as_posix()


# ----------------------------------------------------------------------------- table of contents

def test_toc_groups_the_runs_under_their_backbone():
    """_toc.yml's generated block is up to date (mtbc book toc) and puts
    every run notebook in the part of its backbone."""
    toc = (ROOT / "_toc.yml").read_text()
    assert book.runs_toc_block(ROOT) in toc, "_toc.yml is stale: run mtbc book toc"
    import yaml

    parts = {p["caption"]: [c["file"] for c in p["chapters"]] for p in yaml.safe_load(toc)["parts"]}
    for path in sorted((BOOK_DIR / "runs").glob("*.ipynb")):
        cfg = reader.run_config(json.loads(path.read_text(encoding="utf-8")), ROOT, path.stem)
        study = Path(cfg.get("out_dir") or "results").name  # a study's own runs: their own part
        caption = "Training runs: " + networks.BACKBONES[cfg["backbone"]].title + (f" ({study} study)" if study != "results" else "")
        assert _docname(path) in parts.get(caption, []), f"{path.name} is not under {caption!r}"


def test_sync_toc_rewrites_only_its_block(tmp_path):
    (tmp_path / "book" / "runs").mkdir(parents=True)
    text = ("format: jb-book\nroot: intro\nparts:\n  - caption: Data\n    chapters:\n      - file: a\n"
            f"  {book.TOC_BEGIN}\n  - caption: stale\n  {book.TOC_END}\n  - caption: After\n")
    (tmp_path / "_toc.yml").write_text(text)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Training one setting"),
                                         nbformat.v4.new_code_cell(
                                             'backbone = "nnunet"\ntask = "seg"\noversampling = False\n'
                                             'profile = "fast"\nrun_name = "nnunet-st-seg-fast"',
                                             metadata={"tags": ["injected-parameters"]})])
    nbformat.write(nb, tmp_path / "book" / "runs" / "nnunet-st-seg-fast.ipynb")
    nb.cells[1].source += '\nout_dir = "results/leakage"'
    nbformat.write(nb, tmp_path / "book" / "runs" / "a-study-run.ipynb")  # a study's own results folder
    assert book.sync_toc(tmp_path) is True
    new = (tmp_path / "_toc.yml").read_text()
    assert "stale" not in new and new.startswith(text.split(f"  {book.TOC_BEGIN}")[0]) and new.endswith("  - caption: After\n")
    assert ('- caption: "Training runs: nnU-Net"\n    chapters:\n      - file: book/runs/nnunet-st-seg-fast\n'
            '  - caption: "Training runs: nnU-Net (leakage study)"\n    chapters:\n      - file: book/runs/a-study-run\n') in new
    assert book.sync_toc(tmp_path) is False


def _run_notebook(root: Path, name: str, **params) -> None:
    source = "\n".join(f"{k} = {v!r}" for k, v in {**params, "run_name": name}.items())
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Training one setting"),
                                         nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})])
    (root / "book" / "runs").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, root / "book" / "runs" / f"{name}.ipynb")


def test_run_groups_order_backbones_settings_and_profiles(tmp_path):
    for name, backbone, task, do, profile in [
            ("c", "nnunet", "mt", False, "fast"), ("a", "unetplusplus", "mt", True, "fast"),
            ("b", "unetplusplus", "seg", False, "paper"), ("d", "unetplusplus", "seg", False, "fast"),
            ("e", "unetplusplus", "cls", True, "fast"), ("f", "unet-r34", "seg", False, "fast")]:
        _run_notebook(tmp_path, name, backbone=backbone, task=task, oversampling=do, profile=profile)
    _run_notebook(tmp_path, "g", backbone="unetplusplus", task="seg", oversampling=False, profile="fast",
                  out_dir="results/recipe")
    assert book.run_groups(tmp_path) == [
        ("U-Net++", ["book/runs/d", "book/runs/b", "book/runs/e", "book/runs/a"]),  # st-seg (fast, paper), st-cls-do, mt-do
        ("nnU-Net", ["book/runs/c"]),
        ("U-Net (ResNet-34, smp)", ["book/runs/f"]),
        ("U-Net++ (recipe study)", ["book/runs/g"]),  # a study's own results folder: after the grids
    ]
    assert book.run_groups(tmp_path / "empty") == []
    assert book.runs_toc_block(tmp_path / "empty") == f"  {book.TOC_BEGIN}\n  {book.TOC_END}"


def test_sync_toc_leaves_a_file_without_its_markers_alone(tmp_path):
    assert book.sync_toc(tmp_path) is False  # no _toc.yml
    text = "format: jb-book\nroot: intro\n"
    (tmp_path / "_toc.yml").write_text(text)
    _run_notebook(tmp_path, "x", backbone="nnunet", task="seg", oversampling=False, profile="fast")
    assert book.sync_toc(tmp_path) is False and (tmp_path / "_toc.yml").read_text() == text


def test_toc_docnames_in_reading_order_with_globs(tmp_path):
    for f in ("book/intro.md", "book/methods.ipynb", "book/runs/b.ipynb", "book/runs/a.md", "book/runs/a.ipynb",
              "book/runs/.ipynb_checkpoints/a-checkpoint.ipynb", "book/runs/notes.txt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro.md\nparts:\n  - caption: One\n    chapters:\n"
        "      - file: book/runs/b.ipynb\n      - url: https://example.org\n"
        "  - caption: Two\n    chapters:\n      - file: book/methods\n        sections:\n"
        "          - glob: book/runs/*\n")
    # a glob adds the pages not listed before it, once each (a.md and a.ipynb are one page)
    assert book.toc_docnames(tmp_path) == ["book/intro", "book/runs/b", "book/methods", "book/runs/a"]
    with pytest.raises(FileNotFoundError, match="no table of contents"):
        book.toc_docnames(tmp_path / "book")


# ----------------------------------------------------------------------------- the build command

def test_the_build_command_is_strict(monkeypatch, tmp_path):
    monkeypatch.setattr(book, "jupyter_book", lambda: "/bin/jupyter-book")
    assert book.command(tmp_path) == ["/bin/jupyter-book", "build", str(tmp_path), "-W", "-n", "--keep-going"]
    assert book.command(tmp_path, rebuild_all=True)[-1] == "--all"


def test_jupyter_book_beside_python_else_on_path_else_one_line(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "jupyter-book").write_text("")
    monkeypatch.setattr(book.sys, "executable", str(tmp_path / "bin" / "python"))
    assert book.jupyter_book() == str(tmp_path / "bin" / "jupyter-book")
    monkeypatch.setattr(book.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(book.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert book.jupyter_book() == "/usr/bin/jupyter-book"
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="jupyter-book not found"):
        book.jupyter_book()


# ----------------------------------------------------------------------------- tables

def test_column_part_splits_a_wide_table():
    import pandas as pd

    df = pd.DataFrame({"dsc_avg": ["0.5", "–"], "f1_weighted": ["–", "0.7"], "acc": ["–", "0.8"]},
                      index=["ST(Seg)", "ST(Cls)"])
    seg = book.column_part(df.style, ["dsc_avg"], "Segmentation").to_html()
    cls = book.column_part(df.style, ["f1_weighted", "acc"]).to_html()
    assert "Segmentation" in seg and "DSC avg" in seg and "F1 weighted" not in seg and "ST(Cls)" not in seg
    assert "F1 weighted" in cls and "ACC" in cls and "DSC avg" not in cls and "ST(Seg)" not in cls
    with pytest.raises(ValueError, match="none of"):
        book.column_part(df, ["dsc_normal"])


def test_column_part_of_a_two_level_header_leaves_the_original_alone():
    df = pd.DataFrame([[0.5, 0.7, 0.8], [0.6, float("nan"), float("nan")]], index=["MT", "ST(Seg)"],
                      columns=pd.MultiIndex.from_tuples([("dsc_avg", "ours"), ("acc", "ours"), ("acc", "paper")]))
    styler = df.style.set_caption("Table 5")
    before = styler.to_html()
    part = book.column_part(styler, ["acc"]).to_html()
    assert styler.to_html() == before  # a copy
    assert "ACC" in part and "DSC avg" not in part and "Table 5" in part  # caption kept
    assert "MT" in part and "ST(Seg)" not in part  # no accuracy: not shown


def test_per_image_view_and_browsable_table():
    import pandas as pd

    outputs = pd.DataFrame({"class": ["benign", "normal"], "id": [4, 7], "fold": [0, 3],
                            "label": [0, 2], "pred": [2, 2], "dice": [0.12345, 1.0]})
    view = book.per_image_view(outputs)
    assert view.to_dict("list") == {"image": ["benign (4)", "normal (7)"], "fold": [0, 3],
                                    "true class": ["benign", "normal"], "predicted": ["normal", "normal"],
                                    "correct": ["no", "yes"], "Dice": [0.123, 1.0]}
    # outside IPython every table carries the DataTables library; nothing is fetched from a URL
    first, second = book.browsable_table(view, caption="every image").data, book.browsable_table(view).data
    assert "_itables_" in first and len(first) > 500_000 and len(second) > 500_000
    for html in (first, second):
        assert "benign (4)" in html and not re.search(r'<script[^>]+src="https?:', html)


def test_per_image_view_of_a_segmenter():
    outputs = pd.DataFrame({"class": ["malignant"], "id": [9], "fold": [1.0], "label": [1], "dice": [0.5]})
    view = book.per_image_view(outputs)
    assert view.to_dict("list") == {"image": ["malignant (9)"], "fold": [1], "true class": ["malignant"],
                                    "Dice": [0.5]}


def test_browsable_tables_carry_the_library_once_per_cell_in_a_kernel():
    """In a notebook the DataTables library travels with the first table of each cell
    execution: once for two tables of one cell, again in the next cell (whose output may
    be all that is left after the first cell is re-run)."""
    from nbclient import NotebookClient

    setup = "import pandas as pd\nfrom mtbc_lib.report import book\ndf = pd.DataFrame({'a': range(30)})"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(setup + "\ndisplay(book.browsable_table(df), book.browsable_table(df))"),
        nbformat.v4.new_code_cell("display(book.browsable_table(df))")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    sizes = [[len(o["data"]["text/html"]) for o in c.outputs if "text/html" in o.get("data", {})] for c in nb.cells]
    assert len(sizes[0]) == 2 and len(sizes[1]) == 1
    assert sizes[0][0] > 500_000 and sizes[0][1] < 50_000 and sizes[1][0] > 500_000, sizes


# ----------------------------------------------------------------------------- figures page

def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _figure_book(root: Path) -> None:
    """A book of an introduction with a static figure, a notebook with figures in some of its
    sections, and a run page."""
    (root / "book" / "_static").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(root / "book" / "_static" / "fig.png")
    (root / "book" / "intro.md").write_text(
        "# The *intro*\n\n## Data\n\n```{figure} _static/fig.png\n:width: 50%\n```\n\n"
        "## More data\n\n```{figure} _static/missing.png\n```\n")
    plotly = '<div class="plotly-graph-div" id="p"></div>'

    def image(w=64, h=32):
        return nbformat.v4.new_output("display_data", data={"image/png": _png(w, h)})

    def html(text):
        return nbformat.v4.new_output("display_data", data={"text/html": text})

    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("# Results page"), code("", outputs=[image(800, 100)]),
        md("## Section `A`"), code("", outputs=[html("<p>a table</p>")]), code("", outputs=[image()]),
        code("", outputs=[image()]),  # a second figure of the section: not shown
        md("## Hidden"), code("", outputs=[image()], metadata={"tags": ["remove-cell"]}),
        md("## Section *B*"), code("", outputs=[html(plotly)]),
        md("## Big"), code("", outputs=[html(plotly + " " * book.MAX_FIGURE_HTML)])])
    nbformat.write(nb, root / "book" / "results.ipynb")
    _run_notebook(root, "nnunet-st-seg-fast", backbone="nnunet", task="seg", oversampling=False, profile="fast")
    nbformat.write(nbformat.v4.new_notebook(cells=[code("", outputs=[image()])]),
                   root / "book" / "runs" / "nnunet-st-seg-fast.ipynb")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/results\n"
                                   "  - file: book/runs/nnunet-st-seg-fast\n")


def test_book_figures_first_figure_of_each_section(tmp_path):
    _figure_book(tmp_path)
    figures = book.book_figures(tmp_path)
    assert [(f.docname, f.page_title, f.section, f.anchor, f.kind) for f in figures] == [
        ("book/intro", "The intro", "Data", "data", "static"),
        ("book/results", "Results page", "", "", "image"),
        ("book/results", "Results page", "Section A", "section-a", "image"),
        ("book/results", "Results page", "Section B", "section-b", "plotly"),
        ("book/results", "Results page", "Big", "big", "link"),
    ]
    assert figures[0].content == "fig.png" and figures[4].content == ""
    # image outputs become thumbnails no wider than THUMB_WIDTH
    uri = figures[1].content
    assert uri.startswith("data:image/")
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (book.THUMB_WIDTH, 80)
    assert len(book.book_figures(tmp_path, skip_runs=False)) == 6  # the run page's figure too


def test_heading_ids_as_sphinx_makes_them():
    assert book.heading_id("Section `A`") == "section-a"
    assert book.heading_id("The {term}`DO` *rule* of [the paper](https://x.org/a_b)") == "the-do-rule-of-the-paper"
    assert book.heading_id("Table 5: MT+PR") == "table-5-mt-pr"


def test_figures_page_cards_link_to_their_sections(tmp_path):
    _figure_book(tmp_path)
    page = book.figures_page_html("book/figures", tmp_path)
    assert page.startswith('<div class="mtbc-gallery">') and page.count('<figure class="mtbc-card') == 5
    links = re.findall(r'<figcaption><a href="([^"]+)">([^<]*)</a>', page)
    assert links == [("intro.html#data", "The intro › Data"), ("results.html", "Results page"),
                     ("results.html#section-a", "Results page › Section A"),
                     ("results.html#section-b", "Results page › Section B"), ("results.html#big", "Results page › Big")]
    # book/_static is served as the site's _static (html_static_path)
    assert '<img src="../_static/fig.png" alt="Data">' in page and page.count("mtbc-card-wide") == 1
    assert "An interactive figure: open it on its page" in page
    # from a page in another folder, the links climb out of it
    assert '<a href="../book/intro.html#data">' in book.figures_page_html("other/figures", tmp_path)


def test_runs_list_links_every_run_under_its_backbone(tmp_path):
    assert book.runs_list_html("book/figures", tmp_path) == "<p>No training run is stored in the book yet.</p>"
    _run_notebook(tmp_path, "nnunet-st-seg-fast", backbone="nnunet", task="seg", oversampling=False, profile="fast")
    html = book.runs_list_html("book/figures", tmp_path)
    assert html == ('<p><strong>nnU-Net</strong></p><ul class="mtbc-runs"><li><a href="runs/nnunet-st-seg-fast.html">'
                    "nnU-Net · ST(Seg) · fast</a></li></ul>")


def test_a_chapter_is_executed_into_book_stamped_and_a_bad_name_is_one_line(tmp_path, monkeypatch):
    import nbformat

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('data_dir: str = ""\nn: int = 1', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(data_dir, n * 2)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "notebooks" / "tiny.ipynb"))
    monkeypatch.setenv("MTBC_DATA", "/some/BUSI")
    out = book.execute_chapter("tiny", parameters={"n": 21}, root=tmp_path)
    done = nbformat.read(str(out), as_version=4)
    assert out == tmp_path / "book" / "tiny.ipynb" and done.cells[-1].outputs[0]["text"] == "/some/BUSI 42\n"
    assert "environment" in done.metadata["mtbc"] and not list((tmp_path / "book").glob(".*part"))
    with pytest.raises(FileNotFoundError, match=r"chapter 'tyny': no notebooks/tyny.ipynb; chapters: tiny"):
        book.execute_chapter("tyny", root=tmp_path)
