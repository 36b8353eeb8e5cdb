"""Training the ablation grid: ``notebooks/train.ipynb`` executed through papermill once per
setting (locally, or as tasks on a Dask cluster), skipping settings whose results are
complete, then ``results/ablation.csv`` rewritten (:mod:`mtbc_lib.studies.ablation`)."""

from __future__ import annotations

import os
from pathlib import Path

from mtbc_lib.core import REPO_ROOT
from mtbc_lib.engine.runs import repo_relative
from mtbc_lib.studies.ablation import SETTINGS, is_complete, run_name, write_ablation_csv

__all__ = ["execute_training", "execute_setting", "train_setting", "portable_data_dir", "run_grid"]


def execute_training(params: dict, notebook_dir: str | os.PathLike = "book/runs",
                     repo_root: str | os.PathLike = REPO_ROOT) -> str:
    """Execute ``notebooks/train.ipynb`` with papermill parameters.

    The executed notebook is written to ``notebook_dir/<run name>.ipynb`` atomically: a failed or
    interrupted run leaves the previous copy, and its checkpoints let the next call resume; a finished
    run is not trained again, only reported. The notebook is stamped with the machine it ran on. Runs
    in whatever process calls it: locally, or on a Dask worker.

    Args:
        params: the notebook's parameters (TrainConfig fields), ``run_name`` among them.
        notebook_dir: where the executed notebook goes (relative: to ``repo_root``).
        repo_root: the repository holding ``notebooks/train.ipynb`` (the notebook's working folder).

    Returns:
        The run name.

    Raises:
        PapermillExecutionError: the notebook failed (``ename`` ``"RunHeld"`` when another process
            holds one of the run's folds).
    """
    from mtbc_lib.provenance import execute_stamped

    name = params["run_name"]
    repo_root = Path(repo_root)
    nb_dir = Path(notebook_dir) if Path(notebook_dir).is_absolute() else repo_root / notebook_dir
    nb_dir.mkdir(parents=True, exist_ok=True)
    # a failed training keeps its .part for inspection, unless another process trains it (nothing of ours)
    execute_stamped(repo_root / "notebooks" / "train.ipynb", nb_dir / f"{name}.ipynb", params, repo_root,
                    keep_failed=lambda e: getattr(e, "ename", None) != "RunHeld")
    return name


def execute_setting(backbone: str, setting: str, profile: str, out_dir: str | os.PathLike = "results",
                    notebook_dir: str | os.PathLike = "book/runs", data_dir: str | None = None,
                    extra: dict | None = None, repo_root: str | os.PathLike = REPO_ROOT) -> str | None:
    """:func:`execute_training` of one setting of the grid.

    Args:
        backbone: a backbone name.
        setting: a setting of :data:`mtbc_lib.studies.ablation.SETTINGS`.
        profile: a training profile.
        out_dir: the results folder.
        notebook_dir: where the executed notebook goes.
        data_dir: the raw BUSI folder; None: the default.
        extra: further notebook parameters, overriding the setting's.
        repo_root: the repository root.

    Returns:
        The run name, or None when another process holds one of its folds (one line says which; the
        grid goes on).

    Raises:
        PapermillExecutionError: the notebook failed for any other reason.
    """
    from papermill import PapermillExecutionError

    params = {"backbone": backbone, "profile": profile, "out_dir": str(out_dir),
              "run_name": run_name(backbone, setting, profile), "data_dir": data_dir or ""}
    try:
        return execute_training(params | SETTINGS[setting] | (extra or {}), notebook_dir, repo_root)
    except PapermillExecutionError as e:
        if e.ename != "RunHeld":
            raise
        print(f"grid: skipped {params['run_name']}: {e.evalue}", flush=True)
        return None


def train_setting(params: dict, repo_root: str | os.PathLike = REPO_ROOT) -> str:
    """Train one setting (``mtbc train``): :func:`execute_training` with ``params``.

    The parameters are checked first: an unknown name or a bad value fails with one line before
    anything runs. The executed notebook goes to ``book/runs/`` for a run of every fold in the default
    results folder, else beside the run's results (as
    :func:`mtbc_lib.engine.runs.reproduce_command` says).

    Args:
        params: fields of :class:`~mtbc_lib.engine.config.TrainConfig` (``data_dir`` is stored as
            :func:`portable_data_dir` gives it).
        repo_root: the repository root.

    Returns:
        The run name.

    Raises:
        ValueError: an unknown parameter, or a bad value (:meth:`TrainConfig.resolve`).
        PapermillExecutionError: the notebook failed.
    """
    import dataclasses

    from mtbc_lib.engine.config import TrainConfig

    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    params = {**params, "data_dir": portable_data_dir(params.get("data_dir"))}
    cfg = TrainConfig(**params).resolve()
    every_fold = cfg.folds == list(range(cfg.n_folds))
    notebook_dir = "book/runs" if every_fold and cfg.out_dir == TrainConfig().out_dir else cfg.out_dir
    return execute_training({**params, "run_name": cfg.run_name}, notebook_dir, repo_root)


