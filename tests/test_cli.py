"""Tests of the ``mtbc`` command (mtbc_lib.cli), run as a subprocess
(``mtbc``) on a tiny generated folder and on bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from mtbc_lib import cli, dedup
from mtbc_lib.data.busi import read_keep_list


def _mtbc(*args, tmp_path):
    env = dict(os.environ, MTBC_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "mtbc_lib", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def busi(synthetic_busi):
    return synthetic_busi


def test_audit_writes_duplicates_and_keep_list(busi, tmp_path):
    out = tmp_path / "audit"
    run = _mtbc("audit", busi, "--out", out, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "2 groups (1 quadruplets, 1 duplets) holding 6 images" in run.stdout
    assert "audit: decoding images" in run.stderr  # the tqdm bar
    dup = pd.read_csv(out / "duplicates.csv")
    assert list(dup.columns[:4]) == ["group", "class", "id", "file"]
    assert list(dup["group"]) == [1, 1, 1, 1, 2, 2] and dup["label_conflict"].tolist()[:4] == [True] * 4
    assert set(dup["file"]) >= {"benign/benign (2).png", "normal/normal (4).png"}
    keep = read_keep_list(out / "curated.csv")
    assert keep == {("benign", 3), ("malignant", 3), ("normal", 1), ("normal", 2)}  # rule "drop-all"
    assert (out / "curated.csv").read_bytes().count(b"\r\n") == 4
    assert sorted(p.name for p in out.iterdir()) == ["curated.csv", "duplicates.csv", "pairs.csv"]


def test_audit_keep_one_and_options(busi, tmp_path):
    out = tmp_path / "k1"
    run = _mtbc("audit", busi, "--out", out, "--curation", "keep-one", "--no-extended", "--quiet",
                "--workers", "1", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and "decoding" not in run.stderr
    # whole-image SSIM only: benign 1 and its rescaled copy malignant 1 (conflicting labels)
    assert read_keep_list(out / "curated.csv") == {
        (c, i) for c in ("benign", "malignant", "normal") for i in (1, 2, 3, 4)
        if (c, i) not in {("benign", 1), ("malignant", 1), ("benign", 4), ("malignant", 4)}}


@pytest.mark.parametrize("args, message", [
    (["audit", "{tmp}/missing", "--out", "{tmp}/o"], "does not exist"),
    (["audit", "{busi}", "--out", "{tmp}/o", "--threshold", "1.5"], "--threshold"),
    (["audit", "{busi}"], "required: --out"),
    (["audit", "{busi}", "--out", "{tmp}/o", "--curation", "all"], "invalid choice"),
    ([], "required: COMMAND"),
])
def test_bad_input_one_line_exit_2(busi, tmp_path, args, message):
    run = _mtbc(*[a.format(tmp=tmp_path, busi=busi) for a in args], tmp_path=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith("mtbc: error: ") and run.stderr.count("\n") == 1, run.stderr
    assert message in run.stderr
    assert not (tmp_path / "o").exists()


def test_corrupt_png_and_unwritable_output(busi, tmp_path):
    import shutil

    bad = tmp_path / "BUSI"
    shutil.copytree(busi, bad)
    (bad / "normal" / "normal (1)_mask.png").write_bytes(b"not a png")
    run = _mtbc("audit", bad, "--out", tmp_path / "o", "--quiet", tmp_path=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "normal (1)_mask.png: not a PNG file" in run.stderr
    (tmp_path / "file").write_text("x")
    run = _mtbc("audit", busi, "--out", tmp_path / "file", "--quiet", tmp_path=tmp_path)
    assert run.returncode == 2 and run.stderr.startswith("mtbc: error: ") and run.stderr.count("\n") == 1


def test_parser_has_every_workflow_step(tmp_path):
    parser = cli.build_parser()
    steps = ["audit", "train", "grid", "gpu", "recipe", "leakage", "claims", "book", "stamp", "provenance"]
    assert list(cli.SUBCOMMANDS) == steps
    shown = _mtbc("--help", tmp_path=tmp_path)
    assert shown.returncode == 0 and all(f"\n    {s}" in shown.stdout for s in steps)
    for s in steps:
        assert _mtbc(s, "--help", tmp_path=tmp_path).returncode == 0
    args = parser.parse_args(["audit", "x", "--out", "y"])
    assert args.threshold == dedup.DedupConfig().threshold and args.curation == "drop-all" and args.extended


def test_the_command_line_starts_without_the_training_code():
    """Building the parser (every `mtbc` call) imports neither torch nor MONAI: the audit
    starts in well under a second."""
    code = "import sys; from mtbc_lib import cli; cli.build_parser(); print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("args, message", [
    (["--backbone", "bogus", "--settings", "mt"], "parameter backbone='bogus': expected one of unetplusplus, nnunet,"),
    (["--settings", "mtx"], "unknown setting(s) ['mtx']; valid: st-seg, st-seg-do"),
])
def test_grid_refuses_unknown_names_in_one_line(tmp_path, args, message):
    run = _mtbc("grid", *args, "--out", tmp_path / "results", tmp_path=tmp_path)
    assert run.returncode == 2 and message in run.stderr and run.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, message", [
    (["--set", "epochz=3"], "unknown parameter(s) epochz; valid: backbone, task,"),
    (["--task", "segm"], "parameter task='segm': expected one of seg, cls, mt"),
    (["--set", "width=0.5", "--backbone", "unet-r34"], "only the paper's networks scale their widths"),
    (["--set", "epochs"], "'epochs' is not KEY=VALUE"),
])
def test_train_refuses_bad_parameters_in_one_line_before_anything_runs(tmp_path, args, message):
    run = _mtbc("train", *args, "--out", tmp_path / "results", tmp_path=tmp_path)
    assert run.returncode == 2 and message in run.stderr and run.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("grids, message", [
    (["unetplusplus", "cpu"], "grids: none of unetplusplus/cpu has its six trainings finished"),
    (["unetplusplus"], "expected pairs BACKBONE PROFILE"),
    (["nnunet", "slow"], "grids: 'nnunet/slow' is not backbone/profile"),
])
def test_claims_of_grids_without_runs_or_bad_names_say_so_in_one_line(tmp_path, grids, message):
    run = _mtbc("claims", *grids, "--results", tmp_path / "none", tmp_path=tmp_path)
    last = run.stderr.splitlines()[-1]  # after a note per grid skipped
    assert run.returncode == 2 and last.startswith("mtbc: error: ") and message in last
    assert not (tmp_path / "none").exists()
