"""Speed and memory of every backbone and task on this CPU.

    .venv/bin/python benchmarks/bench_models.py [--batch 16] [--size 128] [--warmup 2] [--steps 5]

For each backbone and task ("seg", "cls", "mt"; with the backbone's default deep
supervision), at size×size with one input channel, batch ``--batch``, five
measurements, each in its own fresh subprocess:

- ``train fp32``: forward + the task's loss (λ = 0.35 for "mt") + backward + Adam step, fp32;
- ``train fp32+CL``: the same with model and input in channels-last memory format;
- ``train bf16+CL``: channels-last under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  (loss in fp32, weights fp32): what the engine's ``amp="auto"`` runs on a CPU with AMX;
- ``infer fp32`` / ``infer bf16+CL``: eval mode, ``torch.inference_mode``, forward only.

Images/s = batch × timed steps / wall time of the timed steps (after ``--warmup``
untimed steps); the speed-up column is train bf16+CL over train fp32. Memory: ``peak RSS`` is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
of that subprocess at its end — the peak resident memory of the whole process (Python,
torch libraries, model, optimizer state, activations, allocator caches), so it includes
the process baseline (see the base RSS column: about 1 GB here); ``base RSS`` is the RSS
right after the model and data are built, before the first step, so ``peak − base``
approximates what the steps themselves need. One table is printed and written to
``benchmarks/results/bench_models.md`` (markdown) and ``bench_models.csv``.

The numbers are wall-clock on a shared machine: the load average before and after is
recorded with the table, since other processes compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mtbc_lib.core import atomic_write
from mtbc_lib.provenance import hardware

MODES = ("train fp32", "train fp32+CL", "train bf16+CL", "infer fp32", "infer bf16+CL")
RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def worker(backbone: str, task: str, mode: str, batch: int, size: int, warmup: int, steps: int) -> dict:
    """Run one measurement in this process and return its numbers."""
    import torch

    from mtbc_lib.losses import MultiTaskLoss
    from mtbc_lib.networks.registry import build_model, count_parameters

    torch.manual_seed(0)
    bf16, channels_last = "bf16" in mode, mode.endswith("+CL")
    train = mode.startswith("train")
    model = build_model(backbone, task)
    x = torch.rand(batch, 1, size, size)
    mask = torch.zeros(batch, 1, size, size)
    mask[::2, :, size // 4: size // 2, size // 4: size // 2] = 1
    label = torch.arange(batch) % 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = MultiTaskLoss(task)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if train else None
    model.train(train)
    base = _rss_mib()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        if train:
            loss, _ = loss_fn(out, mask, label)  # losses cast to fp32 internally
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    ctx = torch.enable_grad() if train else torch.inference_mode()
    with ctx:
        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    return {"backbone": backbone, "task": task, "mode": mode, "params": count_parameters(model),
            "images_per_s": batch * steps / dt, "step_s": dt / steps,
            "base_rss_mib": base, "peak_rss_mib": peak, "threads": torch.get_num_threads()}


def run_all(args) -> list[dict]:
    from mtbc_lib.networks.registry import BACKBONES, TASKS

    rows = []
    for backbone, task, mode in ((b, t, m) for b in BACKBONES for t in TASKS for m in MODES):
        cmd = [sys.executable, __file__, "--worker", backbone, task, mode, "--batch", str(args.batch),
               "--size", str(args.size), "--warmup", str(args.warmup), "--steps", str(args.steps)]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"bench_models: {backbone} / {task} / {mode} failed:\n{res.stderr[-2000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {backbone:16s} {task:3s} {mode:14s} {row['images_per_s']:7.2f} img/s  "
              f"peak {row['peak_rss_mib']:7.0f} MiB  ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> list[list[str]]:
    """One line per backbone and task: parameters, images/s of the five modes, the bf16+CL
    speed-up in training, peak/base RSS."""
    header = ["backbone", "task", "params (M)", "train fp32 img/s", "train fp32+CL img/s", "train bf16+CL img/s",
              "infer fp32 img/s", "infer bf16+CL img/s", "train speed-up bf16+CL",
              "peak RSS train fp32 (MiB)", "peak RSS train bf16+CL (MiB)",
              "peak RSS infer fp32 (MiB)", "base RSS (MiB)"]
    out = [header]
    for backbone, task in dict.fromkeys((r["backbone"], r["task"]) for r in rows):
        by = {r["mode"]: r for r in rows if (r["backbone"], r["task"]) == (backbone, task)}
        out.append([backbone, task, f"{by['train fp32']['params'] / 1e6:.2f}"]
                   + [f"{by[m]['images_per_s']:.2f}" for m in MODES]
                   + [f"{by['train bf16+CL']['images_per_s'] / by['train fp32']['images_per_s']:.2f}×"]
                   + [f"{by[m]['peak_rss_mib']:.0f}" for m in ("train fp32", "train bf16+CL", "infer fp32")]
                   + [f"{by['train fp32']['base_rss_mib']:.0f}"])
    return out


def markdown(tab: list[list[str]]) -> str:
    """The table as two markdown tables, speed and memory (each narrow enough for a page)."""
    def md(cols):
        rows = [[r[c] for c in cols] for r in tab]
        return "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in cols) + "|"]
                         + ["| " + " | ".join(r) + " |" for r in rows[1:]])

    head = tab[0]
    speed = [k for k, h in enumerate(head) if "RSS" not in h]
    memory = [0, 1] + [k for k, h in enumerate(head) if "RSS" in h]
    return f"Speed:\n\n{md(speed)}\n\nMemory:\n\n{md(memory)}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--worker", nargs=3, metavar=("BACKBONE", "TASK", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.batch, args.size, args.warmup, args.steps)))
        return

    import torch

    from mtbc_lib.engine.device import resolve_amp

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    print(f"bench_models: every backbone and task, {args.size}x{args.size}, batch {args.batch}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, one subprocess per cell", flush=True)
    rows = run_all(args)
    load1 = os.getloadavg()
    tab = table(rows)
    cpu = hardware()["cpu"]
    meta = (f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in one run "
            f"({time.perf_counter() - t0:.0f} s) on {cpu}, {os.cpu_count()} logical CPUs, "
            f"torch {torch.__version__} with {rows[0]['threads']} threads, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()} (the engine's amp='auto' "
            f"{'uses' if resolve_amp('auto', torch.device('cpu')) else 'does not use'} bf16 here); every backbone and task, "
            f"{args.size}×{args.size}×1, batch {args.batch}, {args.warmup} warm-up + {args.steps} timed steps. "
            f"Load average {load0[0]:.2f} before, {load1[0]:.2f} after (its own load included): "
            + ("other jobs were using the cores when it began, so treat speeds as lower bounds. "
               if load0[0] > 0.5 else "no other job was using the cores when it began. ")
            + "Peak RSS = ru_maxrss of a fresh process per cell (whole process: Python, torch, "
            "libraries, model, optimizer, activations); base RSS = RSS after building model and "
            "batch, before the first step, so peak − base ≈ what the steps need.")
    md = markdown(tab)
    atomic_write(RESULTS / "bench_models.md", lambda p: p.write_text(f"# Model speed and memory (CPU)\n\n{meta}\n\n{md}\n"))
    atomic_write(RESULTS / "bench_models.csv", lambda p: p.write_text("\n".join(",".join(r) for r in tab) + "\n"))
    print()
    print(md)
    print()
    print(meta)
    print(f"written: {RESULTS / 'bench_models.md'}, {RESULTS / 'bench_models.csv'}")


if __name__ == "__main__":
    main()
