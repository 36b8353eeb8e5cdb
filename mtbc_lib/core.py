"""Shared constants, the one place that knows where the data lives, and the one atomic
file writer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

#: Class names in label-index order (label 0 = benign, 1 = malignant, 2 = normal).
CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")
NORMAL: int = CLASSES.index("normal")
#: The paper's seed for every split and for training.
SEED: int = 1993
#: Repository root (for the default data location next to a checkout).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(value: str | os.PathLike | None = None) -> Path:
    """The raw BUSI folder: ``value`` if given, else ``$MTBC_DATA``, else
    ``../shared/data/BUSI`` beside the repository. Raises with a one-line message
    saying what to set when none exists."""
    candidates = [value, os.environ.get("MTBC_DATA"), REPO_ROOT.parent / "shared" / "data" / "BUSI"]
    for c in candidates:
        if c:
            p = Path(c).expanduser()
            if p.is_dir():
                return p
            if c is not candidates[-1]:
                raise FileNotFoundError(
                    f"BUSI data folder {p} does not exist: set MTBC_DATA to the folder holding "
                    "benign/, malignant/, normal/ (Dataset_BUSI_with_GT, Al-Dhabyani et al. 2020)")
    raise FileNotFoundError(
        "BUSI data not found: set MTBC_DATA to the folder holding benign/, malignant/, normal/ "
        "(download Dataset_BUSI_with_GT, Al-Dhabyani et al. 2020, see README.md)")


def cache_dir() -> Path:
    """Where decoded/resized arrays and other derived data are cached
    (``$MTBC_CACHE``, default ``~/.cache/mtbc``)."""
    p = Path(os.environ.get("MTBC_CACHE", Path.home() / ".cache" / "mtbc")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (hidden, ending in ``.part``),
    then rename it over ``path``: readers never see a half-written file, and an
    interrupted write leaves the previous file. The file gets the usual permissions (the
    umask's), not mkstemp's 0600. Returns ``path``. (``write`` must write to exactly the
    path it is given: ``np.savez`` appends ``.npz`` to a path, so give it an open file.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_LITERALS = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set)
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def notebook_params(namespace: dict, valid) -> dict:
    """The parameters of a notebook from its ``globals()``, checked against ``valid``.

    Papermill injects parameters as a cell of assignments after the ``parameters`` cell
    and only *warns* about names the notebook does not declare. Every public global
    holding a literal (None, bool, number, str, list, tuple, dict) must therefore be a
    valid name: any other — a misspelt or unknown parameter — raises ValueError listing
    the valid names. Modules, functions, other objects, names starting with ``_`` and
    IPython's own are ignored. Call it before the notebook assigns any other global."""
    valid = list(valid)
    values, unknown = {}, []
    for k, v in namespace.items():
        if k.startswith("_") or k in _IPYTHON_NAMES or not isinstance(v, _LITERALS):
            continue
        (values.__setitem__(k, v) if k in valid else unknown.append(k))
    if unknown:
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(valid)}")
    return values
