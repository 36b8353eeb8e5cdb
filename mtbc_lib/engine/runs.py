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

__all__ = ["RunHeld", "hold", "describe", "reproduce_command", "profiles_table", "repo_relative", "read_config", "run_paths", "versions", "write_json", "check_same_config", "write_history", "save_masks",
           "load_masks", "summarize", "RunResults", "load_run", "metrics_table", "confusion_table"]

def write_json(path: Path, obj) -> None:
    """``obj`` (numpy scalars and arrays, paths allowed) as indented JSON, atomically."""
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
    """Hold ``lock`` (a file) while the block runs: written with O_EXCL, it names this
    process (host, pid, start time); removed at the end. If a live process holds it,
    raise :class:`RunHeld` with one line naming the holder; a lock whose process is gone
    (killed, or its pid reused by another process) is stale and taken over."""
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
    """(results folder, checkpoint folder) of a resolved config. A relative ``out_dir``
    is taken relative to the repository root; checkpoints default to
    ``<out_dir>/../checkpoints/<run name>`` (gitignored, unlike results/)."""
    out = Path(cfg.out_dir).expanduser()
    out = out if out.is_absolute() else REPO_ROOT / out
    ck = Path(cfg.ckpt_dir).expanduser() if cfg.ckpt_dir else out.parent / "checkpoints" / cfg.run_name
    ck = ck if ck.is_absolute() else REPO_ROOT / ck
    return out / cfg.run_name, ck


def versions() -> dict[str, Any]:
    """Versions of Python, the key packages and this code (git commit, dirty flag)."""
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
    """Stored results (a JSON file with a ``config``) must come from the same setting as
    ``cfg``: raise ValueError naming the fields that differ in a way that changes the
    numbers (:func:`mtbc_lib.engine.config.config_diff`)."""
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
    """A fold's per-epoch rows as CSV, atomically."""
    import pandas as pd

    atomic_write(path, lambda p: pd.DataFrame(history).to_csv(p, index=False))


def save_masks(path: Path, masks: np.ndarray | None, sub) -> None:
    """A fold's predicted test masks, bit-packed, with the images' names, classes and ids
    (names only for a classification run). Not atomic by itself: give it
    :func:`~mtbc_lib.core.atomic_write`'s temporary path."""
    with open(path, "wb") as fh:
        if masks is None:
            np.savez_compressed(fh, names=np.asarray(sub.names, dtype=str))
        else:
            np.savez_compressed(fh, masks=np.packbits(masks, axis=-1), shape=np.asarray(masks.shape),
                                names=np.asarray(sub.names, dtype=str), classes=sub.classes.astype(str),
                                ids=sub.ids)


def load_masks(path) -> dict[str, np.ndarray]:
    """A ``fold<k>_masks.npz`` as {"masks": (n, S, S) bool or absent, "names", "classes", "ids"}."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if "masks" in out:
        n, h, w = out.pop("shape").tolist()
        out["masks"] = np.unpackbits(out["masks"], axis=-1, count=w).astype(bool).reshape(n, h, w)
    return out


def summarize(cfg: TrainConfig, write: bool = False) -> dict:
    """Mean ± SD over the finished folds (``metrics.aggregate``, ddof=1), raw and with
    PR. With ``write``, writes ``summary.json`` when all folds are finished."""
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
    """The resolved setting as a two-column table (what the notebook shows first),
    including what ``device``, ``amp`` and ``channels_last`` resolve to here."""
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
    """The papermill call that trains this run again from ``notebooks/train.ipynb``: its
    backbone, task, oversampling and profile, plus every other parameter whose resolved
    value differs from what those four resolve to, and ``run_name`` if a derived name would
    differ. Of the fields that do not change the numbers (``NON_RESULT_FIELDS``: the data
    folder, device, threads...) only ``out_dir`` is kept, and ``folds`` when not all of
    them. The executed notebook of a run of all folds in the default ``out_dir`` goes to
    ``book/runs/`` (a page of the book); any other's (some folds only, or trained into another
    folder, e.g. a probe's) beside its results, as the committed ones are. Lines of at most about
    ``width`` characters, continued with a backslash."""
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
    """A path as the book shows it and committed files store it: relative to the
    repository when inside it, else as given."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def profiles_table():
    """The training profiles (``engine.config.PROFILES``) side by side, one column each, in words."""
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
    """The resolved TrainConfig a run stored in its ``config.json`` (None if absent). With
    ``finished_folds``, its ``folds`` are those whose results are there: a run can be
    trained a few folds at a time, and its config.json keeps the folds of its first call."""
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
    """What a finished (or partly finished) run wrote (see :func:`load_run`)."""

    run_dir: Path
    config: dict | None  # config.json's resolved TrainConfig (None if absent)
    history: Any      # DataFrame, one row per fold and epoch (column ``fold``)
    test: Any         # DataFrame, one row per fold and test image (column ``fold``)
    metrics: dict     # {fold: fold<k>_metrics.json}
    summary: dict | None  # summary.json (None until every fold is finished)

    def masks(self, fold: int) -> dict[str, np.ndarray]:
        """The predicted test masks of a fold (:func:`load_masks`)."""
        return load_masks(self.run_dir / f"fold{fold}_masks.npz")


