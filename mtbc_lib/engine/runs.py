"""A run's files: where they go, writing them atomically, and reading them back.

Files (``<run>`` = the run name, ``results`` = ``out_dir``)::

    results/<run>/config.json           the resolved TrainConfig
    results/<run>/fold<k>_history.csv   one row per epoch (loss, Dice, accuracy, train/val, lr,
                                        the loss's Dice and focal terms in training,
                                        wall and process CPU seconds, the machine's 1-min load
                                        average), rewritten after every epoch
    results/<run>/fold<k>_test.csv      one row per test image: class, id, name, label,
                                        p_benign, p_malignant, p_normal, pred, mask_empty,
                                        dice, iou, dice_pr, iou_pr, label_pr
    results/<run>/fold<k>_masks.npz     predicted test masks (np.packbits of (n,S,S) bool)
    results/<run>/fold<k>_metrics.json  fold metrics (raw and with PR) + config + versions
    results/<run>/summary.json          mean ± SD over the folds; written after the last fold
    checkpoints/<run>/fold<k>.ckpt      rolling checkpoint (every epoch, RNG states included)
    checkpoints/<run>/fold<k>.best.pt   weights of the best epoch (+ config, epoch, val loss)
    results/<run>/.fold<k>.lock         while a process trains fold k: who holds it (not committed)

Every file is written atomically (:func:`mtbc_lib.core.atomic_write`). A fold is held
by the process that trains it (:func:`hold`): a second process on the same fold (a
repeated ``mtbc grid``, a retried Dask task, a notebook started by hand) stops at once,
naming the holder; the lock of a killed process is recognised as stale and taken over.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtbc_lib.core import CLASSES, REPO_ROOT, atomic_write
from mtbc_lib.engine.config import NON_RESULT_FIELDS, TrainConfig, config_diff

__all__ = ["RunHeld", "hold", "describe", "reproduce_command", "profiles_table", "repo_relative", "read_config", "run_paths", "fold_files", "versions", "write_json", "check_same_config", "write_history", "save_masks",
           "load_masks", "summarize", "RunResults", "load_run", "metrics_table", "training_fit", "training_table",
           "confusion_table"]

def write_json(path: Path, obj) -> None:
    """Write an object as indented JSON, atomically.

    Args:
        path: the file to write.
        obj: JSON-able data; numpy scalars and arrays and paths are converted, NaN is written as
            ``NaN``.

    Returns:
        None.
    """
    atomic_write(path, lambda p: p.write_text(json.dumps(_jsonable(obj), indent=1, allow_nan=True) + "\n"))


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


class RunHeld(RuntimeError):
    """Another live process holds the fold (see :func:`hold`)."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), or None if
    there is no such process; with the pid it identifies a process even after pid reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"  # alive, start time not readable (no /proc)


def _holder_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot look at another machine's processes: assume it is alive
    start = _process_start(int(holder.get("pid", -1)))
    return start is not None and start in (holder.get("start"), "unknown")


@contextmanager
def hold(lock: Path, what: str):
    """Hold a lock file while the block runs.

    The lock is created with ``O_EXCL`` and names this process (host, pid, start time); it is removed
    at the end. A lock whose process is gone (killed, or its pid reused by another process) is stale
    and taken over; a lock of another host is taken as alive.

    Args:
        lock: the lock file (its folder is created if missing).
        what: what is held, for the message.

    Yields:
        None, while the lock is held.

    Raises:
        RunHeld: a live process holds the lock (one line naming the holder), or another process took
            it at the same moment.
    """
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}  # half-written by a process killed at that instant: stale
            if holder and _holder_alive(holder):
                raise RunHeld(f"{what}: held by process {holder.get('pid')} on {holder.get('host')} since "
                              f"{holder.get('since')} ({lock}); wait for it to end or stop it") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise RunHeld(f"{what}: another process took {lock} at the same moment; try again")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(me))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def run_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    """The results and checkpoint folders of a resolved config.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`. A relative ``out_dir`` is taken
            relative to the repository root; ``ckpt_dir`` "" means ``<out_dir>/../checkpoints/<run
            name>`` (gitignored, unlike results/).

    Returns:
        ``(results folder, checkpoint folder)``, absolute paths (not created).
    """
    out = Path(cfg.out_dir).expanduser()
    out = out if out.is_absolute() else REPO_ROOT / out
    ck = Path(cfg.ckpt_dir).expanduser() if cfg.ckpt_dir else out.parent / "checkpoints" / cfg.run_name
    ck = ck if ck.is_absolute() else REPO_ROOT / ck
    return out / cfg.run_name, ck


