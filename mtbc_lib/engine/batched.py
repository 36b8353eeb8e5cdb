"""The batched engine: K trainings of one network shape advance together on one device.

    summaries = batched.run_many(configs, device="cuda")   # train.run's work for many runs at once

On a GPU the paper's batch of 2 leaves the chip idle. Trainings that share a network shape and
what a step computes (:func:`group_key`) are stacked instead (:class:`mtbc_lib.engine.stacked.Stack`:
one (K, P) tensor of weights, one vmapped computation and one Adam update per step). Each
member is built by a :class:`mtbc_lib.engine.train.FoldTrainer` and keeps what it gives: initial
weights, training indices and their order (DO or not), augmentation generator (the same
draws in the same order, made for a whole epoch on the CPU and moved to the device once per
epoch), loss, Adam state, ReduceLROnPlateau on its own validation loss, early stopping, best
weights, rolling checkpoints (FoldTrainer's format: either engine resumes the other's) and
files (``train._evaluate_and_write``; config.json and the fold metrics also name the engine
and device). A member that stops leaves the stack.

The members run their epochs in lockstep; an epoch has as many steps as its longest member
has batches. Members are ordered by decreasing number of batches, so those with a batch left
are a prefix of the stack and the others (a member without DO in the tail of one with DO) sit
the step out, at no cost, their Adam state untouched. A last batch smaller than the others'
in its step is padded with images of weight 0. Nothing is read back to the host inside an
epoch: its sums stay on the device and are read once, after validation.

Accepted (:func:`check_batchable`): the paper's recipe (Adam or AdamW, ReduceLROnPlateau; no
clipping, weight average, low-resolution epochs, cosine schedule or time budget) on networks
without buffers or dropout (:data:`BATCHABLE`). With ``vmap=False`` the numbers are
``train.run``'s up to float32 rounding (bit for bit on some CPUs); vmapped, they differ by the
rounding of grouped convolutions, which training amplifies as it amplifies any change of
convolution algorithm (``tests/engine/test_batched.py``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from contextlib import ExitStack

import numpy as np
import torch
from tqdm import tqdm  # text bars, readable in a log (as train's)

from mtbc_lib.core import atomic_write
from mtbc_lib.data.augment import augment_theta
from mtbc_lib.engine import train
from mtbc_lib.engine.config import TrainConfig, config_diff
from mtbc_lib.engine.device import resolve_amp, resolve_device, setup_torch
from mtbc_lib.engine.runs import RunHeld, check_same_config, hold, run_paths, summarize, write_history, write_json
from mtbc_lib.engine.stacked import Stack, check_compile, pad_rows

__all__ = ["ENGINE", "BATCHABLE", "check_batchable", "group_key", "run_many"]

#: The name runs trained here carry (config.json and fold metrics: ``engine``).
ENGINE = "batched"
#: Backbones whose networks hold no buffers (batch-norm statistics) and no dropout, so that a
#: stacked step computes each member exactly as its own network would.
BATCHABLE: tuple[str, ...] = ("unetplusplus", "nnunet", "unetplusplus-std")


def check_batchable(cfg: TrainConfig) -> TrainConfig:
    """Check that the batched engine reproduces a config's training.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`.

    Returns:
        ``cfg``.

    Raises:
        ValueError: the backbone is not in :data:`BATCHABLE`, the schedule is not ``"plateau"``, or
            ``grad_clip``, ``ema``, ``low_res_epochs`` or ``budget_minutes`` is set (one line naming the
            parameter).
    """
    checks = [("backbone", cfg.backbone in BATCHABLE, f"one of {', '.join(BATCHABLE)}"),
              ("schedule", cfg.schedule == "plateau", "'plateau'")]
    checks += [(k, not getattr(cfg, k), "0") for k in ("grad_clip", "ema", "low_res_epochs", "budget_minutes")]
    for k, ok, want in checks:
        if not ok:
            raise ValueError(f"parameter {k}={getattr(cfg, k)!r}: the batched engine needs {want} "
                             "(train.run trains the others)")
    return cfg


def group_key(cfg: TrainConfig) -> tuple:
    """What the members of one stack share.

    Seeds, folds, splits, DO, epochs, patience, learning rates and the plateau settings are each
    member's own.

    Args:
        cfg: a resolved :class:`~mtbc_lib.engine.config.TrainConfig`.

    Returns:
        A hashable tuple: the network's shape (backbone, task, width, image size, deep supervision),
        the batch size, the loss and optimiser settings, the device and arithmetic, the evaluation
        batch size and the threshold.
    """
    dev = resolve_device(cfg.device)
    return (cfg.backbone, cfg.task, cfg.width, cfg.image_size, cfg.deep_supervision, cfg.batch_size, cfg.lam,
            cfg.gamma, cfg.optimizer, cfg.weight_decay, str(dev), resolve_amp(cfg.amp, dev), cfg.eval_batch_size,
            cfg.threshold)


# ------------------------------------------------------------------------- members

class _Member:
    """One training of a stack: its FoldTrainer ``t`` (configuration, generator, plateau
    schedule, state; its network and optimiser, kept on the CPU, hold checkpoints), its
    folders, its Adam step count and, when resumed, its moments and best weights."""

    def __init__(self, cfg: TrainConfig, arrays, split, fold: int, data, lock: ExitStack):
        with warnings.catch_warnings():  # third-party deprecation notices on first import
            warnings.simplefilter("ignore", FutureWarning)
            self.t = t = train.FoldTrainer(cfg, arrays, split, fold)
        t.X, t.M, t.Y = data  # the stack's one copy on the device
        t.cl = False  # the stack computes in NCHW; evaluation follows
        t.model.to("cpu")
        self.arrays, self.name, (self.run_dir, self.ck_dir) = arrays, f"{cfg.run_name} fold {fold}", run_paths(cfg)
        self.n = math.ceil(len(t.train_idx) / cfg.batch_size)  # batches per epoch
        self.steps, self.moments, self.best_row, self.best_written, self.lock = 0, None, None, True, lock
        self.ckpt, self.best_path = self.ck_dir / f"fold{fold}.ckpt", self.ck_dir / f"fold{fold}.best.pt"
        if self.ckpt.exists():
            c = torch.load(self.ckpt, map_location="cpu", weights_only=True)
            diff = config_diff(c["config"], cfg.to_dict())
            if diff:
                raise ValueError(f"{self.ckpt}: checkpoint of a different configuration (differs in: "
                                 f"{', '.join(diff)}); delete it or choose another run_name")
            t.restore(c)
            params = list(t.model.parameters())
            if t.opt.state:
                self.steps = int(t.opt.state[params[0]]["step"])
                self.moments = [torch.cat([t.opt.state[p][k].reshape(-1) for p in params])
                                for k in ("exp_avg", "exp_avg_sq")]
            if t.state["best_epoch"]:
                best = torch.load(self.best_path, map_location="cpu", weights_only=True)["model"]
                self.best_row = torch.cat([best[n].reshape(-1) for n, _ in t.model.named_parameters()])

    def save_best(self, stack: Stack, i: int) -> None:
        """Write the best weights (row i of the stack) as ``train`` does, if not written yet."""
        if self.best_written:
            return
        st, sd = self.t.state, {n: v.cpu().clone() for n, v in stack.unflatten(stack.best[i]).items()}
        blob = {"config": self.t.cfg.to_dict(), "epoch": st["best_epoch"], "val_loss": st["best_loss"], "model": sd}
        atomic_write(self.best_path, lambda p: torch.save(blob, p))
        self.best_written = True

    @torch.no_grad()
    def save(self, stack: Stack, i: int) -> None:
        """The rolling checkpoint, in FoldTrainer's format (row i of the stack; its best weights first)."""
        self.save_best(stack, i)
        t, params = self.t, list(self.t.model.parameters())
        for p, w, m, v in zip(params, *(stack.unflatten(x[i]).values() for x in (stack.w, stack.m, stack.v))):
            p.copy_(w)
            if self.steps:
                t.opt.state[p] = {"step": torch.tensor(float(self.steps)), "exp_avg": m.cpu().clone(),
                                  "exp_avg_sq": v.cpu().clone()}
        blob = t.checkpoint()
        atomic_write(self.ckpt, lambda p: torch.save(blob, p))

    def finish(self, stack: Stack, i: int, engine: dict, progress: bool) -> None:
        """Evaluate the best weights and write the fold's files (``train._evaluate_and_write``),
        then stamp the metrics with the engine."""
        self.save_best(stack, i)
        t = self.t
        t.model.to(t.device)
        m = train._evaluate_and_write(t, self.arrays, self.run_dir, self.ck_dir)
        write_json(self.run_dir / f"fold{t.fold}_metrics.json", {**m, "engine": engine})  # still written last
        t.model.to("cpu")
        if progress:
            tqdm.write(f"{self.name}: {m['epochs']} epochs ({m['stopped']}), best epoch {m['best_epoch']}"
                       + "".join(f", {k} {m['raw'][k]:.3f}" for k in ("dsc_avg", "acc") if k in m["raw"]))

    def end_epoch(self, h: list[float], seconds: float, cpu_seconds: float, stack: Stack, i: int) -> str | None:
        """What ``train._fit`` does after an epoch, from the epoch's sums h (training: loss, Dice,
        correct, Dice term, focal term; validation: loss, Dice, correct): plateau step, best
        weights, early-stopping count, history. Returns a one-line message if it diverged."""
        t, st, task = self.t, self.t.state, self.t.cfg.task
        n, nv = len(t.train_idx), len(t.val_idx)
        self.steps += self.n
        tr = {c: h[j] / n for j, c in enumerate(("loss", "dice", "acc", "dice_term", "focal_term"))
              if j < 3 or (c == "dice_term" and task != "cls") or (c == "focal_term" and task != "seg")}
        va = {"loss": h[5] / nv, "dice": h[6] / nv, "acc": h[7] / nv}
        for split, v in (("training", tr["loss"]), ("validation", va["loss"])):
            if not math.isfinite(v):
                return (f"{self.name} epoch {st['epoch'] + 1}: {split} loss is {v}; the run diverged "
                        "(try a lower lr, or amp='off')")
        lr = t.opt.param_groups[0]["lr"]
        t.sched.step(va["loss"])
        st["epoch"] += 1
        if va["loss"] < st["best_loss"]:
            st.update(best_loss=va["loss"], best_epoch=st["epoch"], bad_epochs=0)
            stack.best[i].copy_(stack.w[i])
            self.best_written = False
        else:
            st["bad_epochs"] += 1
        st["train_seconds"] += seconds
        st["history"].append({"epoch": st["epoch"], "lr": lr, **{f"train_{k}": v for k, v in tr.items()},
                              **{f"val_{k}": v for k, v in va.items()}, "seconds": seconds,
                              "cpu_seconds": cpu_seconds, "images_per_s": n / seconds, "load": os.getloadavg()[0]})
        write_history(self.run_dir / f"fold{t.fold}_history.csv", st["history"])
        return None