def load_run(run_dir) -> RunResults:
    """Read every file of a run's results folder (finished folds only)."""
    import pandas as pd

    run_dir = Path(run_dir)
    hist, test, metrics = [], [], {}
    for p in sorted(run_dir.glob("fold*_metrics.json")):
        k = int(p.name[4:].split("_")[0])
        metrics[k] = json.loads(p.read_text())
        hist.append(pd.read_csv(run_dir / f"fold{k}_history.csv").assign(fold=k))
        test.append(pd.read_csv(run_dir / f"fold{k}_test.csv").assign(fold=k))
    s, c = run_dir / "summary.json", run_dir / "config.json"
    return RunResults(run_dir=run_dir, config=json.loads(c.read_text())["config"] if c.exists() else None,
                      history=pd.concat(hist, ignore_index=True) if hist else pd.DataFrame(),
                      test=pd.concat(test, ignore_index=True) if test else pd.DataFrame(),
                      metrics=metrics, summary=json.loads(s.read_text()) if s.exists() else None)


def metrics_table(metrics: dict[int, dict], which: tuple[str, ...] = ("raw", "pr")):
    """Per-fold test metrics (Table 5's columns present for the task) with the fold mean
    and SD (ddof=1) as the last rows; one block per ``which`` ("raw", "pr")."""
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
        fit, aug = m.get("train_fit"), "train_fit" not in m
        if aug:  # the tested epoch's row of the history: augmented batches in training mode
            h = results.history[(results.history["fold"] == k) & (results.history["epoch"] == m["best_epoch"])]
            fit = {"dsc_avg": h["train_dice"].iloc[0], "acc": h["train_acc"].iloc[0]} if len(h) else {}
        rows.append({"fold": k, "epochs": m["epochs"], "stopped by": m["stopped"], "tested epoch": m["best_epoch"],
                     "training (min)": f"{m['train_seconds'] / 60:.1f}",
                     "device": str(m["device"]) + (", bf16" if m.get("amp") else ""),
                     "DSC avg, training": fmt(fit.get("dsc_avg"), aug), "DSC avg, test": fmt(m["raw"].get("dsc_avg")),
                     "accuracy, training": fmt(fit.get("acc"), aug), "accuracy, test": fmt(m["raw"].get("acc"))})
    return pd.DataFrame(rows).set_index("fold") if rows else pd.DataFrame()


def confusion_table(metrics: dict[int, dict], which: str = "pr"):
    """Confusion matrix summed over the finished folds (rows: true, columns: predicted),
    as a DataFrame; None for a run without class predictions."""
    import pandas as pd

    mats = [np.asarray(m[which]["confusion"]) for m in metrics.values() if "confusion" in m[which]]
    if not mats:
        return None
    return pd.DataFrame(sum(mats), index=pd.Index(CLASSES, name="true"),
                        columns=pd.Index(CLASSES, name="predicted"))
