"""The grids and the leakage study on a GPU, with the batched engine (mtbc_lib.engine.batched):
``mtbc gpu``.

The GPU machine has no BUSI folder and no network: the arrays travel as one .npz in the
repository tree, exported here (raw BUSI at one size, which images Curated BUSI keeps, the
audit's same-scan groups). On the GPU, whole trainings run, batched, in this order until the
wall-clock budget is spent: the U-Net++ grid (6 settings x 4 folds), the nnU-Net grid, the
leakage study (image- against scan-level folds on the raw BUSI, MT, with the U-Net++); a
training still running at the deadline leaves nothing. The finished run folders are packed
into one tar per study (at most 3) under --out; a later call given them back (--have) trains
only what is missing.

    # here, where the BUSI folder is
    mtbc gpu --export .devrun/busi_128.npz --size 128
    # on the GPU machine, from the repository's root, the package not installed
    # (results: --out; a later call: --have with the tars of the earlier ones)
    python -m mtbc_lib gpu --arrays .devrun/busi_128.npz --out "$OUT" --minutes 9
    # one step of K stacked networks, vmapped against looped, bf16 against fp32
    python -m mtbc_lib gpu --bench --members 1,6,24
    # back here: the runs into results/ (then their pages: mtbc train ... skips finished folds)
    mtbc gpu --unpack OUT_FOLDER
"""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import numpy as np

from mtbc_lib.core import CLASSES, REPO_ROOT, atomic_write
from mtbc_lib.data.busi import BusiArrays
from mtbc_lib.engine.config import PROFILES, TrainConfig

#: The studies, in the order they are trained: name -> what its configurations are.
STUDIES = ("unetplusplus", "nnunet", "leakage")


# ----------------------------------------------------------------------------- the arrays

def export(out: Path, size: int, data_dir: str | None) -> None:
    """Raw BUSI at ``size`` px (``data.load_busi``), which of its images Curated BUSI keeps
    (the published keep-list) and each image's same-scan group of the audit (-1: none), as
    one compressed .npz (masks bit-packed)."""
    from mtbc_lib import data
    from mtbc_lib.dedup import audit_groups

    raw = data.load_busi(data_dir, size=size)
    kept = data.read_keep_list(data.PUBLISHED_KEEP_LIST)
    groups = audit_groups(data_dir, "scan")

    def write(p: Path) -> None:
        with open(p, "wb") as fh:  # np.savez appends .npz to a path
            np.savez_compressed(fh, images=raw.images, masks=np.packbits(raw.masks, axis=-1), labels=raw.labels,
                                classes=raw.classes.astype(str), ids=raw.ids, names=np.asarray(raw.names, dtype=str),
                                orig_sizes=raw.orig_sizes, curated=np.asarray([k in kept for k in raw.keys]),
                                scan_group=np.asarray([groups.get(k, -1) for k in raw.keys], dtype=np.int64))

    atomic_write(out, write)
    print(f"{out}: {len(raw)} images at {size} px, {len(kept)} curated, {len(set(groups.values()))} same-scan groups, "
          f"{out.stat().st_size / 1e6:.1f} MB")


def load(path: Path) -> tuple[BusiArrays, np.ndarray, dict]:
    """(raw arrays, which of them Curated BUSI keeps, {(class, id): same-scan group})."""
    if not path.is_file():
        raise FileNotFoundError(f"--arrays {path}: no such file; export it with --export where the BUSI folder is")
    with np.load(path, allow_pickle=False) as z:
        n, s = z["images"].shape[:2]
        raw = BusiArrays(images=z["images"], masks=np.unpackbits(z["masks"], axis=-1, count=s).astype(bool),
                         labels=z["labels"], classes=z["classes"], ids=z["ids"], names=[str(x) for x in z["names"]],
                         orig_sizes=z["orig_sizes"])
        groups = {k: int(g) for k, g in zip(raw.keys, z["scan_group"]) if g >= 0}
        return raw, z["curated"].astype(bool), groups


def first_per_class(arrays: BusiArrays, limit: int) -> BusiArrays:
    """The first ``limit`` images of each class, as ``train.load_data`` keeps them (0: all)."""
    if not limit:
        return arrays
    keep = np.concatenate([np.flatnonzero(arrays.labels == k)[:limit] for k in range(len(CLASSES))])
    return arrays.subset(np.sort(keep))


# ----------------------------------------------------------------------------- training

def configs(study: str, a) -> list[TrainConfig]:
    """The resolved configurations of a study (``a``: the parsed arguments)."""
    from mtbc_lib.studies.ablation import SETTINGS
    from mtbc_lib.studies.leakage import DESIGNS, design_config

    common = dict(profile=a.profile, limit=a.limit, **({"epochs": a.epochs} if a.epochs else {}))
    if study == "leakage":
        return [design_config(d, backbone="unetplusplus", out_dir=f"{a.results}/leakage", **common) for d in DESIGNS]
    return [TrainConfig(backbone=study, out_dir=a.results, **SETTINGS[s], **common).resolve() for s in SETTINGS]


