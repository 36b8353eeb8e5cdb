"""The duplicate search's caches, in ``core.cache_dir()``: per-image features and verified
pairs (so that a second :func:`mtbc_lib.dedup.search.find_groups` decodes no PNG and aligns no pair
again), keyed by the files' names, sizes and mtimes and the settings; and the key of the
cached keep-lists and groups (:func:`mtbc_lib.dedup.search.keep_list`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from mtbc_lib import core
from mtbc_lib.core import atomic_write
from mtbc_lib.dedup import registration as reg

__all__ = ["VERSION", "KEEP_VERSION", "files_digest", "cache_paths", "load_features", "save_features", "load_pairs",
           "save_pairs", "data_key"]

VERSION = 3  # bump when the features or the verified pairs change (2: scale space by matrix products, float32 LK; 3: blurs by matrix products)
KEEP_VERSION = 2  # bump when the cached keep-lists and groups change (2: the rule "paper" became "drop-all")

#: Settings that change the per-image features (the rest only change the search).
_FEATURE_SETTINGS = ("size", "resample", "det_pixels", "keypoints", "extended")


def files_digest(index, h: "hashlib._Hash | None" = None) -> "hashlib._Hash":
    """sha256 (``h``, or a new one) updated with every file's name, size and mtime (images
    and masks)."""
    h = h or hashlib.sha256()
    for img, masks in zip(index["image"], index["masks"]):
        for p in (img, *masks):
            st = p.stat()
            h.update(f"{p.parent.name}/{p.name};{st.st_size};{st.st_mtime_ns}\n".encode())
    return h


def cache_paths(index, cfg) -> tuple[Path, Path]:
    """(features .npz, verified pairs .json) in ``core.cache_dir()`` for this folder and
    these settings: the features depend on the files and the feature settings, the
    verified pairs on the files and every setting."""
    files = files_digest(index).hexdigest()
    settings = dataclasses.asdict(cfg)
    feat = {k: settings[k] for k in _FEATURE_SETTINGS}
    fkey = hashlib.sha256(f"audit-features-v{VERSION};{json.dumps(feat, sort_keys=True)};{files}".encode())
    pkey = hashlib.sha256(f"audit-pairs-v{VERSION};{json.dumps(settings, sort_keys=True)};{files}".encode())
    d = core.cache_dir()
    return d / f"audit_features_{fkey.hexdigest()[:20]}.npz", d / f"audit_pairs_{pkey.hexdigest()[:20]}.json"


def _pack_features(prep: list[dict]) -> dict[str, np.ndarray]:
    """The per-image features as a few flat arrays (no full-resolution image)."""
    det_shape = np.array([p["det"].shape for p in prep], dtype=np.int64).reshape(-1, 2)
    return {
        "thumb": np.stack([p["thumb"] for p in prep]), "small": np.stack([p["small"] for p in prep]),
        "shape": np.array([p["shape"] for p in prep], dtype=np.int64).reshape(-1, 2),
        "scale": np.array([p["scale"] for p in prep], dtype=np.float64).reshape(-1, 2),
        "det_shape": det_shape,
        "det": np.concatenate([p["det"].ravel() for p in prep]),
        "det_mask": np.packbits(np.concatenate([p["det_mask"].astype(bool).ravel() for p in prep])),
        "kp_count": np.array([len(p["kp"]) for p in prep], dtype=np.int64),
        "kp": np.concatenate([p["kp"] for p in prep]).reshape(-1, 3).astype(np.float32),
        "desc": np.concatenate([p["desc"] for p in prep]).reshape(-1, reg.DESC * reg.DESC).astype(np.float32),
    }


def _unpack_features(f) -> list[dict]:
    """Inverse of :func:`_pack_features`."""
    sizes = f["det_shape"].prod(axis=1)
    starts = np.r_[0, np.cumsum(sizes)]
    mask = np.unpackbits(f["det_mask"], count=int(starts[-1])).astype(bool)
    kstarts = np.r_[0, np.cumsum(f["kp_count"])]
    out = []
    for k in range(len(f["thumb"])):
        shp = tuple(int(v) for v in f["det_shape"][k])
        a, b = starts[k], starts[k + 1]
        out.append({"thumb": f["thumb"][k], "small": f["small"][k], "shape": tuple(int(v) for v in f["shape"][k]),
                    "scale": tuple(float(v) for v in f["scale"][k]),
                    "det": f["det"][a:b].reshape(shp), "det_mask": mask[a:b].reshape(shp),
                    "kp": f["kp"][kstarts[k]:kstarts[k + 1]], "desc": f["desc"][kstarts[k]:kstarts[k + 1]]})
    return out


def load_features(path: Path):
    try:
        with np.load(path) as f:
            return _unpack_features({k: f[k] for k in f.files})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache file (truncated, empty...) is recomputed


def save_features(path: Path, prep: list[dict]) -> None:
    arrays = _pack_features(prep)

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)
    atomic_write(path, write)


def load_pairs(path: Path) -> tuple[dict[tuple[int, int], dict], list | None]:
    """Verified pairs and keypoint candidates of an earlier run with the same files and
    settings (({}, None) if none)."""
    try:
        saved = json.loads(path.read_text())
        pairs = {(int(a), int(b)): r for a, b, r in saved["pairs"]}
        matches = [(int(a), int(b), int(n), tuple(float(v) for v in p)) for a, b, n, p in saved["keypoint_pairs"]]
        return pairs, matches
    except (OSError, ValueError, TypeError, KeyError):
        return {}, None


def save_pairs(path: Path, scored: dict, matches: list) -> None:
    rows = [[a, b, {k: v for k, v in r.items() if v is None or np.isfinite(v)}] for (a, b), r in sorted(scored.items())]
    saved = {"pairs": rows, "keypoint_pairs": [[a, b, n, [float(v) for v in p]] for a, b, n, p in matches]}
    atomic_write(path, lambda p: p.write_text(json.dumps(saved)))


def data_key(data_dir, cfg) -> str:
    """Digest of the search settings and every file's name, size and mtime."""
    from mtbc_lib.data.busi import scan_busi

    h = hashlib.sha256(f"dedup-v{KEEP_VERSION};{json.dumps(dataclasses.asdict(cfg), sort_keys=True)}\n".encode())
    return files_digest(scan_busi(data_dir), h).hexdigest()[:20]

