"""Helpers shared by several test modules (``tests/`` is on ``sys.path``, see conftest.py):
tiny generated arrays and run configurations, a finished run's files as the engine leaves
them, a second process holding a fold, and the headless Chromium of the browser tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtbc_lib.core import CLASSES, NORMAL, REPO_ROOT
from mtbc_lib.data import BusiArrays
from mtbc_lib.engine import config, runs
from mtbc_lib.engine.config import PROFILES, TrainConfig
from mtbc_lib.studies import ablation


def tiny_arrays(n_per_class: int = 8, size: int = 32, seed: int = 0) -> BusiArrays:
    """Generated BUSI-like arrays: noisy background, a bright disc (benign) or a darker
    disc (malignant), nothing for normal images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks, labels, classes, ids = [], [], [], [], []
    for k, c in enumerate(CLASSES):
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size)).astype(np.uint8)
            m = np.zeros((size, size), bool)
            if c != "normal":
                r = int(rng.integers(4, size // 3))
                cy, cx = rng.integers(r, size - r, 2)
                m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                img[m] = 200 if c == "benign" else 130
            images.append(img), masks.append(m), labels.append(k), classes.append(c), ids.append(i + 1)
    return BusiArrays(images=np.stack(images), masks=np.stack(masks), labels=np.array(labels, np.int64),
                      classes=np.array(classes), ids=np.array(ids, np.int64),
                      names=[f"{c} ({i})" for c, i in zip(classes, ids)],
                      orig_sizes=np.full((len(ids), 2), size, np.int64))


def tiny_config(out_dir, **kw) -> config.TrainConfig:
    base = dict(backbone="nnunet-planned", task="mt", oversampling=True, epochs=3, patience=10, batch_size=4,
                lr=1e-3, image_size=32, n_folds=2, out_dir=str(out_dir / "results"), run_name="tiny", profile="fast",
                device="cpu", eval_batch_size=16, num_threads=1)  # tiny ops: 1 thread is faster
    return config.TrainConfig(**(base | kw))


def fold_files(run_dir, k):
    return {"test": pd.read_csv(run_dir / f"fold{k}_test.csv"),
            "metrics": json.loads((run_dir / f"fold{k}_metrics.json").read_text()),
            "history": pd.read_csv(run_dir / f"fold{k}_history.csv"),
            "masks": runs.load_masks(run_dir / f"fold{k}_masks.npz")}


def holder(lock, seconds=60):
    """A second process that holds ``lock`` (through runs.hold) and sleeps."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from mtbc_lib.engine import runs
        with runs.hold(Path({str(lock)!r}), "test run fold 0"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def write_run(root, name, rows_per_fold, folds=(0, 1)):
    """A finished run as the engine leaves it: fold<k>_test.csv files and summary.json."""
    d = root / name
    d.mkdir(parents=True)
    for k in folds:
        pd.DataFrame(rows_per_fold(k)).to_csv(d / f"fold{k}_test.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"folds": list(folds)}))
    for setting, params in ablation.SETTINGS.items():  # config.json, for a grid run's name
        for profile in PROFILES:
            if name == ablation.run_name("unet-r34", setting, profile):
                cfg = TrainConfig(backbone="unet-r34", profile=profile, **params).resolve()
                (d / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    return d


TRUTH = {"class": ["benign", "malignant", "normal", "normal"], "id": [1, 2, 3, 4], "label": [0, 1, NORMAL, NORMAL]}


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def chromium() -> str:
    path = os.environ.get("MTBC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"{path}: Chromium not found; install it (apt-get install chromium) or set MTBC_CHROMIUM")
    return path


def write_noise_busi(root: Path, n_per_class: int = 6, size: int = 64, seed: int = 0) -> Path:
    """A BUSI-layout folder of distinct images (independent noise: no two are copies, and
    each has keypoints), benign and malignant ones with a square lesion mask."""
    from conftest import write_png

    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        for i in range(1, n_per_class + 1):
            write_png(root / cls / f"{cls} ({i}).png", rng.integers(0, 256, (size, size), dtype=np.uint8), "L")
            mask = np.zeros((size, size), np.uint8)
            if cls != "normal":
                mask[size // 4: size // 2, size // 4: size // 2 + i] = 255
            write_png(root / cls / f"{cls} ({i})_mask.png", mask, "L")
    return root
