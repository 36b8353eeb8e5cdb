"""Tests of mtbc_lib.studies.grid without papermill's kernels: the default data folder stored
as "", ``train_setting``'s one-line refusals before anything is written and where it sends
the executed notebook, ``execute_setting``'s parameters and its skip of a held run,
``execute_training``'s atomic copy, and ``run_grid``'s choice of settings (papermill
itself: tests/integration/test_grid.py)."""

from __future__ import annotations

import json

import nbformat
import pytest
from papermill import PapermillExecutionError

from mtbc_lib import provenance
from mtbc_lib.studies import ablation, grid


@pytest.fixture
def executed(monkeypatch):
    """Replace execute_training by a recorder: the list of its calls (params, notebook_dir,
    repo_root); returns the run name."""
    calls = []

    def record(params, notebook_dir="book/runs", repo_root=None):
        calls.append((params, notebook_dir, repo_root))
        return params["run_name"]

    monkeypatch.setattr(grid, "execute_training", record)
    return calls


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_the_grid_stores_the_default_data_folder_as_empty(tmp_path):
    repo = tmp_path / "repo"
    (tmp_path / "shared" / "data" / "BUSI").mkdir(parents=True)
    assert grid.portable_data_dir(tmp_path / "shared" / "data" / "BUSI", repo) == ""
    assert grid.portable_data_dir(str(repo / ".." / "shared" / "data" / "BUSI"), repo) == ""
    assert grid.portable_data_dir(tmp_path / "elsewhere", repo) == str(tmp_path / "elsewhere")
    assert grid.portable_data_dir(None, repo) == "" and grid.portable_data_dir("", repo) == ""


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="valid: st-seg"):
        grid.run_grid("unet-r34", "fast", settings=["st-sge"], out_dir=tmp_path)


# ----------------------------------------------------------------------------- train_setting

@pytest.mark.parametrize("params, message", [
    ({"epochz": 3}, r"^unknown parameter\(s\) epochz; valid: backbone, task, oversampling,"),
    ({"task": "segm"}, r"^parameter task='segm': expected one of seg, cls, mt$"),
    ({"epochs": 0}, r"^parameter epochs=0: expected a positive integer$"),
    ({"folds": [4]}, r"^parameter folds=\[4\]: expected a list of fold numbers in 0..3"),
    ({"lr": "1e-3"}, r"^parameter lr='1e-3': expected a float or None$"),
    ({"width": 0.5, "backbone": "unet-r34"}, r"only the paper's networks scale their widths"),
])
def test_train_setting_refuses_bad_parameters_in_one_line_before_anything_is_written(
        tmp_path, monkeypatch, executed, params, message):
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    with pytest.raises(ValueError, match=message) as exc:
        grid.train_setting({"out_dir": str(tmp_path / "results"), **params}, repo_root=repo)
    assert "\n" not in str(exc.value)
    assert executed == [] and _files(tmp_path) == []


def test_train_setting_sends_the_notebook_to_book_runs_only_for_a_whole_default_run(executed, tmp_path):
    base = {"backbone": "nnunet", "task": "seg", "oversampling": True, "profile": "fast"}
    assert grid.train_setting(base, repo_root=tmp_path) == "nnunet-st-seg-do-fast"
    params, notebook_dir, repo = executed[-1]
    assert notebook_dir == "book/runs" and repo == tmp_path
    assert params == {**base, "data_dir": "", "run_name": "nnunet-st-seg-do-fast"}  # as given, plus these
    # some folds, or another results folder: the notebook goes beside the run's results
    assert grid.train_setting({**base, "folds": [1]}, repo_root=tmp_path) == "nnunet-st-seg-do-fast"
    assert executed[-1][1] == "results"
    grid.train_setting({**base, "out_dir": "results/leakage", "epochs": 3}, repo_root=tmp_path)
    params, notebook_dir, _ = executed[-1]
    assert notebook_dir == "results/leakage" and params["run_name"] == "nnunet-st-seg-do-fast-epochs3"
    # the default data folder is stored as "", any other as given
    default = grid.REPO_ROOT.parent / "shared" / "data" / "BUSI"
    grid.train_setting({**base, "data_dir": str(default)}, repo_root=tmp_path)
    assert executed[-1][0]["data_dir"] == ""
    grid.train_setting({**base, "data_dir": str(tmp_path / "BUSI")}, repo_root=tmp_path)
    assert executed[-1][0]["data_dir"] == str(tmp_path / "BUSI")
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------- execute_setting

def test_execute_setting_passes_the_setting_and_the_extra_parameters(executed):
    name = grid.execute_setting("unet-r34", "st-cls-do", "fast", out_dir="runs_out", notebook_dir="nb",
                                extra={"epochs": 1, "curation": "none"}, repo_root="/repo")
    assert name == ablation.run_name("unet-r34", "st-cls-do", "fast") == "unet-r34-st-cls-do-fast"
    params, notebook_dir, repo = executed[0]
    assert params == {"backbone": "unet-r34", "profile": "fast", "out_dir": "runs_out", "run_name": name,
                      "data_dir": "", "task": "cls", "oversampling": True, "epochs": 1, "curation": "none"}
    assert (notebook_dir, repo) == ("nb", "/repo")


def _failing(ename):
    def fail(params, notebook_dir, repo_root):
        raise PapermillExecutionError(3, 1, "train(cfg)", ename, f"{ename} in fold 0", [])
    return fail


