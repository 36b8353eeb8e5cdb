"""Tests of mtbc_lib.report.reader: what a reader sees of a notebook (parameters and set-up
removed, display code folded), run titles, notebook parameters (wide tables: test_book.py)."""

from __future__ import annotations

import json

import nbformat

from mtbc_lib import networks
from mtbc_lib.report import reader


def _notebook(*cells) -> dict:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    return json.loads(nbformat.writes(nb))


def _stream(text: str) -> dict:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _display(mime: str, value: str) -> dict:
    return nbformat.v4.new_output("display_data", data={mime: value})


# --------------------------------------------------------------------------- the build


def test_reader_view_removes_parameters_and_setup_and_collapses_display_code():
    nb = _notebook(
        nbformat.v4.new_markdown_cell("# A chapter"),
        nbformat.v4.new_code_cell("n: int = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("n = 4", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint('ready')", outputs=[_stream("ready\n")]),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("## Results"),
        nbformat.v4.new_code_cell("fig", outputs=[_display("image/png", "iVBORw0KGgo=")]),
        nbformat.v4.new_code_cell("df", outputs=[_display("text/html", "<table><tr><th>dsc_avg</th></tr></table>")]),
        nbformat.v4.new_code_cell("train()", outputs=[_stream("epoch 1\n")]),
        nbformat.v4.new_code_cell("df2", metadata={"tags": ["show-input"]},
                                  outputs=[_display("text/html", "<table></table>")]),
        nbformat.v4.new_code_cell("fig2", metadata={"tags": ["remove-input"]},
                                  outputs=[_display("image/png", "iVBORw0KGgo=")]),
        nbformat.v4.new_code_cell("late_setup()", metadata={"tags": ["setup"]}),
    )
    reader.reader_view(nb, name="chapter")
    tags = [set(c["metadata"].get("tags", [])) for c in nb["cells"]]
    assert "remove-cell" in tags[1] and "remove-cell" in tags[2]      # parameters
    assert tags[3] == {"remove-input"}                                # set-up that prints: output kept
    assert tags[4] == {"remove-cell"}                                 # set-up without output: gone
    assert tags[6] == {"hide-input"} and tags[7] == {"hide-input"}    # figure, table: code collapsed
    assert tags[8] == set()                                           # a log: its code stays
    assert tags[9] == {"show-input"} and tags[10] == {"remove-input"}  # explicit tags win
    assert tags[11] == {"setup", "remove-cell"}
    assert "dsc_<wbr>avg" in nb["cells"][7]["outputs"][0]["data"]["text/html"]
    assert reader.cell_source(nb["cells"][0]) == "# A chapter"              # not a training run: title kept


def test_setup_cells_end_at_the_first_markdown_cell():
    nb = _notebook(nbformat.v4.new_code_cell("p = 1", metadata={"tags": ["parameters"]}),
                   nbformat.v4.new_code_cell("a = 1"), nbformat.v4.new_code_cell("b = 2"),
                   nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("c = 3"))
    assert reader.setup_cells(nb) == [1, 2]
    assert reader.setup_cells(_notebook(nbformat.v4.new_code_cell("a = 1"))) == []


def test_notebook_parameters_read_defaults_then_injected_values():
    nb = _notebook(
        nbformat.v4.new_code_cell('backbone: str = "unetplusplus"  # network\nepochs: int | None = None\nlr = 1e-4',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('# Parameters\nbackbone = "nnunet"\nepochs = 3\n', metadata={"tags": ["injected-parameters"]}))
    assert reader.notebook_parameters(nb) == {"backbone": "nnunet", "epochs": 3, "lr": 1e-4}


def test_run_title_names_backbone_configuration_and_profile():
    cfg = {"backbone": "unetplusplus", "task": "mt", "oversampling": True, "profile": "fast",
           "run_name": "unetplusplus-mt-do-fast"}
    assert reader.run_title(cfg) == "U-Net++ · MT+DO · fast"
    assert reader.run_title({**cfg, "task": "seg", "oversampling": False, "profile": "cpu",
                           "run_name": "unetplusplus-st-seg-cpu"}) == "U-Net++ · ST(Seg) · cpu"
    assert reader.run_title({**cfg, "backbone": "nnunet-planned", "task": "cls", "profile": "steady",
                           "run_name": "nnunet-planned-st-cls-do-steady-epochs24"}) == \
        f"{networks.BACKBONES['nnunet-planned'].title} · ST(Cls)+DO · steady · epochs 24"
    # what else the run name says, in words; a suffix it cannot parse stays readable
    name = "unetplusplus-mt-do-cpu-curationkeep-one-splitscan-ds0"
    assert reader.run_title({**cfg, "profile": "cpu", "run_name": name}) == \
        "U-Net++ · MT+DO · cpu · curation keep-one, split scan, deep supervision 0"
    assert reader.run_title({**cfg, "run_name": "unetplusplus-mt-do-fast-epochs3-batchsize4"}) == \
        "U-Net++ · MT+DO · fast · epochs 3, batch size 4"
    assert reader.run_title({**cfg, "run_name": "unetplusplus-mt-do-fast-by-hand"}) == \
        "U-Net++ · MT+DO · fast · by hand"