def _plan(members: list[_Member], device) -> dict:
    """An epoch's draws of every member, made as ``FoldTrainer.train_epoch`` makes them (its
    generator's permutation of its training indices, then one ``augment_theta`` of
    ``torch.rand(b, 3)`` per batch), and Adam's scalars of each of its steps: idx, weight
    (S, K, B), theta (S, K, B, 2, 3), step_size, bc2_sqrt, decay (S, K) on the device, and
    ``counts``: per step, the images of each member (a prefix) with a batch left, host ints."""
    S, K, B = members[0].n, len(members), members[0].t.cfg.batch_size
    idx, wt = torch.zeros(S, K, B, dtype=torch.int64), torch.zeros(S, K, B)
    theta, sc = torch.zeros(S, K, B, 2, 3), np.zeros((3, S, K))
    counts = [[min(B, len(m.t.train_idx) - s * B) for m in members if m.n > s] for s in range(S)]
    for k, mem in enumerate(members):
        t, group = mem.t, mem.t.opt.param_groups[0]
        lr, (b1, b2), wd = group["lr"], group["betas"], t.cfg.weight_decay
        perm = torch.from_numpy(t.train_idx)[torch.randperm(len(t.train_idx), generator=t.gen)]
        batches = [perm[s * B: (s + 1) * B] for s in range(mem.n)]
        idx[: mem.n, k], wt[: mem.n, k] = pad_rows(batches, B)
        for s, b in enumerate(batches):
            theta[s, k, : len(b)] = augment_theta(torch.rand(len(b), 3, generator=t.gen))
            step = mem.steps + s + 1
            sc[:, s, k] = lr / (1 - b1 ** step), (1 - b2 ** step) ** 0.5, 1 - lr * wd  # as Adam computes them
    sc = torch.from_numpy(sc).float().to(device)
    return {"idx": idx.to(device), "weight": wt.to(device), "theta": theta.to(device), "step_size": sc[0],
            "bc2_sqrt": sc[1], "decay": sc[2], "counts": counts}