def test_execute_setting_skips_a_held_run_in_one_line_and_raises_other_errors(monkeypatch, capsys):
    monkeypatch.setattr(grid, "execute_training", _failing("RunHeld"))
    assert grid.execute_setting("unet-r34", "mt", "fast") is None
    assert capsys.readouterr().out == "grid: skipped unet-r34-mt-fast: RunHeld in fold 0\n"
    monkeypatch.setattr(grid, "execute_training", _failing("RuntimeError"))
    with pytest.raises(PapermillExecutionError) as exc:
        grid.execute_setting("unet-r34", "mt", "fast")
    assert exc.value.ename == "RuntimeError" and capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- execute_training

def _papermill(monkeypatch, error: str | None = None):
    """papermill.execute_notebook writing an executed notebook (with papermill's metadata)
    to its output path, then raising PapermillExecutionError ``error`` if given."""
    import papermill

    calls = []

    def execute_notebook(template, output, parameters, cwd, **kw):
        calls.append((template, output, parameters, cwd))
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# run")])
        nb.metadata["papermill"] = {"parameters": parameters}
        nbformat.write(nb, output)
        if error:
            raise PapermillExecutionError(2, 1, "train(cfg)", error, "stopped", [])

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    monkeypatch.setattr(provenance, "environment", lambda: {"machine": "test"})
    return calls


def test_execute_training_writes_the_stamped_notebook_atomically(tmp_path, monkeypatch):
    calls = _papermill(monkeypatch)
    params = {"run_name": "unet-r34-mt-fast", "epochs": 1}
    assert grid.execute_training(params, "book/runs", repo_root=tmp_path) == "unet-r34-mt-fast"
    template, output, parameters, cwd = calls[0]
    assert template == str(tmp_path / "notebooks" / "train.ipynb") and cwd == str(tmp_path)
    assert parameters == params and output.endswith(".part")
    assert _files(tmp_path) == ["book", "book/runs", "book/runs/unet-r34-mt-fast.ipynb"]
    nb = json.loads((tmp_path / "book" / "runs" / "unet-r34-mt-fast.ipynb").read_text())
    assert nb["metadata"]["mtbc"]["environment"] == {"machine": "test"}
    # an absolute notebook folder is used as it is
    grid.execute_training(params, tmp_path / "elsewhere", repo_root=tmp_path / "repo")
    assert (tmp_path / "elsewhere" / "unet-r34-mt-fast.ipynb").is_file()


def test_a_failed_execution_keeps_the_previous_notebook(tmp_path, monkeypatch):
    runs = tmp_path / "book" / "runs"
    runs.mkdir(parents=True)
    (runs / "unet-r34-mt-fast.ipynb").write_text("previous")
    _papermill(monkeypatch, error="RunHeld")
    with pytest.raises(PapermillExecutionError):
        grid.execute_training({"run_name": "unet-r34-mt-fast"}, repo_root=tmp_path)
    assert _files(runs) == ["unet-r34-mt-fast.ipynb"]  # another process trains it: no copy of ours left
    assert (runs / "unet-r34-mt-fast.ipynb").read_text() == "previous"
    _papermill(monkeypatch, error="ValueError")
    with pytest.raises(PapermillExecutionError):
        grid.execute_training({"run_name": "unet-r34-mt-fast"}, repo_root=tmp_path)
    assert (runs / "unet-r34-mt-fast.ipynb").read_text() == "previous"
    assert len(list(runs.glob(".unet-r34-mt-fast.*.ipynb.part"))) == 1  # a failed training stays to be read


# ----------------------------------------------------------------------------- run_grid

def test_run_grid_trains_the_unfinished_settings_in_order_and_writes_the_table(tmp_path, monkeypatch):
    calls = []

    def execute_setting(backbone, setting, profile, **kwargs):
        calls.append((backbone, setting, profile, kwargs))
        return None if setting == "st-cls" else ablation.run_name(backbone, setting, profile)  # st-cls: held

    monkeypatch.setattr(grid, "execute_setting", execute_setting)
    out = tmp_path / "results"
    (out / "unet-r34-mt-fast").mkdir(parents=True)
    (out / "unet-r34-mt-fast" / "summary.json").write_text("{}")  # complete: skipped
    done = grid.run_grid("unet-r34", "fast", settings=["st-seg", "mt", "st-cls"], out_dir=out,
                         notebook_dir=tmp_path / "nb", data_dir=str(tmp_path / "BUSI"), extra={"epochs": 1})
    assert done == ["unet-r34-st-seg-fast"]
    assert [c[1] for c in calls] == ["st-seg", "st-cls"]
    assert calls[0][3] == {"out_dir": str(out), "notebook_dir": str(tmp_path / "nb"),
                           "data_dir": str(tmp_path / "BUSI"), "extra": {"epochs": 1}}
    assert (out / "ablation.csv").is_file()


def test_run_grid_refuses_an_unknown_backbone_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "execute_setting", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="parameter backbone='unet-r35'"):
        grid.run_grid("unet-r35", "fast", out_dir=tmp_path / "results")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['mt-dO'\]"):
        grid.run_grid("unet-r34", "fast", settings=["mt", "mt-dO"], out_dir=tmp_path / "results")
    assert _files(tmp_path) == []
