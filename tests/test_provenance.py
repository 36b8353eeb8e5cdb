"""mtbc_lib.provenance on notebooks really executed by papermill (tiny ones)."""

from __future__ import annotations

import os
from datetime import timezone
from importlib import metadata

import nbformat
import pytest

from mtbc_lib import provenance

papermill = pytest.importorskip("papermill")


def _template(path, body: str):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Tiny run\n\nUsed by the provenance tests."),
        nbformat.v4.new_code_cell("n: int = 1  # a number", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def book_dir(tmp_path_factory):
    """A book folder holding one completed run (runs/ok.ipynb), one failed run
    (failed.ipynb), one notebook papermill never ran (plain.ipynb), and files that
    are not stored notebooks (_build/, .ipynb_checkpoints/)."""
    root = tmp_path_factory.mktemp("book")
    (root / "runs").mkdir()
    src = root.parent / "src"
    src.mkdir(exist_ok=True)
    papermill.execute_notebook(str(_template(src / "ok.ipynb", "total = sum(range(n))\nprint(total)")),
                               str(root / "runs" / "ok.ipynb"), parameters={"n": 3},
                               kernel_name="python3", progress_bar=False)
    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(str(_template(src / "bad.ipynb", "raise RuntimeError('boom')")),
                                   str(root / "failed.ipynb"), kernel_name="python3", progress_bar=False)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Plain")]),
                   root / "plain.ipynb")
    for skipped in ("_build/html/x.ipynb", ".ipynb_checkpoints/ok-checkpoint.ipynb"):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_text((root / "plain.ipynb").read_text())
    return root


def test_stored_notebooks_skips_build_output_and_checkpoints(book_dir):
    found = [p.relative_to(book_dir).as_posix() for p in provenance.stored_notebooks(book_dir)]
    assert found == ["failed.ipynb", "plain.ipynb", "runs/ok.ipynb"]


def test_stored_notebooks_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        provenance.stored_notebooks(tmp_path / "nowhere")


def test_read_run_of_a_completed_papermill_run(book_dir):
    run = provenance.read_run(book_dir / "runs" / "ok.ipynb", book_dir)
    assert run.path == "runs/ok.ipynb" and run.title == "Tiny run"
    assert run.status == "completed"
    assert run.parameters == {"n": 3}
    assert run.started.tzinfo is not None and run.started.astimezone(timezone.utc) <= run.finished
    assert 0 < run.duration_s < 600
    # parameters, injected parameters, body: every code cell timed
    assert len(run.cell_durations_s) == 3 and sum(run.cell_durations_s) <= run.duration_s
    assert run.kernel_python.startswith("3.")
    assert run.environment is None  # not stamped yet


def test_read_run_reports_failures_and_unexecuted_notebooks(book_dir):
    assert provenance.read_run(book_dir / "failed.ipynb", book_dir).status == "failed"
    plain = provenance.read_run(book_dir / "plain.ipynb", book_dir)
    assert plain.status == "not run by papermill" and plain.duration_s is None


