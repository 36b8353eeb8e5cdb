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
    """The six settings of the paper's U-Net++ under the replica profile (1 epoch per fold,
    generated images) executed by papermill on the workers of a LocalCluster bound to
    127.0.0.1; their rows land in ablation.csv, the claims and the consistency measures are
    computed on them, and the results chapter executes on the grid."""
    from dask.distributed import LocalCluster

    from mtbc_lib.studies import claims, consistency

    data = make_busi(n_per_class=8)
    extra = {"curation": "none", "epochs": 1, "batch_size": 4}
    results = tmp_path / "results"
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        done = grid.run_grid("unetplusplus", "replica", scheduler=cluster.scheduler_address, out_dir=results,
                             notebook_dir=tmp_path / "runs", data_dir=str(data), extra=extra)
    names = sorted(f"unetplusplus-{s}-replica" for s in ablation.SETTINGS)
    assert sorted(done) == names
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [n + ".ipynb" for n in names]
    table = pd.read_csv(results / "ablation.csv")
    assert table["configuration"].tolist() == [r.configuration for r in ablation.ROWS]
    scores = pd.concat([table["dsc_avg"], table["acc"]]).dropna()  # a single-task row has one of the two
    assert len(scores) == 2 * len(table) - 4 and scores.between(0, 1).all()
    claims.write_claims_csv([("unetplusplus", "replica")], results)
    consistency.write_consistency_csv([("unetplusplus", "replica")], results)
    # the results chapter executes on this grid, predictions figure included
    import papermill

    from mtbc_lib.core import REPO_ROOT

    out = papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "results.ipynb"), str(tmp_path / "results.ipynb"),
                                     parameters={"results_dir": str(results), "grids": "unetplusplus/replica",
                                                 "data_dir": str(data)}, progress_bar=False, kernel_name="python3")
    outputs = [o for c in out["cells"] for o in c.get("outputs", [])]
    text = json.dumps(outputs)
    assert f"{len(ablation.ROWS)} of {len(ablation.ROWS)} configurations" in text and "not run yet" not in text
    assert "U-Net++, replica profile" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # confusion matrices, predictions
    html = ["".join(o.get("data", {}).get("text/html", "")) for o in outputs]
    assert sum("plotly-graph-div" in h for h in html) == 2  # the spread over folds, label against mask
    # complete settings are skipped on the next call
    assert grid.run_grid("unetplusplus", "replica", out_dir=results, notebook_dir=tmp_path / "runs",
                         data_dir=str(data), extra=extra) == []


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
