"""notebooks/train.ipynb: its structure, parameter validation through papermill, and a
papermill smoke run on a few real images (one epoch)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time

import nbformat
import pytest

from mtbc_lib.core import REPO_ROOT
from mtbc_lib.engine import config

NOTEBOOK = REPO_ROOT / "notebooks" / "train.ipynb"


def _parameters_cell(nb):
    return nb.cells[1]


def test_notebook_structure_and_declared_parameters():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    params = _parameters_cell(nb)
    assert params.cell_type == "code" and "parameters" in params.metadata.get("tags", [])
    declared = {}
    for line in params.source.splitlines():
        assert "  # " in line, f"parameter line without a comment: {line!r}"
        stmt = ast.parse(line).body[0]
        assert isinstance(stmt, ast.AnnAssign), f"parameter line without a type: {line!r}"
        declared[stmt.target.id] = ast.literal_eval(stmt.value)  # literals only
    fields = config.TrainConfig.__dataclass_fields__
    assert set(declared) <= set(fields)
    for name, value in declared.items():
        default = fields[name].default
        assert value == default or (name == "folds" and value == [] and default is None), name
    for name in ("backbone", "task", "oversampling", "lam", "epochs", "patience", "batch_size", "lr",
                 "image_size", "folds", "seed", "curation", "data_dir", "out_dir", "device", "profile",
                 "limit", "run_name"):
        assert name in declared
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None  # committed clean
            tree = ast.parse(cell.source)
            assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(tree))
            if "show_plotly" in cell.source or "prediction_examples" in cell.source:
                assert "hide-input" in cell.metadata.get("tags", [])
            assert "fig.show()" not in cell.source


def test_profiles_are_shown_from_the_code_not_typed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "runs.profiles_table()" in c.source]
    assert len(cells) == 1 and "hide-input" in cells[0].metadata.get("tags", [])
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "| batch size |" not in text  # no typed copy of the table to go stale
    prose = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("**`paper`**")]
    assert len(prose) == 1
    typed = re.findall(r"(?<!\w)\d\S*", prose[0].replace("et al., 2025", ""))  # not bf16
    assert not typed, f"numbers typed into the profiles' prose (the table above shows them): {typed}"


def _papermill(tmp_path, *args, timeout=300):
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb"),
           "--cwd", str(REPO_ROOT), "-p", "out_dir", str(tmp_path / "results"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["-p", "bogus", "1"], "ValueError: unknown parameter bogus; valid: backbone, task, oversampling,"),
    (["-p", "task", "segm"], "ValueError: parameter task='segm': expected one of seg, cls, mt"),
])
def test_unknown_parameter_fails_the_run_at_once(tmp_path, args, message):
    proc = _papermill(tmp_path, *args)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if message in ln]
    assert lines, out[-2000:]
    assert "valid:" not in message or lines[0].rstrip().endswith("stop_after_epochs")  # the whole list, one line
    assert not (tmp_path / "results").exists()  # nothing was done


@pytest.mark.data
def test_papermill_smoke_run_on_real_images(tmp_path, data_dir):
    import papermill

    out = tmp_path / "train.ipynb"
    t0 = time.perf_counter()
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(REPO_ROOT), kernel_name="python3", progress_bar=False,
        parameters=dict(limit=5, epochs=1, folds=[0], oversampling=True, profile="fast", num_threads=1,
                        data_dir=str(data_dir), out_dir=str(tmp_path / "results"), run_name="smoke"))
    seconds = time.perf_counter() - t0
    run_dir = tmp_path / "results" / "smoke"
    for name in ("config.json", "fold0_test.csv", "fold0_metrics.json", "fold0_history.csv", "fold0_masks.npz"):
        assert (run_dir / name).is_file(), name
    assert (tmp_path / "checkpoints" / "smoke" / "fold0.best.pt").is_file()
    metrics = json.loads((run_dir / "fold0_metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["config"]["limit"] == 5 and metrics["n_test"] >= 3
    nb = nbformat.read(out, as_version=4)
    mimes = [m for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) for m in o.get("data", {})]
    assert "text/html" in mimes and "image/png" in mimes and "application/vnd.plotly.v1+json" in mimes
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "fold 0: 1 epoch (max epochs)" in text and "dsc_avg" in text and "train (DO)" in text
    print(f"papermill smoke run: {seconds:.0f} s")