def portable_data_dir(data_dir: str | os.PathLike | None, repo_root: Path = REPO_ROOT) -> str:
    """``data_dir`` as a run should store it.

    Committed configurations then hold no path of the machine that trained them.

    Args:
        data_dir: the raw BUSI folder, or None / "".
        repo_root: the repository root.

    Returns:
        "" for the default folder beside the repository (``../shared/data/BUSI``) or no folder; any
        other folder as given, as a string.
    """
    if data_dir and Path(data_dir).expanduser().resolve() == (repo_root.parent / "shared" / "data" / "BUSI").resolve():
        return ""
    return str(data_dir or "")


#: How ``run_grid`` trains: "serial" (one training at a time, the notebook trains it),
#: "batched" (every fold of every setting together, mtbc_lib.engine.batched, then the
#: notebooks write the pages), "auto" (batched on a CUDA GPU, serial otherwise).
ENGINES = ("auto", "serial", "batched")


def run_grid(backbone: str, profile: str, settings: list[str] | None = None, scheduler: str | None = None,
             out_dir: str | os.PathLike = "results", notebook_dir: str | os.PathLike = "book/runs",
             data_dir: str | None = None, extra: dict | None = None, engine: str = "auto") -> list[str]:
    """Train every setting of the grid that is not complete yet, then rewrite ``out_dir/ablation.csv``.

    Locally the settings run one after the other (``engine`` "serial"), or all their trainings at once
    (``engine`` "batched"; "auto": batched where a CUDA GPU is present), the notebooks then writing the
    pages of the finished runs; ``ablation.csv`` is also rewritten after each setting. With
    ``scheduler`` each setting is a task on a Dask cluster (one GPU a worker), whose workers must see
    this repository and the data at the same paths.

    Args:
        backbone: a backbone name.
        profile: a training profile.
        settings: settings of :data:`mtbc_lib.studies.ablation.SETTINGS`; None: all.
        scheduler: ``tcp://HOST:PORT`` of a running dask.distributed scheduler; None: run locally.
        out_dir: the results folder.
        notebook_dir: where the executed notebooks go.
        data_dir: the raw BUSI folder; None: the default.
        extra: further notebook parameters for every setting.
        engine: ``"auto"``, ``"serial"`` or ``"batched"`` (:data:`ENGINES`); local runs only.

    Returns:
        The run names executed (not those skipped because another process holds one of their folds).

    Raises:
        ValueError: an unknown setting or engine.
        PapermillExecutionError: a notebook failed.
    """
    settings = list(SETTINGS) if settings is None else settings
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    if engine not in ENGINES:
        raise ValueError(f"parameter engine={engine!r}: expected one of {', '.join(ENGINES)}")
    todo = [s for s in settings if not is_complete(Path(out_dir) / run_name(backbone, s, profile))]
    out = Path(out_dir).resolve()  # stored repo-relative where it can be (configs are committed)
    kwargs = dict(out_dir=repo_relative(out),
                  notebook_dir=str(Path(notebook_dir).resolve()),
                  data_dir=portable_data_dir(data_dir), extra=extra)
    if scheduler:
        from dask.distributed import Client

        with Client(scheduler) as client:
            futures = [client.submit(execute_setting, backbone, s, profile, pure=False, **kwargs) for s in todo]
            done = client.gather(futures)
    else:
        if todo and (engine == "batched" or engine == "auto" and _cuda()):
            from mtbc_lib.engine import batched
            from mtbc_lib.engine.config import TrainConfig

            batched.run_many([TrainConfig(backbone=backbone, profile=profile, out_dir=kwargs["out_dir"],
                                          data_dir=kwargs["data_dir"], run_name=run_name(backbone, s, profile),
                                          **SETTINGS[s], **(extra or {}))
                              for s in todo])  # then each notebook finds its folds finished
        done = []
        for s in todo:
            done.append(execute_setting(backbone, s, profile, **kwargs))
            write_ablation_csv(out_dir)  # after each setting: a grid stopped midway keeps its finished rows
    write_ablation_csv(out_dir)
    return [d for d in done if d]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