def test_read_run_names_a_broken_file(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    with pytest.raises(ValueError, match="broken.ipynb"):
        provenance.read_run(broken, tmp_path)


def test_stamp_records_this_machine_and_keeps_the_outputs(book_dir, tmp_path):
    target = tmp_path / "ok.ipynb"
    target.write_bytes((book_dir / "runs" / "ok.ipynb").read_bytes())
    before = nbformat.read(target, as_version=4)
    provenance.stamp(target)
    after = nbformat.read(target, as_version=4)
    env = after.metadata["mtbc"]["environment"]
    assert env["hardware"]["cores"] == len(os.sched_getaffinity(0))
    assert env["hardware"]["memory_gib"] > 0
    assert env["packages"]["plotly"] == metadata.version("plotly")
    assert after.cells == before.cells and after.metadata["papermill"] == before.metadata["papermill"]
    assert not list(tmp_path.glob(".ok.*"))  # no temporary file left behind
    run = provenance.read_run(target, tmp_path)
    assert run.environment == env
    assert "cores" in provenance.describe_hardware(run.environment["hardware"])


def test_stamp_refuses_a_notebook_papermill_did_not_run(book_dir, tmp_path):
    target = tmp_path / "plain.ipynb"
    target.write_bytes((book_dir / "plain.ipynb").read_bytes())
    with pytest.raises(ValueError, match="plain.ipynb.*papermill"):
        provenance.stamp(target)


def test_runs_table_has_one_row_per_stored_notebook(book_dir):
    table = provenance.runs_table(book_dir)
    assert list(table["notebook"]) == ["failed.ipynb", "plain.ipynb", "runs/ok.ipynb"]
    assert list(table["status"]) == ["failed", "not run by papermill", "completed"]
    ok = table.set_index("notebook").loc["runs/ok.ipynb"]
    assert ok["duration"] == provenance.format_duration(ok["duration_s"])
    assert ok["hardware"] == "not recorded"
    assert ok["training"] == "–"  # no training run
    machines = provenance.hardware_table(table)
    assert list(machines.columns) == ["hardware", "notebooks"]
    assert machines.loc[0, "notebooks"] == "failed.ipynb, plain.ipynb, runs/ok.ipynb"


def test_training_time_is_the_runs_not_the_notebooks(tmp_path):
    import json

    run = tmp_path / "results" / "leakage" / "tiny-run"
    run.mkdir(parents=True)
    for k, seconds in ((0, 3000.0), (1, 600.0)):
        (run / f"fold{k}_metrics.json").write_text(json.dumps({"fold": k, "train_seconds": seconds}))
    params = {"task": "mt", "out_dir": "results/leakage", "run_name": "tiny-run"}
    assert provenance.training_seconds(params, "page", tmp_path) == 3600.0
    assert provenance.training_seconds({"task": "mt"}, "tiny-run", tmp_path) is None  # not under results/
    assert provenance.training_seconds({"n": 3}, "tiny-run", tmp_path) is None  # no training notebook
    book = tmp_path / "book"
    (book / "runs").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Run")])
    nb.metadata["papermill"] = {"parameters": params, "start_time": "2026-01-01T10:00:00", "duration": 12.0,
                                "end_time": "2026-01-01T10:00:12", "exception": None}
    nbformat.write(nb, book / "runs" / "tiny-run.ipynb")
    row = provenance.runs_table(book).iloc[0]  # the repository is the folder above book/
    assert (row["duration"], row["training"], row["training_s"]) == ("12.0 s", "1 h 00 min", 3600.0)


def test_packages_table_compares_runs_with_the_build(book_dir, tmp_path):
    table = provenance.packages_table(book_dir).set_index("package")
    assert table.loc["plotly", "book build"] == metadata.version("plotly")
    assert table.loc["plotly", "notebook runs"] == "not recorded"
    stamped = tmp_path / "book"
    stamped.mkdir()
    (stamped / "ok.ipynb").write_bytes((book_dir / "runs" / "ok.ipynb").read_bytes())
    env = provenance.environment()
    env["packages"]["plotly"] = "0.0.1"  # as if that run had used an older plotly
    provenance.stamp(stamped / "ok.ipynb", env)
    table = provenance.packages_table(stamped).set_index("package")
    assert table.loc["plotly", "notebook runs"] == "0.0.1"
    assert table.loc["plotly", "book build"] == metadata.version("plotly")


@pytest.mark.parametrize("seconds, text", [(None, "–"), (4.24, "4.2 s"), (185, "3 min 05 s"),
                                           (3725, "1 h 02 min"), (59.96, "1 min 00 s")])
def test_format_duration(seconds, text):
    assert provenance.format_duration(seconds) == text


def test_markdown_table_escapes_cells():
    import pandas as pd

    text = provenance.markdown_table(pd.DataFrame({"a": ["x|y", None], "b": ["two\nlines", 1.5]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | two lines |", "| – | 1.5 |"]


def test_command_line_stamp_and_show(book_dir, tmp_path, capsys):
    from mtbc_lib.cli import main

    target = tmp_path / "ok.ipynb"
    target.write_bytes((book_dir / "runs" / "ok.ipynb").read_bytes())
    assert main(["stamp", str(target)]) == 0
    assert "environment" in nbformat.read(target, as_version=4).metadata["mtbc"]
    assert main(["provenance", str(book_dir)]) == 0
    out = capsys.readouterr().out
    assert "runs/ok.ipynb" in out and "completed" in out
    assert main(["stamp", str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb" in capsys.readouterr().err
