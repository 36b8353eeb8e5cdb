"""Tests of mtbc_lib.engine.runs: holding a fold against a second process, stale holds taken
over, the profiles in words, the reproduce command."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import holder

from mtbc_lib.engine import runs
from mtbc_lib.engine.config import TrainConfig


def test_a_live_holder_stops_a_second_process_at_once_and_a_killed_one_is_taken_over(tmp_path):
    lock = tmp_path / ".fold0.lock"
    proc = holder(lock)
    try:
        with pytest.raises(runs.RunHeld) as e:
            with runs.hold(lock, "test run fold 0"):
                pytest.fail("entered a held fold")
        msg = str(e.value)
        assert "\n" not in msg and f"held by process {proc.pid}" in msg and "test run fold 0" in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock.exists()  # a killed process leaves its lock behind: stale
    with runs.hold(lock, "test run fold 0"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # released at the end


def test_a_lock_whose_pid_was_reused_or_is_half_written_is_stale(tmp_path):
    lock = tmp_path / ".fold1.lock"
    import socket

    # our own pid, but another start time: the process that wrote it is gone, the pid reused
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": "0", "since": "then"}))
    with runs.hold(lock, "x"):
        pass
    lock.write_text("{\"host\": ")  # killed while writing
    with runs.hold(lock, "x"):
        pass
    # another machine's holder cannot be checked: it is respected
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "1", "since": "then"}))
    with pytest.raises(runs.RunHeld, match="held by process 1 on elsewhere"):
        with runs.hold(lock, "x"):
            pass


def test_the_lock_is_released_when_the_block_fails(tmp_path):
    lock = tmp_path / ".fold2.lock"
    with pytest.raises(ZeroDivisionError):
        with runs.hold(lock, "x"):
            1 / 0
    assert not lock.exists()


def test_profiles_table_is_the_profiles_in_words():
    from mtbc_lib.engine.config import PROFILES

    t = runs.profiles_table()
    assert list(t.columns) == list(PROFILES)
    for name, p in PROFILES.items():
        assert t.loc["maximum epochs", name] == str(p["epochs"]) and t.loc["batch size", name] == str(p["batch_size"])
        assert (t.loc["weight averaging", name] == "none") == (not p["ema"])
        assert t.loc["optimiser", name].startswith("AdamW" if p["optimizer"] == "adamw" else "Adam")
    assert t.loc["learning rate", "cpu"] == "3e-4" and "cosine to 1e-6" in t.loc["learning-rate schedule", "cpu"]


def test_describe_shows_paths_inside_the_repository_relative_to_it(tmp_path):
    shown = runs.describe(TrainConfig(backbone="unet-r34", task="seg", profile="fast"))["value"]
    assert shown["→ results"] == "results/unet-r34-st-seg-fast"
    outside = runs.describe(TrainConfig(backbone="unet-r34", task="seg", profile="fast", out_dir=str(tmp_path)))["value"]
    assert outside["→ results"] == str(tmp_path / "unet-r34-st-seg-fast")


@pytest.mark.parametrize("fields", [
    {"backbone": "unetplusplus", "task": "mt", "oversampling": True, "profile": "cpu"},
    {"backbone": "unetplusplus-r34", "task": "mt", "profile": "cpu", "curation": "none", "split": "scan"},
    {"backbone": "unetplusplus", "task": "seg", "profile": "steady", "epochs": 3, "lr": 3e-4, "amp": "off",
     "schedule": "cosine", "grad_clip": 1.0, "out_dir": "results/recipe", "run_name": "my-name"},
    {"backbone": "unetplusplus", "task": "mt", "oversampling": True, "profile": "cpu", "epochs": 14,
     "folds": [0], "out_dir": "results/probes"},  # a probe: which folds it trained matters
    {"backbone": "nnunet", "task": "cls", "profile": "fast", "folds": [0, 2]},
])
def test_the_reproduce_command_parsed_as_papermill_does_gives_the_same_run(fields):
    from papermill.cli import _resolve_type  # papermill's own reading of `-p NAME VALUE`

    cfg = TrainConfig(**fields).resolve()
    words = runs.reproduce_command(cfg).replace(" \\\n", " ").split()
    beside = "folds" in fields or "out_dir" in fields  # a probe's or another folder's: beside its results
    page = f"{cfg.out_dir}/{cfg.run_name}.ipynb" if beside else f"book/runs/{cfg.run_name}.ipynb"
    assert words[:4] == ["papermill", "notebooks/train.ipynb", page, "-p"]
    params = {words[k + 1]: _resolve_type(words[k + 2]) for k in range(3, len(words), 3)}
    again = TrainConfig(**params).resolve()
    assert again.to_dict() == cfg.to_dict()
    assert ("run_name" in params) == ("run_name" in fields)
    assert ("folds" in params) == ("folds" in fields)


def test_a_probe_trained_a_fold_at_a_time_is_reproduced_with_all_its_finished_folds(tmp_path):
    """config.json keeps the folds of a run's first call; the command that trains the run
    again names every fold whose results are there."""
    cfg = TrainConfig(backbone="unetplusplus", task="mt", oversampling=True, profile="cpu", epochs=14,
                      folds=[0], out_dir=str(tmp_path)).resolve()
    run_dir = tmp_path / cfg.run_name
    run_dir.mkdir()
    runs.write_json(run_dir / "config.json", {"config": cfg.to_dict()})
    for k in (0, 1):
        (run_dir / f"fold{k}_metrics.json").write_text("{}")
    assert runs.read_config(run_dir).folds == [0]
    assert runs.read_config(run_dir, finished_folds=True).folds == [0, 1]
    assert "-p folds 0,1" in runs.reproduce_command(runs.read_config(run_dir, finished_folds=True))
    for k in (2, 3):  # all folds done: still a probe, its notebook beside its results, not a book page
        (run_dir / f"fold{k}_metrics.json").write_text("{}")
    command = runs.reproduce_command(runs.read_config(run_dir, finished_folds=True))
    assert "-p folds" not in command and command.startswith(f"papermill notebooks/train.ipynb {tmp_path}/")


def test_fold_files_are_keyed_and_ordered_by_fold_number(tmp_path):
    for k in (10, 2, 0):
        (tmp_path / f"fold{k}_test.csv").write_text("class,id\n")
    (tmp_path / "fold1_history.csv").write_text("epoch\n")
    assert runs.fold_files(tmp_path, "test.csv") == {k: tmp_path / f"fold{k}_test.csv" for k in (0, 2, 10)}
    assert list(runs.fold_files(tmp_path, "test.csv")) == [0, 2, 10]  # fold 10 after fold 2
    assert runs.fold_files(tmp_path, "history.csv") == {1: tmp_path / "fold1_history.csv"}
    assert runs.fold_files(tmp_path / "missing", "test.csv") == {}