def finished(cfg: TrainConfig) -> list[int]:
    from mtbc_lib.engine.runs import run_paths

    return [k for k in cfg.folds if (run_paths(cfg)[0] / f"fold{k}_metrics.json").exists()]


def train(a) -> int:
    from mtbc_lib.data.splits import make_splits
    from mtbc_lib.engine import batched
    from mtbc_lib.engine.train import TrainingDiverged

    t0 = time.time()
    deadline = t0 + 60 * (a.minutes - a.reserve_minutes)
    raw, curated, groups = load(a.arrays)
    size = PROFILES[a.profile]["image_size"]
    if raw.images.shape[1] != size:
        raise ValueError(f"--arrays {a.arrays}: images are {raw.images.shape[1]} px; profile {a.profile!r} trains on "
                         f"{size} px (export them with --size {size})")
    data = {"paper": first_per_class(raw.subset(curated), a.limit), "none": first_per_class(raw, a.limit)}

    def splits(cfg, arrays):  # the audit's same-scan groups travel in the .npz
        return make_splits(cfg, arrays, groups)

    for tar in sorted(a.have.glob("*.tar")) if a.have else []:  # an earlier call's results
        with tarfile.open(tar) as t:
            t.extractall(REPO_ROOT, filter="data")
    try:
        for study in a.studies:
            if time.time() >= deadline:
                print(f"== {study}: not started (budget spent)", flush=True)
                continue
            cfgs = configs(study, a)
            todo = [c for c in cfgs if len(finished(c)) < len(c.folds)]
            print(f"== {study}: {len(todo)} of {len(cfgs)} runs to train, {(deadline - time.time()) / 60:.1f} min "
                  "left", flush=True)
            try:
                batched.run_many(todo, arrays=lambda c: data[c.curation], device=a.device, splits=splits,
                                 max_members=a.max_members, deadline=deadline, checkpoint_every=0, compile=a.compile)
            except TrainingDiverged as e:  # the others of the study are finished and written
                print(f"== {study}: {e}", flush=True)
    finally:  # whatever finished goes back
        pack(a)
        print(f"gpu: {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


def pack(a) -> None:
    """One tar per study under --out: its runs' finished folds (the fold files, config.json,
    summary.json), with paths from the repository root; a table of what is finished."""
    from mtbc_lib.engine.runs import repo_relative, run_paths

    a.out.mkdir(parents=True, exist_ok=True)
    for study in STUDIES:
        files, rows = [], []
        for cfg in configs(study, a):
            run_dir, done = run_paths(cfg)[0], finished(cfg)
            rows.append(f"  {cfg.run_name}: folds {done or 'none'} of {cfg.folds}")
            if done:
                files += [p for p in (run_dir / "config.json", run_dir / "summary.json") if p.exists()]
                files += [p for k in done for p in sorted(run_dir.glob(f"fold{k}_*"))]
        print(f"{study}:\n" + "\n".join(rows), flush=True)
        if files:
            def write(p: Path, files=files) -> None:
                with tarfile.open(p, "w") as t:
                    for f in files:
                        t.add(f, arcname=repo_relative(f))
            atomic_write(a.out / f"{study}.tar", write)


# ----------------------------------------------------------------------------- benchmark

def bench(a) -> int:
    """Images per second of one training step of K stacked networks: vmapped against looped
    over the members (the loop is what one training at a time computes), fp32 against bf16
    autocast; a table (wall and this process's CPU milliseconds per step, on a GPU the CPU time
    is the launching; TFLOP/s = the FLOPs of a training image, counted by
    ``torch.utils.flop_counter``, times images/s)."""
    import torch

    from mtbc_lib.data.augment import augment_theta
    from mtbc_lib.engine.device import resolve_device
    from mtbc_lib.engine.stacked import Stack
    from mtbc_lib.losses import MultiTaskLoss
    from mtbc_lib.networks.registry import build_model

    dev, b, s = resolve_device(a.device), 2, a.size
    gen = torch.Generator().manual_seed(0)
    X = torch.randint(0, 256, (64, 1, s, s), dtype=torch.uint8, generator=gen).to(dev)
    M, Y = (torch.rand(64, 1, s, s, generator=gen) > 0.7).to(torch.uint8).to(dev), torch.arange(64).remainder(3).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    flops = _training_flops(build_model(a.backbone, "mt", width=a.width), s)
    print(f"one training step, {a.backbone} mt at width {a.width:g}, {s}x{s} px, batch {b} per member, {name}, "
          f"{torch.get_num_threads()} threads; {flops / 1e9:.2f} GFLOP a training image (forward + backward)")
    print(f"{'K':>3} {'mode':>5} {'dtype':>5} {'ms/step':>9} {'CPU ms':>8} {'images/s':>9} {'TFLOP/s':>8} {'vs loop':>8}")
    for k in a.members:
        torch.manual_seed(0)
        models = [build_model(a.backbone, "mt", width=a.width) for _ in range(k)]
        step = {"idx": torch.randint(0, 64, (k, b), generator=gen).to(dev), "weight": torch.ones(k, b, device=dev),
                "theta": augment_theta(torch.rand(k * b, 3, generator=gen)).view(k, b, 2, 3).to(dev),
                "counts": [b] * k, **{n: torch.full((k,), v, device=dev) for n, v in
                                      (("step_size", 1e-4), ("bc2_sqrt", 0.03), ("decay", 1.0))}}
        loop_rate = {}
        for dtype in ("fp32", "bf16"):
            for vmap in (False, True):
                try:
                    stack = Stack(models, dev, MultiTaskLoss("mt"), amp=dtype == "bf16", vmap=vmap,
                                  compile=a.compile if vmap else "")
                    sums = torch.zeros(k, 5, dtype=torch.float64, device=dev)
                    for _ in range(2):  # warm-up (and compilation)
                        stack.train_step(X, M, Y, step, sums)
                    sync()
                    t, c = time.perf_counter(), time.process_time()
                    for _ in range(a.steps):
                        stack.train_step(X, M, Y, step, sums)
                    sync()
                    dt, cpu = (time.perf_counter() - t) / a.steps, (time.process_time() - c) / a.steps
                except torch.cuda.OutOfMemoryError:
                    print(f"{k:>3} {'vmap' if vmap else 'loop':>5} {dtype:>5} {'out of memory':>37}", flush=True)
                    continue
                finally:
                    stack = None
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                rate = k * b / dt
                loop_rate.setdefault(dtype, rate)
                print(f"{k:>3} {'vmap' if vmap else 'loop':>5} {dtype:>5} {1e3 * dt:>9.1f} {1e3 * cpu:>8.1f} "
                      f"{rate:>9.1f} {rate * flops / 1e12:>8.3f} {rate / loop_rate[dtype]:>7.2f}x", flush=True)
    return 0


def _training_flops(model, size: int) -> float:
    """FLOPs of one training image (forward and backward of a batch of 2, halved), counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mtbc_lib.losses import MultiTaskLoss

    x, m = torch.rand(2, 1, size, size), (torch.rand(2, 1, size, size) > 0.7).float()
    with FlopCounterMode(display=False) as counter:
        loss, _ = MultiTaskLoss("mt")(model.train()(x), m, torch.tensor([0, 1]))
        loss.backward()
    return counter.get_total_flops() / 2


# ----------------------------------------------------------------------------- command line

def unpack(tars: Path) -> list[str]:
    """Extract every tar of a folder (what a GPU call packed) into the repository; returns
    the run folders it held."""
    where = Path(tars)
    tars = sorted(where.glob("*.tar")) if where.is_dir() else [where]
    if not tars or not all(t.is_file() for t in tars):
        raise FileNotFoundError(f"--unpack {where}: expected a .tar or a folder of them (the --out of a GPU call)")
    runs = set()
    for tar in tars:
        with tarfile.open(tar) as t:
            runs |= {str(Path(m.name).parent) for m in t.getmembers() if m.isfile()}
            t.extractall(REPO_ROOT, filter="data")
    return sorted(runs)


def run(a) -> int:
    """``mtbc gpu`` with its parsed arguments (see mtbc_lib.cli): export, unpack, bench or train."""
    if a.unpack:
        for name in unpack(a.unpack):
            print(f"unpacked {name}")
        return 0
    if a.export:
        export(a.export, a.size, a.data)
        return 0
    if a.bench:
        a.members = [int(k) for k in a.members.split(",")]
        if a.size % 32 or min(a.members) < 1 or a.steps < 1:
            raise ValueError("--bench: expected --size a multiple of 32, --members and --steps positive")
        return bench(a)
    if not (a.arrays and a.out):
        raise ValueError("training needs --arrays and --out (or give --export, or --bench)")
    a.studies = [s for s in a.studies.split(",") if s]
    bad = [s for s in a.studies if s not in STUDIES] + ([a.profile] if a.profile not in PROFILES else [])
    if Path(a.results).is_absolute() or ".." in Path(a.results).parts:
        raise ValueError(f"--results {a.results}: expected a folder inside the repository, relative to it")
    if bad or a.minutes <= a.reserve_minutes:
        raise ValueError(f"expected --studies out of {', '.join(STUDIES)}, --profile out of {', '.join(PROFILES)} "
                         f"and --minutes above --reserve-minutes (got {', '.join(bad) or a.minutes})")
    return train(a)