def _val_plan(members: list[_Member], device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every member's validation indices (K, V), padded, their weights (1 image, 0 padding), counts."""
    idx, wt = pad_rows([m.t.val_idx for m in members])
    return idx.to(device), wt.to(device), [len(m.t.val_idx) for m in members]


# ------------------------------------------------------------------------- a stack

def _device_name(dev: torch.device) -> str:
    """The device and, for a GPU or a Linux CPU, its model: "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    cpuinfo = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")]
    return f"{dev} ({models[0]})" if models else str(dev)


def _keep(stack: Stack, members: list, keep: list[int]) -> list:
    """The members ``keep`` (indices), and the stack reduced to their rows."""
    if len(keep) < len(members):
        stack.select(keep)
    return [members[i] for i in keep]


def _train_stack(members: list[_Member], data, opts: dict) -> list[str]:
    """Train the members (one group_key) together until each is done, finish each as it stops,
    and return the one-line messages of those that diverged. Stops early (checkpoints written)
    at the deadline or after the members' ``stop_after_epochs`` (then raises StopRequested).
    ``opts``: run_many's progress, deadline, checkpoint_every, vmap, compile."""
    (X, M, Y), progress, deadline, checkpoint_every = data, opts["progress"], opts["deadline"], opts["checkpoint_every"]
    members.sort(key=lambda m: -m.n)  # those with a batch left: a prefix
    t0, diverged = members[0].t, []
    cfg, group = t0.cfg, t0.opt.param_groups[0]
    engine = {"name": ENGINE, "device": _device_name(t0.device), "members": len(members), "amp": t0.amp}
    stack = Stack([m.t.model for m in members], t0.device, t0.loss_fn, group["betas"], group["eps"], cfg.weight_decay,
                  cfg.optimizer == "adamw", t0.amp, opts["vmap"], opts["compile"])
    for i, m in enumerate(members):
        if m.moments is not None:
            stack.m[i], stack.v[i] = (x.to(stack.device) for x in m.moments)
        if m.best_row is not None:
            stack.best[i] = m.best_row.to(stack.device)
    stop_after = min([m.t.cfg.stop_after_epochs for m in members if m.t.cfg.stop_after_epochs], default=0)
    bar = tqdm(total=max(m.t.cfg.epochs for m in members), initial=min(m.t.state["epoch"] for m in members),
               desc=f"{cfg.backbone} {cfg.task} x{len(members)}", unit="epoch", disable=not progress,
               dynamic_ncols=True)
    epochs_now = 0
    try:
        while True:
            keep = []
            for i, m in enumerate(members):  # finished (or resumed finished): evaluate, write, leave the stack
                if m.t.done():
                    m.finish(stack, i, engine, progress)
                    m.lock.close()
                else:
                    keep.append(i)
            members = _keep(stack, members, keep)
            stopping = bool(members) and (bool(stop_after) and epochs_now >= stop_after
                                          or deadline is not None and time.time() >= deadline)
            if stopping and (stop_after or checkpoint_every):
                for i, m in enumerate(members):
                    m.save(stack, i)
            if stopping and stop_after:
                raise train.StopRequested(f"{len(members)} trainings stopped after {epochs_now} epochs on request; "
                                          "run again to resume from their checkpoints")
            if stopping or not members:
                if stopping and progress:
                    tqdm.write(f"deadline: {len(members)} trainings of {cfg.backbone} {cfg.task} left unfinished")
                return diverged
            w0, c0 = time.perf_counter(), time.process_time()
            plan, (vidx, vwt, vcounts) = _plan(members, stack.device), _val_plan(members, stack.device)
            sums = torch.zeros(len(members), 5, dtype=torch.float64, device=stack.device)
            for s, counts in enumerate(plan.pop("counts")):
                stack.train_step(X, M, Y, {k: v[s, : len(counts)] for k, v in plan.items()} | {"counts": counts}, sums)
            val = stack.validate(X, M, Y, vidx, vwt, vcounts, cfg.eval_batch_size, cfg.threshold)
            host = torch.cat([sums, val], 1).cpu().numpy()  # the epoch's one read-back
            dt, cpu = time.perf_counter() - w0, time.process_time() - c0
            epochs_now += 1
            keep = []
            for i, m in enumerate(members):
                msg = m.end_epoch(host[i].tolist(), dt, cpu, stack, i)
                if msg:
                    diverged.append(msg)
                    m.lock.close()
                    continue
                keep.append(i)
                if checkpoint_every and epochs_now % checkpoint_every == 0 and not m.t.done():
                    m.save(stack, i)
            members = _keep(stack, members, keep)
            bar.update(1)
            bar.set_postfix(training=len(members), refresh=False)
    finally:
        bar.close()
        for m in members:
            m.lock.close()


# ------------------------------------------------------------------------- many runs

def _arrays_of(cfg: TrainConfig, arrays, cache: dict, progress: bool):
    if arrays is None:  # as train.load_data would, once per data set
        key = (cfg.data_dir, cfg.image_size, cfg.curation, cfg.limit)
        if key not in cache:
            cache[key] = train.load_data(cfg, progress=progress)
        return cache[key]
    a = arrays(cfg) if callable(arrays) else arrays
    if a.images.shape[1:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"arrays: images are {a.images.shape[1]}x{a.images.shape[2]} px; expected "
                         f"image_size={cfg.image_size} ({cfg.run_name})")
    return a


def run_many(configs, arrays=None, device: str | None = None, progress: bool = True, splits=None,
             max_members: int = 0, deadline: float | None = None, checkpoint_every: int = 1,
             vmap: bool = True, compile: str = "") -> dict[str, dict]:
    """Train and evaluate the folds ``cfg.folds`` of every config, batched.

    As :func:`~mtbc_lib.engine.train.run` does for one (same files; finished folds skipped,
    interrupted ones resumed, each fold held by a lock; a fold held by another process is skipped
    with one line), with the trainings of one :func:`group_key` advancing together. torch's thread
    count and determinism flag are restored afterwards.

    Args:
        configs: :class:`~mtbc_lib.engine.config.TrainConfig` objects (resolved here; each must pass
            :func:`check_batchable`; run names distinct).
        arrays: None (each config's data, loaded once per data set), a ``BusiArrays`` for all, or a
            function config -> BusiArrays.
        device: overrides the configs' ``device`` (e.g. "cuda"); None keeps theirs.
        progress: whether to show progress bars.
        splits: None (``train.run_splits``) or a function (config, arrays) -> folds.
        max_members: at most this many trainings per stack (0: no limit).
        deadline: ``time.time()`` after which no epoch starts; unfinished trainings stay so
            (checkpointed if ``checkpoint_every``), finished ones are written.
        checkpoint_every: write each training's rolling checkpoint every this many epochs (0: only its
            best weights, at its end).
        vmap: one vmapped computation per step (else a loop over the members: the reference).
        compile: a ``torch.compile`` mode for the vmapped forward ("": none; for a GPU).

    Returns:
        ``{run name: summary}`` (:func:`~mtbc_lib.engine.runs.summarize`; ``summary.json`` written
        once a run is complete); ``{}`` for no configs.

    Raises:
        ValueError: ``max_members`` or ``checkpoint_every`` is not an integer >= 0, an unknown
            ``compile`` mode, a config that is not a TrainConfig, invalid or not batchable, a run name
            given twice, arrays not at ``image_size``, or stored results from a different
            configuration.
        TrainingDiverged: after the others finished, if any training diverged (one line naming each).
    """
    for name, v in (("max_members", max_members), ("checkpoint_every", checkpoint_every)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"parameter {name}={v!r}: expected an integer >= 0")
    check_compile(compile)
    cfgs = []
    for c in configs:
        if not isinstance(c, TrainConfig):
            raise ValueError(f"parameter configs: expected TrainConfig objects, got {type(c).__name__}")
        cfgs.append(check_batchable((dataclasses.replace(c, device=device) if device else c).resolve()))
    names = [c.run_name for c in cfgs]
    if len(set(names)) < len(names):
        raise ValueError(f"parameter configs: run {max(set(names), key=names.count)!r} appears twice")
    if not cfgs:
        return {}
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cache, jobs, complete_before = {}, {}, {}
    opts = dict(progress=progress, deadline=deadline, checkpoint_every=checkpoint_every, vmap=vmap, compile=compile)
    try:
        setup_torch(cfgs[0], resolve_device(cfgs[0].device))
        for cfg in cfgs:
            run_dir, _ = run_paths(cfg)
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg_path = run_dir / "config.json"
            if cfg_path.exists():  # kept as written when the run began
                check_same_config(cfg_path, cfg, "the results there")
            else:
                write_json(cfg_path, {"config": cfg.to_dict(),
                                      "engine": {"name": ENGINE, "device": _device_name(resolve_device(cfg.device))}})
            complete_before[cfg.run_name] = (run_dir / "summary.json").exists() and all(
                (run_dir / f"fold{k}_metrics.json").exists() for k in cfg.folds)
            a = _arrays_of(cfg, arrays, cache, progress)
            folds = splits(cfg, a) if splits else train.run_splits(cfg, a)
            for k in cfg.folds:
                if (run_dir / f"fold{k}_metrics.json").exists():
                    check_same_config(run_dir / f"fold{k}_metrics.json", cfg, "the fold results there")
                    continue
                jobs.setdefault(group_key(cfg) + (id(a),), []).append((cfg, a, folds[k], k))
        diverged = []
        for job in jobs.values():
            for s in range(0, len(job), max_members or len(job)):
                diverged += _train_jobs(job[s: s + (max_members or len(job))], opts)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    summaries = {c.run_name: summarize(c, write=not complete_before[c.run_name]) for c in cfgs}
    if diverged:
        raise train.TrainingDiverged(f"{len(diverged)} training(s) diverged: " + "; ".join(diverged))
    return summaries


def _train_jobs(jobs: list, opts: dict) -> list[str]:
    """Hold each job's fold, build its member and train them as one stack (a held or since
    finished fold is skipped, with one line); none once the deadline has passed."""
    arrays, members = jobs[0][1], []
    if opts["deadline"] is not None and time.time() >= opts["deadline"]:
        return []
    dev = resolve_device(jobs[0][0].device)
    data = (torch.from_numpy(arrays.images[:, None].copy()).to(dev),
            torch.from_numpy(arrays.masks[:, None].astype(np.uint8)).to(dev),
            torch.from_numpy(arrays.labels.astype(np.int64)).to(dev))
    try:
        for cfg, a, split, k in jobs:
            run_dir, lock = run_paths(cfg)[0], ExitStack()
            try:
                lock.enter_context(hold(run_dir / f".fold{k}.lock", f"{cfg.run_name} fold {k}"))
                if not (run_dir / f"fold{k}_metrics.json").exists():  # else finished by its holder meanwhile
                    members.append(_Member(cfg, a, split, k, data, lock))
            except RunHeld as e:
                print(f"batched: skipped {e}", flush=True)
            finally:
                if not members or members[-1].lock is not lock:
                    lock.close()
        return _train_stack(members, data, opts) if members else []
    finally:
        for m in members:
            m.lock.close()
