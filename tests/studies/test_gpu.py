"""Tests of mtbc_lib.studies.gpu (``mtbc gpu``): the exported arrays, a tiny batched run of the
U-Net++ grid and the leakage study through the same code path as on a GPU (here on the CPU),
the tars of finished runs, a second call that trains nothing, unpacking, and bad arguments."""

from __future__ import annotations

import shutil
import tarfile
import uuid

import numpy as np
import pytest
from helpers import write_noise_busi

from mtbc_lib import data, dedup
from mtbc_lib.cli import main
from mtbc_lib.core import REPO_ROOT
from mtbc_lib.studies import gpu


@pytest.fixture
def scratch(monkeypatch, tmp_path):
    """A results folder inside the repository (the tars carry repository paths), removed after."""
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))
    rel = f".cache/test-gpu-{uuid.uuid4().hex[:8]}"
    yield rel
    shutil.rmtree(REPO_ROOT / rel, ignore_errors=True)


def test_export_holds_the_raw_arrays_the_curated_flags_and_the_groups(synthetic_busi, tmp_path, monkeypatch):
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "busi_64.npz"
    assert main(["gpu", "--export", str(out), "--size", "64", "--data", str(synthetic_busi)]) == 0
    raw, curated, groups = gpu.load(out)
    want = data.load_busi(synthetic_busi, size=64, progress=False)
    np.testing.assert_array_equal(raw.images, want.images)
    np.testing.assert_array_equal(raw.masks, want.masks)
    published = data.read_keep_list(data.PUBLISHED_KEEP_LIST)
    assert raw.names == want.names and curated.tolist() == [k in published for k in raw.keys]
    assert groups == {k: g for k, g in dedup.audit_groups(synthetic_busi, "scan").items()}


@pytest.mark.slow
def test_a_tiny_batched_study_packs_its_runs_and_a_second_call_trains_nothing(tmp_path, scratch, capsys):
    arrays = tmp_path / "busi_64.npz"
    busi = write_noise_busi(tmp_path / "BUSI", n_per_class=6)
    assert main(["gpu", "--export", str(arrays), "--size", "64", "--data", str(busi)]) == 0
    out = tmp_path / "out"
    args = ["gpu", "--arrays", str(arrays), "--out", str(out), "--profile", "replica", "--epochs", "1",
            "--studies", "leakage", "--results", scratch, "--device", "cpu"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "== leakage: 2 of 2 runs to train" in first
    with tarfile.open(out / "leakage.tar") as t:
        names = t.getnames()
    assert {f"{scratch}/leakage/unetplusplus-mt-replica-curationnone-epochs1/fold{k}_metrics.json"
            for k in range(4)} <= set(names)
    shutil.rmtree(REPO_ROOT / scratch)
    assert main(args + ["--have", str(out)]) == 0  # the earlier call's runs come back from its tars
    assert "== leakage: 0 of 2 runs to train" in capsys.readouterr().out
    shutil.rmtree(REPO_ROOT / scratch)
    assert main(["gpu", "--unpack", str(out)]) == 0
    assert (REPO_ROOT / scratch / "leakage" / "unetplusplus-mt-replica-curationnone-epochs1" / "summary.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--arrays", "x.npz"], "training needs --arrays and --out"),
    (["--arrays", "x.npz", "--out", "o", "--studies", "resnet"], "expected --studies out of unetplusplus, nnunet, leakage"),
    (["--arrays", "x.npz", "--out", "o", "--results", "/tmp/r"], "--results /tmp/r: expected a folder inside the repository"),
    (["--arrays", "missing.npz", "--out", "o"], "--arrays missing.npz: no such file"),
    (["--unpack", "nothing-here"], "--unpack nothing-here: expected a .tar or a folder of them"),
    (["--bench", "--members", "0"], "--bench: expected --size a multiple of 32"),
])
def test_bad_arguments_fail_in_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["gpu", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtbc: error: ") and message in err and err.count("\n") == 1