def fold_files(run_dir, name: str) -> dict[int, Path]:
    """A run folder's per-fold files of one kind, by fold number.

    Args:
        run_dir: the run's results folder.
        name: what follows ``fold<k>_`` in the file names: ``"test.csv"``, ``"history.csv"``, ...

    Returns:
        ``{k: path of fold<k>_<name>}`` in increasing ``k`` (fold 10 after fold 2); empty when there is none.
    """
    found = {int(p.name[len("fold"):-len(name) - 1]): p for p in Path(run_dir).glob(f"fold*_{name}")}
    return dict(sorted(found.items()))


def versions() -> dict[str, Any]:
    """Versions of Python, the key packages and this code.

    Returns:
        A dict of package versions plus ``torch_runtime``, ``mtbc_commit`` (git commit or None),
        ``mtbc_dirty`` (bool or None), ``machine`` and ``torch_threads``.
    """
    import torch

    try:
        from mtbc_lib.provenance import package_versions

        v = dict(package_versions())
    except Exception:  # noqa: BLE001 - provenance is optional here
        v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    v["torch_runtime"] = torch.__version__
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        v["mtbc_commit"] = commit.stdout.strip() if commit.returncode == 0 else None
        v["mtbc_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        v["mtbc_commit"], v["mtbc_dirty"] = None, None
    v["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    v["torch_threads"] = torch.get_num_threads()
    return v


def check_same_config(path: Path, cfg: TrainConfig, what: str) -> None:
    """Check that stored results come from the same setting as ``cfg``.

    A file that is not JSON, cannot be read or has no ``config`` is not checked.

    Args:
        path: a stored JSON file with a ``config`` entry.
        cfg: the config to compare with.
        what: what the file holds, for the message.

    Returns:
        None.

    Raises:
        ValueError: the stored config differs in a way that changes the numbers; the message names the
            fields (:func:`mtbc_lib.engine.config.config_diff`).
    """
    try:
        stored = json.loads(path.read_text())["config"] if path.suffix == ".json" else None
    except (OSError, ValueError, KeyError):
        return
    if stored is None:
        return
    diff = config_diff(stored, cfg.to_dict())
    if diff:
        raise ValueError(f"{path}: {what} were made with a different configuration (differs in: "
                         f"{', '.join(diff)}); choose another run_name or out_dir, or delete that folder")


def write_history(path: Path, history: list[dict]) -> None:
    """Write a fold's per-epoch rows as CSV, atomically.

    Args:
        path: the CSV file.
        history: one dict per epoch.

    Returns:
        None.
    """
    import pandas as pd

    atomic_write(path, lambda p: pd.DataFrame(history).to_csv(p, index=False))


def save_masks(path: Path, masks: np.ndarray | None, sub) -> None:
    """Write a fold's predicted test masks, bit-packed, with the images' names, classes and ids.

    Not atomic by itself: give it :func:`~mtbc_lib.core.atomic_write`'s temporary path.

    Args:
        path: the ``.npz`` file to write (written to exactly this path).
        masks: ``(n, S, S)`` bool predicted masks; None for a classification run (only names are
            stored).
        sub: the fold's tested :class:`~mtbc_lib.data.busi.BusiArrays` (names, classes, ids), in the
            masks' order.

    Returns:
        None.
    """
    with open(path, "wb") as fh:
        if masks is None:
            np.savez_compressed(fh, names=np.asarray(sub.names, dtype=str))
        else:
            np.savez_compressed(fh, masks=np.packbits(masks, axis=-1), shape=np.asarray(masks.shape),
                                names=np.asarray(sub.names, dtype=str), classes=sub.classes.astype(str),
                                ids=sub.ids)


def load_masks(path) -> dict[str, np.ndarray]:
    """Read a ``fold<k>_masks.npz``.

    Args:
        path: the file written by :func:`save_masks`.

    Returns:
        ``{"masks": (n, S, S) bool, "names", "classes", "ids"}``; only ``"names"`` for a
        classification run.
    """
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if "masks" in out:
        n, h, w = out.pop("shape").tolist()
        out["masks"] = np.unpackbits(out["masks"], axis=-1, count=w).astype(bool).reshape(n, h, w)
    return out


def summarize(cfg: TrainConfig, write: bool = False) -> dict:
    """Mean ± SD over a run's finished folds, raw and with PR.

    Args:
        cfg: the run's :class:`~mtbc_lib.engine.config.TrainConfig` (resolved here).
        write: write ``summary.json`` (atomically) when all folds are finished.

    Returns:
        A dict: ``run``, ``folds_finished``, ``complete``, ``raw`` and ``pr`` (``metrics.aggregate``
        of the folds' scalar metrics, ``ddof=1``), ``per_fold``, ``train_seconds``, ``sd``, ``config``
        and ``versions``.
    """
    from mtbc_lib.metrics import aggregate

    cfg = cfg.resolve()
    run_dir, _ = run_paths(cfg)
    per_fold = []
    for k in range(cfg.n_folds):
        p = run_dir / f"fold{k}_metrics.json"
        if p.exists():
            per_fold.append(json.loads(p.read_text()))
    summary: dict[str, Any] = {"run": cfg.run_name, "folds_finished": [m["fold"] for m in per_fold],
                               "complete": len(per_fold) == cfg.n_folds}
    for key in ("raw", "pr"):
        scalars = [{k: v for k, v in m[key].items() if isinstance(v, (int, float))} for m in per_fold]
        summary[key] = aggregate(scalars) if scalars else {}
    summary["per_fold"] = [{"fold": m["fold"], "best_epoch": m["best_epoch"], "epochs": m["epochs"],
                            "train_seconds": m["train_seconds"],
                            "raw": {k: v for k, v in m["raw"].items() if k != "confusion"},
                            "pr": {k: v for k, v in m["pr"].items() if k != "confusion"}} for m in per_fold]
    summary["train_seconds"] = float(sum(m["train_seconds"] for m in per_fold))
    summary["sd"] = "sample standard deviation over folds (ddof=1)"
    summary["config"] = cfg.to_dict()
    summary["versions"] = versions()
    if write and summary["complete"]:
        write_json(run_dir / "summary.json", summary)
    return summary


def describe(cfg: TrainConfig):
    """The resolved setting as a two-column table (what the notebook shows first).

    Args:
        cfg: the run's :class:`~mtbc_lib.engine.config.TrainConfig` (resolved here).

    Returns:
        A ``pandas.DataFrame`` indexed by ``setting`` with a ``value`` column (strings): every field,
        then what ``device``, ``amp`` and ``channels_last`` resolve to here, the CPU threads and the
        results and checkpoint folders.

    Raises:
        ValueError: an invalid config.
    """
    import pandas as pd
    import torch

    from mtbc_lib.engine.device import resolve_amp, resolve_channels_last, resolve_device

    cfg = cfg.resolve()
    run_dir, ck_dir = run_paths(cfg)
    dev = resolve_device(cfg.device)
    rows = [(k, v) for k, v in cfg.to_dict().items()]
    amp = resolve_amp(cfg.amp, dev)
    rows += [("→ device used", str(dev)), ("→ bf16 autocast", amp),
             ("→ channels-last", resolve_channels_last(cfg.channels_last, dev, amp)),
             ("→ CPU threads", cfg.num_threads or torch.get_num_threads()),
             ("→ results", repo_relative(run_dir)), ("→ checkpoints", repo_relative(ck_dir))]
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting").astype(str)


def reproduce_command(cfg: TrainConfig, width: int = 88) -> str:
    """The papermill call that trains this run again from ``notebooks/train.ipynb``.

    It gives the backbone, task, oversampling and profile, plus every other parameter whose resolved
    value differs from what those four resolve to, and ``run_name`` if a derived name would differ. Of
    the fields that do not change the numbers (``NON_RESULT_FIELDS``: the data folder, device,
    threads...) only ``out_dir`` is kept, and ``folds`` when not all of them. The executed notebook of
    a run of all folds in the default ``out_dir`` goes to ``book/runs/`` (a page of the book); any
    other's beside its results.

    Args:
        cfg: the run's :class:`~mtbc_lib.engine.config.TrainConfig` (resolved here).
        width: the line length to aim for (lines are at most about this long).

    Returns:
        The command, lines continued with a backslash.

    Raises:
        ValueError: an invalid config.
    """
    cfg = cfg.resolve()
    given = {"backbone": cfg.backbone, "task": cfg.task, "oversampling": cfg.oversampling, "profile": cfg.profile}
    base, want = TrainConfig(**given).resolve().to_dict(), cfg.to_dict()
    kept = set(want) - NON_RESULT_FIELDS | {"out_dir"}
    given |= {k: v for k, v in want.items() if k in kept and v != base[k]}
    probe = cfg.folds != list(range(cfg.n_folds))
    if probe:  # some folds only: which ones is part of the run
        given["folds"] = ",".join(map(str, cfg.folds))
    if TrainConfig(**given).resolve().run_name != cfg.run_name:
        given["run_name"] = cfg.run_name
    page = "book/runs" if not probe and cfg.out_dir == TrainConfig().out_dir else cfg.out_dir
    lines = [f"papermill notebooks/train.ipynb {page}/{cfg.run_name}.ipynb"]
    for k, v in given.items():
        arg = f"-p {k} {v:g}" if isinstance(v, float) else f"-p {k} {v}"
        if len(lines) == 1 or len(lines[-1]) + len(arg) + 1 > width:
            lines.append("    " + arg)
        else:
            lines[-1] += " " + arg
    return " \\\n".join(lines)


def repo_relative(path: Path) -> str:
    """A path as the book shows it and committed files store it.

    Args:
        path: a path.

    Returns:
        The path relative to the repository root when inside it, else as given, as a string.
    """
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def profiles_table():
    """The training profiles (``engine.config.PROFILES``) side by side, in words.

    Returns:
        A ``pandas.DataFrame`` of strings, one column per profile, one row per aspect (batch size,
        learning rate, epochs, early stopping, optimiser, schedule, weight averaging, clipping,
        arithmetic, image size, network widths).
    """
    import pandas as pd

    from mtbc_lib.engine.config import PROFILES

    amp = {"off": "fp32", "on": "bf16 autocast", "auto": "bf16 autocast where supported, else fp32"}
    layout = {"off": "", "on": "; channels-last", "auto": "; channels-last with bf16 or on a GPU"}

    def e(x):  # 0.0003 -> 3e-4
        return f"{x:.0e}".replace("e-0", "e-")
    cols = {}
    for name, p in PROFILES.items():
        sched = (f"plateau (factor {p['plateau_factor']:g}, patience {p['plateau_patience']}, min {e(p['min_lr'])})"
                 if p["schedule"] == "plateau" else
                 f"warm-up {p['warmup_epochs']:g} epoch, cosine to {e(p['min_lr'])}")
        cols[name] = {"batch size": p["batch_size"], "learning rate": e(p["lr"]), "maximum epochs": p["epochs"],
                      "early stopping (epochs without a lower validation loss)": p["patience"],
                      "optimiser": "Adam" if p["optimizer"] == "adam" else f"AdamW, weight decay {p['weight_decay']:g}",
                      "learning-rate schedule": sched,
                      "weight averaging": f"EMA {p['ema']:g}" if p["ema"] else "none",
                      "gradient clipping": f"norm {p['grad_clip']:g}" if p["grad_clip"] else "none",
                      "arithmetic": amp[p["amp"]] + layout[p["channels_last"]],
                      "images": f"{p['image_size']} × {p['image_size']}",
                      "network widths": "the paper's" if p["width"] == 1 else f"{p['width']:g} × the paper's"}
    return pd.DataFrame(cols).astype(str)


# ------------------------------------------------------------------------- reading

def read_config(run_dir, finished_folds: bool = False) -> TrainConfig | None:
    """The resolved config a run stored in its ``config.json``.

    Args:
        run_dir: the run's results folder.
        finished_folds: set ``folds`` to those whose results are there (a run can be trained a few
            folds at a time, and its config.json keeps the folds of its first call); unchanged when
            none is finished.

    Returns:
        The :class:`~mtbc_lib.engine.config.TrainConfig`, or None if there is no ``config.json``.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    cfg = TrainConfig.from_dict(json.loads(path.read_text())["config"])
    if finished_folds:
        done = [k for k in range(cfg.n_folds) if (Path(run_dir) / f"fold{k}_metrics.json").is_file()]
        cfg = replace(cfg, folds=done or cfg.folds)
    return cfg


@dataclass
class RunResults:
    """What a finished (or partly finished) run wrote (see :func:`load_run`).

    Attributes:
        run_dir: the results folder.
        config: ``config.json``'s resolved config dict (None if absent).
        history: ``pandas.DataFrame``, one row per fold and epoch (column ``fold``).
        test: ``pandas.DataFrame``, one row per fold and test image (column ``fold``).
        metrics: ``{fold: contents of fold<k>_metrics.json}``.
        summary: ``summary.json``'s contents (None until every fold is finished).
    """

    run_dir: Path
    config: dict | None  # config.json's resolved TrainConfig (None if absent)
    history: Any      # DataFrame, one row per fold and epoch (column ``fold``)
    test: Any         # DataFrame, one row per fold and test image (column ``fold``)
    metrics: dict     # {fold: fold<k>_metrics.json}
    summary: dict | None  # summary.json (None until every fold is finished)

    def masks(self, fold: int) -> dict[str, np.ndarray]:
        """The predicted test masks of a fold (:func:`load_masks`).

        Args:
            fold: the fold number.

        Returns:
            :func:`load_masks`' dict of ``fold<fold>_masks.npz``.
        """
        return load_masks(self.run_dir / f"fold{fold}_masks.npz")


def load_run(run_dir) -> RunResults:
    """Read every file of a run's results folder (finished folds only).

    Args:
        run_dir: the run's results folder.

    Returns:
        The :class:`RunResults` (empty tables when no fold is finished).
    """
    import pandas as pd

    run_dir = Path(run_dir)
    hist, test, metrics = [], [], {}
    for k, p in fold_files(run_dir, "metrics.json").items():
        metrics[k] = json.loads(p.read_text())
        hist.append(pd.read_csv(run_dir / f"fold{k}_history.csv").assign(fold=k))
        test.append(pd.read_csv(run_dir / f"fold{k}_test.csv").assign(fold=k))
    s, c = run_dir / "summary.json", run_dir / "config.json"
    return RunResults(run_dir=run_dir, config=json.loads(c.read_text())["config"] if c.exists() else None,
                      history=pd.concat(hist, ignore_index=True) if hist else pd.DataFrame(),
                      test=pd.concat(test, ignore_index=True) if test else pd.DataFrame(),
                      metrics=metrics, summary=json.loads(s.read_text()) if s.exists() else None)


def metrics_table(metrics: dict[int, dict], which: tuple[str, ...] = ("raw", "pr")):
    """Per-fold test metrics with the fold mean and SD.

    Args:
        metrics: ``{fold: metrics dict}`` (``RunResults.metrics``).
        which: the blocks to show: ``"raw"`` and/or ``"pr"``.

    Returns:
        A ``pandas.DataFrame`` indexed by ``(refinement, fold)``, the Table 5 columns the task has;
        each block ends with rows ``mean`` and ``sd`` (ddof=1). Empty when there is no fold.
    """
    import pandas as pd

    from mtbc_lib.metrics import TABLE_METRICS, aggregate

    rows = []
    for key in which:
        folds = [metrics[k][key] for k in sorted(metrics)]
        cols = [c for c in TABLE_METRICS if folds and c in folds[0]]
        for k, f in zip(sorted(metrics), folds):
            rows.append({"refinement": "PR" if key == "pr" else "none", "fold": str(k), **{c: f[c] for c in cols}})
        if folds:
            agg = aggregate(folds, cols)
            rows.append({"refinement": "PR" if key == "pr" else "none", "fold": "mean",
                         **{c: agg[c] for c in cols}})
            rows.append({"refinement": "PR" if key == "pr" else "none", "fold": "sd",
                         **{c: agg[c + "_sd"] for c in cols}})
    return pd.DataFrame(rows).set_index(["refinement", "fold"]) if rows else pd.DataFrame()


def training_fit(results: RunResults, fold: int) -> tuple[dict, bool]:
    """How a fold's tested weights score on its own training images: ``(scores, augmented)``.

    The scores are ``train_fit`` of the fold's metrics (the tested weights on the training images,
    unaugmented; ``augmented`` False). A run written before that field gets the tested epoch's row
    of its history instead: ``dsc_avg`` and ``acc`` running over its augmented training batches in
    training mode (``augmented`` True; ``{}`` when the history lacks that epoch)."""
    m = results.metrics[fold]
    if "train_fit" in m:
        return m["train_fit"], False
    h = results.history[(results.history["fold"] == fold) & (results.history["epoch"] == m["best_epoch"])]
    return ({"dsc_avg": h["train_dice"].iloc[0], "acc": h["train_acc"].iloc[0]} if len(h) else {}), True


def training_table(results: RunResults):
    """One row per finished fold: how it trained (epochs, what stopped it, the tested epoch,
    minutes, device and arithmetic) and how its tested weights score on the fold's training
    images beside its test images (DSC avg, accuracy; before refinement). The training
    scores are the tested weights on the training images, unaugmented (``train_fit``); a run
    written before that field shows the tested epoch's running scores on its augmented
    training batches instead (marked "aug."). "–" where the task has no such output."""
    import pandas as pd

    def fmt(v, aug=False):
        return "–" if v is None or v != v else f"{v:.3f}" + (" (aug.)" if aug else "")

    rows = []
    for k in sorted(results.metrics):
        m = results.metrics[k]
        fit, aug = training_fit(results, k)
        rows.append({"fold": k, "epochs": m["epochs"], "stopped by": m["stopped"], "tested epoch": m["best_epoch"],
                     "training (min)": f"{m['train_seconds'] / 60:.1f}",
                     "device": str(m["device"]) + (", bf16" if m.get("amp") else ""),
                     "DSC avg, training": fmt(fit.get("dsc_avg"), aug), "DSC avg, test": fmt(m["raw"].get("dsc_avg")),
                     "accuracy, training": fmt(fit.get("acc"), aug), "accuracy, test": fmt(m["raw"].get("acc"))})
    return pd.DataFrame(rows).set_index("fold") if rows else pd.DataFrame()


def confusion_table(metrics: dict[int, dict], which: str = "pr"):
    """The confusion matrix summed over the finished folds.

    Args:
        metrics: ``{fold: metrics dict}`` (``RunResults.metrics``).
        which: ``"raw"`` or ``"pr"``.

    Returns:
        A ``pandas.DataFrame`` of counts (rows: true class, columns: predicted class), or None for a
        run without class predictions.
    """
    import pandas as pd

    mats = [np.asarray(m[which]["confusion"]) for m in metrics.values() if "confusion" in m[which]]
    if not mats:
        return None
    return pd.DataFrame(sum(mats), index=pd.Index(CLASSES, name="true"),
                        columns=pd.Index(CLASSES, name="predicted"))
