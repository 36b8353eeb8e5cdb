"""Calibration run on a GPU: the paper's U-Net++, MT+DO, the paper's epoch budget.

What the CPU profiles cannot show is what the full budget buys. This script trains the
proposal setting (U-Net++ MT+DO) under the ``gpu`` profile (≤ 200 epochs, early stopping
50, plateau 20, batch 8, lr 2e-4) on one GPU, the four folds in parallel processes, each
with a training-time budget so that the whole run fits a short lease of the machine (a
fold that hits the budget stops there and says so: ``stopped = "time budget"``).

    # here, where the BUSI folder is: the curated 128-px arrays (the GPU machine gets no PNGs)
    python scripts/gpu_calibration.py prepare --out .devrun/curated_busi_128.npz
    # on the GPU machine
    python scripts/gpu_calibration.py train --arrays .devrun/curated_busi_128.npz \\
        --out-dir results/calibration --budget-minutes 6.5

Results land in ``<out-dir>/<run name>/`` like any run's (``mtbc_lib.engine.runs``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtbc_lib.data import (
    busi,  # noqa: E402
    curation,
)
from mtbc_lib.engine.config import TrainConfig  # noqa: E402


def config(out_dir: str, budget_minutes: float, ckpt_dir: str = "") -> TrainConfig:
    return TrainConfig(backbone="unetplusplus", task="mt", oversampling=True, profile="gpu",
                       budget_minutes=budget_minutes, out_dir=out_dir, ckpt_dir=ckpt_dir,
                       device="auto", deterministic=False, eval_batch_size=64)


def prepare(out: Path, data_dir: str | None) -> None:
    arrays = curation.curate(busi.load_busi(data_dir, size=128), "paper")
    out.parent.mkdir(parents=True, exist_ok=True)
    busi._save_npz(out, arrays)
    print(f"{out}: {len(arrays)} curated images, {out.stat().st_size / 1e6:.1f} MB")


def train_fold(arrays_path: Path, fold: int, out_dir: str, budget: float, ckpt_dir: str) -> None:
    from mtbc_lib.engine import train

    arrays = busi._load_npz(arrays_path)
    cfg = config(out_dir, budget, ckpt_dir)
    cfg.folds = [fold]
    train.run(cfg, arrays=arrays, progress=True)  # the fold log ends with its summary line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--data", default=None)
    for name in ("train", "fold"):
        b = sub.add_parser(name)
        b.add_argument("--arrays", type=Path, required=True)
        b.add_argument("--out-dir", required=True)
        b.add_argument("--budget-minutes", type=float, default=6.5)
        b.add_argument("--ckpt-dir", default="/dev/shm/mtbc-checkpoints" if os.path.isdir("/dev/shm") else "")
        b.add_argument("--fold", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.out, args.data)
        return 0
    if args.cmd == "fold":
        train_fold(args.arrays, args.fold, args.out_dir, args.budget_minutes, args.ckpt_dir)
        return 0
    t0 = time.time()
    procs = []
    for k in range(4):
        log = open(f"/tmp/fold{k}.log", "w")
        procs.append((k, log, subprocess.Popen(
            [sys.executable, __file__, "fold", "--arrays", str(args.arrays), "--out-dir", args.out_dir,
             "--budget-minutes", str(args.budget_minutes), "--ckpt-dir", args.ckpt_dir, "--fold", str(k)],
            stdout=log, stderr=subprocess.STDOUT)))
    rc = 0
    for k, log, proc in procs:
        rc |= proc.wait()
        log.close()
        print(f"--- fold {k} (exit {proc.returncode}), {time.time() - t0:.0f} s")
        print(Path(f"/tmp/fold{k}.log").read_text()[-3000:])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
