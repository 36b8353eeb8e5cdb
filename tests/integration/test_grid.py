"""The grid runner end to end: papermill once per setting, locally and through a Dask cluster
on loopback, a setting held by another process, a grid that fails midway."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mtbc_lib.engine import batched
from mtbc_lib.engine.config import TrainConfig
from mtbc_lib.studies import ablation, grid

# Four test images per fold: a benign, a malignant and two normal ones.


@pytest.mark.slow
def test_grid_through_a_dask_cluster_on_loopback(tmp_path, make_busi):
    """Three tiny settings (1 epoch per fold, generated images) executed by papermill on the
    workers of a LocalCluster bound to 127.0.0.1; their rows land in ablation.csv, and the
    results chapter executes on them."""
    from dask.distributed import LocalCluster

    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4, "image_size": 64}
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        done = grid.run_grid("unet-r34", "fast", settings=["st-seg", "st-cls", "mt"], scheduler=cluster.scheduler_address,
                                 out_dir=tmp_path / "results", notebook_dir=tmp_path / "runs",
                                 data_dir=str(data), extra=extra)
    names = ["unet-r34-mt-fast", "unet-r34-st-cls-fast", "unet-r34-st-seg-fast"]
    assert sorted(done) == names
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [n + ".ipynb" for n in names]
    table = pd.read_csv(tmp_path / "results" / "ablation.csv")
    assert table["configuration"].tolist() == ["ST(Seg)", "ST(Cls)", "ST(Seg+Cls)+PR", "MT", "MT+PR"]
    assert table[["dsc_avg", "acc"]].iloc[2].between(0, 1).all()
    # the results chapter executes on this partial grid, predictions figure included
    import papermill

    from mtbc_lib.core import REPO_ROOT

    out = papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "results.ipynb"), str(tmp_path / "results.ipynb"),
                                     parameters={"results_dir": str(tmp_path / "results"), "grids": "unet-r34/fast",
                                                 "data_dir": str(data)}, progress_bar=False, kernel_name="python3")
    outputs = [o for c in out["cells"] for o in c.get("outputs", [])]
    text = json.dumps(outputs)
    assert "5 of 10 configurations finished" in text and "not run yet" not in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # confusion, Dice, predictions
    # complete settings are skipped on the next call
    assert grid.run_grid("unet-r34", "fast", settings=["st-seg", "st-cls", "mt"], out_dir=tmp_path / "results",
                             notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra) == []


@pytest.mark.slow
def test_grid_skips_a_setting_another_process_holds(tmp_path, make_busi, capsys):
    """A fold held by another process (here: another machine's lock, which is always
    respected) makes the grid skip that setting with one line, not stop; the next runs."""
    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4, "image_size": 64}
    held = tmp_path / "results" / "unet-r34-st-cls-fast"
    held.mkdir(parents=True)
    (held / ".fold0.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "1", "since": "noon"}))
    done = grid.run_grid("unet-r34", "fast", settings=["st-cls", "st-seg"], out_dir=tmp_path / "results",
                         notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra)
    assert done == ["unet-r34-st-seg-fast"]
    assert "grid: skipped unet-r34-st-cls-fast:" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["unet-r34-st-seg-fast.ipynb"]  # no partial copy
    assert (held / ".fold0.lock").exists() and not ablation.is_complete(held)


@pytest.mark.slow
def test_a_grid_that_fails_midway_keeps_the_rows_it_finished(tmp_path, make_busi):
    """ablation.csv is rewritten after each setting: the second setting's folder holds
    results of another configuration, so it fails at once, and the first one's rows stay."""
    from papermill import PapermillExecutionError


    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4, "image_size": 64}
    other = tmp_path / "results" / "unet-r34-st-cls-fast"
    other.mkdir(parents=True)
    cfg = TrainConfig(backbone="unet-r34", task="cls", profile="fast", seed=7, **extra).resolve()
    (other / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    with pytest.raises(PapermillExecutionError, match="different configuration"):
        grid.run_grid("unet-r34", "fast", settings=["st-seg", "st-cls"], out_dir=tmp_path / "results",
                      notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra)
    table = pd.read_csv(tmp_path / "results" / "ablation.csv")
    assert table["configuration"].tolist() == ["ST(Seg)"]


@pytest.mark.slow
def test_a_batched_grid_trains_every_setting_together_then_writes_the_pages(tmp_path, make_busi):
    """``engine="batched"`` (the default on a CUDA GPU; here on the CPU): the trainings of the
    settings run in the batched engine, then each setting's notebook finds its folds finished
    and only writes the page."""
    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "num_threads": 1}
    done = grid.run_grid("unetplusplus", "replica", settings=["st-cls", "mt-do"], out_dir=tmp_path / "results",
                         notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra, engine="batched")
    names = ["unetplusplus-mt-do-replica", "unetplusplus-st-cls-replica"]  # a grid's names: no extra in them
    assert sorted(done) == names
    for name in names:
        metrics = json.loads((tmp_path / "results" / name / "fold0_metrics.json").read_text())
        assert metrics["engine"]["name"] == batched.ENGINE and metrics["epochs"] == 1
        page = json.loads((tmp_path / "runs" / f"{name}.ipynb").read_text())
        assert "finished earlier" in json.dumps(page)  # the notebook trained nothing
    with pytest.raises(ValueError, match="parameter engine='fast': expected one of auto, serial, batched"):
        grid.run_grid("unetplusplus", "replica", engine="fast")
