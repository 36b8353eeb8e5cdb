"""Provenance of the executed notebooks stored in the book: what ran, where, with
which packages and for how long.

Timings come from the metadata papermill writes into every notebook it executes
(``metadata.papermill``: start/end time, duration, exception; ``cell.metadata.papermill``
per cell). Papermill does not record the machine, so :func:`stamp` adds it
(``metadata.mtbc.environment``: hardware and package versions) right after execution::

    papermill notebooks/dataset_audit.ipynb book/dataset_audit.ipynb
    mtbc stamp book/dataset_audit.ipynb

:func:`runs_table` reads every stored notebook of ``book/`` (what the reproducibility
page shows); it never executes anything and needs neither data nor network.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import nbformat

from mtbc_lib.core import REPO_ROOT, atomic_write

#: The executed notebooks of the book live here (``book/*.ipynb``, ``book/runs/*.ipynb``).
BOOK_DIR: Path = REPO_ROOT / "book"
#: Notebook metadata key under which :func:`stamp` records the environment.
METADATA_KEY: str = "mtbc"
#: Distributions whose versions are recorded (PyPI names), most result-relevant first.
PACKAGES: tuple[str, ...] = (
    "torch", "torchvision", "segmentation-models-pytorch", "dynamic-network-architectures",
    "numpy", "scipy", "scikit-learn", "scikit-image", "pandas", "pillow",
    "matplotlib", "seaborn", "plotly", "ipywidgets",
    "papermill", "nbclient", "ipykernel", "jupyter-book", "sphinx", "myst-nb",
)
#: Folders under book/ that never hold stored notebooks.
_SKIP_DIRS = {"_build", "_static", "_ext", ".ipynb_checkpoints", "__pycache__"}


# --------------------------------------------------------------------------- environment

def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution in ``names`` ("not installed" if absent),
    read from the installed metadata (nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def _memory_gib() -> float | None:
    limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    return round(min(limits) / 2**30, 1) if limits else None


def _gpus() -> list[str]:
    """GPU names from nvidia-smi (empty list when there is none or no driver)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [" ".join(line.split(",")).strip() for line in out.splitlines() if line.strip()]


def hardware() -> dict[str, object]:
    """The machine this process runs on: CPU model, usable cores, memory (GiB, the
    smaller of RAM and a cgroup limit), GPUs (names from nvidia-smi), OS."""
    return {
        "cpu": _cpu_model(),
        "cores": _cores(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }


def describe_hardware(hw: dict | None) -> str:
    """One line for a table: ``"2 cores AMD EPYC, 23.5 GiB, no GPU"``."""
    if not hw:
        return "not recorded"
    gpus = hw.get("gpus") or []
    gpu = ", ".join(gpus) if gpus else "no GPU"
    memory = f"{hw['memory_gib']} GiB" if hw.get("memory_gib") is not None else "? GiB"
    return f"{hw.get('cores', '?')} cores {hw.get('cpu', '?')}, {memory}, {gpu}"


def environment() -> dict[str, object]:
    """Hardware and package versions of this process, with the UTC time of recording."""
    return {
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "packages": package_versions(),
    }


def stamp(path: str | os.PathLike, env: dict | None = None) -> None:
    """Record ``env`` (default: :func:`environment` of this machine) in the notebook's
    metadata under ``mtbc.environment``; call it right after papermill executed the
    notebook, on the same machine. Rewrites the file atomically."""
    path = Path(path)
    nb = _read(path)
    if "papermill" not in nb.metadata:
        raise ValueError(f"{path}: not executed by papermill (no metadata.papermill); run papermill first")
    nb.metadata.setdefault(METADATA_KEY, {})["environment"] = env if env is not None else environment()
    atomic_write(path, lambda p: nbformat.write(nb, str(p)))


def execute_stamped(template: str | os.PathLike, out: str | os.PathLike, parameters: dict,
                    cwd: str | os.PathLike, keep_failed=None) -> Path:
    """Execute a notebook template by papermill, stamp it (:func:`stamp`) and move it into place.

    The notebook is executed into a per-process ``.<name>.<pid>.ipynb.part`` beside ``out`` (two
    processes never write the same file), so a failed or interrupted execution leaves the previous
    ``out`` as it was.

    Args:
        template: the notebook to execute.
        out: where the executed, stamped notebook goes.
        parameters: papermill parameters.
        cwd: the kernel's working folder.
        keep_failed: a function of the exception that says whether the failed ``.part`` stays
            beside ``out`` for inspection; None: it never stays.

    Returns:
        ``out`` as a Path.

    Raises:
        PapermillExecutionError: a cell of the notebook failed (and any error of papermill itself).
    """
    import papermill

    out = Path(out)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.ipynb.part")
    try:
        papermill.execute_notebook(str(template), str(tmp), parameters=parameters, cwd=str(cwd),
                                   progress_bar=False, kernel_name="python3")
        stamp(tmp)
    except BaseException as e:
        if keep_failed is None or not keep_failed(e):
            tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------- stored runs

@dataclass
class NotebookRun:
    """What one stored notebook says about its execution."""

    path: str                      # relative to the book folder, POSIX ("runs/x.ipynb")
    title: str                     # first Markdown heading
    status: str                    # "completed", "failed", "incomplete" or "not run by papermill"
    started: datetime | None       # UTC
    finished: datetime | None      # UTC
    duration_s: float | None       # papermill's total, seconds
    parameters: dict = field(default_factory=dict)   # papermill parameters injected
    kernel_python: str | None = None                 # language_info.version of the kernel
    environment: dict | None = None                  # from stamp(), None if not stamped
    cell_durations_s: list[float] = field(default_factory=list)  # per code cell, seconds


def stored_notebooks(book_dir: str | os.PathLike = BOOK_DIR) -> list[Path]:
    """Every ``.ipynb`` under ``book_dir`` (sorted, recursive), skipping build output,
    checkpoints and hidden files."""
    book_dir = Path(book_dir)
    if not book_dir.is_dir():
        raise FileNotFoundError(f"{book_dir}: book folder does not exist")
    found = []
    for p in book_dir.rglob("*.ipynb"):
        parts = p.relative_to(book_dir).parts
        if any(part in _SKIP_DIRS or part.startswith(".") for part in parts):
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.relative_to(book_dir).as_posix())


def _read(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for a broken file
        raise ValueError(f"{path}: not a readable notebook ({exc})") from exc


def _time(value) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def read_run(path: str | os.PathLike, book_dir: str | os.PathLike = BOOK_DIR) -> NotebookRun:
    """Provenance of one stored notebook (never raises for missing metadata: a
    notebook that papermill did not execute gets status "not run by papermill")."""
    path, book_dir = Path(path), Path(book_dir)
    nb = _read(path)
    pm = nb.metadata.get("papermill")
    rel = path.resolve().relative_to(book_dir.resolve()).as_posix()
    env = nb.metadata.get(METADATA_KEY, {}).get("environment")
    python = nb.metadata.get("language_info", {}).get("version")
    title = _title(nb, path.stem)
    if pm is None:
        return NotebookRun(rel, title, "not run by papermill", None, None, None,
                           kernel_python=python, environment=env)
    if pm.get("exception"):
        status = "failed"
    elif not pm.get("end_time") or pm.get("duration") is None:
        status = "incomplete"
    else:
        status = "completed"
    cells = [float(c.metadata.get("papermill", {}).get("duration") or 0.0)
             for c in nb.cells if c.cell_type == "code"]
    duration = pm.get("duration")
    return NotebookRun(
        path=rel, title=title, status=status,
        started=_time(pm.get("start_time")), finished=_time(pm.get("end_time")),
        duration_s=float(duration) if duration is not None else None,
        parameters=dict(pm.get("parameters") or {}), kernel_python=python,
        environment=env, cell_durations_s=cells)


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``"1 h 02 min"``, ``185`` -> ``"3 min 05 s"``, ``4.2`` -> ``"4.2 s"``."""
    if seconds is None:
        return "–"
    s = float(seconds)
    if round(s, 1) < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def training_seconds(parameters: dict, name: str, repo_root: str | os.PathLike = REPO_ROOT) -> float | None:
    """The training time of the run a stored training notebook shows: the sum over its
    finished folds of ``train_seconds`` in ``<out_dir>/<run_name>/fold<k>_metrics.json``
    (``out_dir`` and ``run_name`` from the notebook's papermill ``parameters``; ``name``, the
    notebook's stem, when it has no ``run_name``). None for a notebook that is no training
    run, or whose run has no finished fold here. A run page's papermill duration is the
    time its notebook last ran, which may only have read a finished run back."""
    import json

    if "task" not in parameters and "run_name" not in parameters:
        return None
    run_dir = Path(repo_root) / str(parameters.get("out_dir") or "results") / str(parameters.get("run_name") or name)
    seconds = []
    for f in sorted(run_dir.glob("fold*_metrics.json")):
        try:
            seconds.append(float(json.loads(f.read_text())["train_seconds"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sum(seconds) if seconds else None


def runs_table(book_dir: str | os.PathLike = BOOK_DIR, repo_root: str | os.PathLike | None = None):
    """One row per stored notebook (order of :func:`stored_notebooks`), columns
    ``notebook, title, status, started, duration, duration_s, training, training_s, hardware,
    python`` (``started`` as "YYYY-MM-DD HH:MM UTC"; ``duration``: how long papermill ran the
    notebook, ``training``: for a training run, the training time its folds' metrics record
    (:func:`training_seconds`, runs under ``repo_root``, default the folder above
    ``book_dir``), both human readable)."""
    import pandas as pd

    repo_root = Path(repo_root) if repo_root is not None else Path(book_dir).resolve().parent
    rows = []
    for path in stored_notebooks(book_dir):
        run = read_run(path, book_dir)
        env = run.environment or {}
        trained = training_seconds(run.parameters, path.stem, repo_root)
        rows.append({
            "notebook": run.path,
            "title": run.title,
            "status": run.status,
            "started": run.started.strftime("%Y-%m-%d %H:%M UTC") if run.started else "–",
            "duration": format_duration(run.duration_s),
            "duration_s": run.duration_s,
            "training": format_duration(trained),
            "training_s": trained,
            "hardware": describe_hardware(env.get("hardware")),
            "python": run.kernel_python or "–",
        })
    columns = ["notebook", "title", "status", "started", "duration", "duration_s", "training", "training_s",
               "hardware", "python"]
    return pd.DataFrame(rows, columns=columns)


def hardware_table(runs):
    """One row per distinct machine of :func:`runs_table`'s frame, columns
    ``hardware`` and ``notebooks`` (the notebooks it executed, comma separated)."""
    import pandas as pd

    rows = [{"hardware": hw, "notebooks": ", ".join(group["notebook"])}
            for hw, group in runs.groupby("hardware", sort=True)]
    return pd.DataFrame(rows, columns=["hardware", "notebooks"])


def packages_table(book_dir: str | os.PathLike = BOOK_DIR, names: tuple[str, ...] = PACKAGES):
    """Package versions: one row per package, column ``book build`` (this process) and
    ``notebook runs`` (the distinct versions recorded by :func:`stamp` in the stored
    notebooks, "not recorded" when none is stamped)."""
    import pandas as pd

    current = package_versions(names)
    recorded: dict[str, set[str]] = {name: set() for name in current}
    for path in stored_notebooks(book_dir):
        env = read_run(path, book_dir).environment
        for name, version in ((env or {}).get("packages") or {}).items():
            recorded.setdefault(name, set()).add(str(version))
    rows = [{"package": name,
             "notebook runs": ", ".join(sorted(recorded.get(name) or [])) or "not recorded",
             "book build": current[name]}
            for name in current]
    return pd.DataFrame(rows, columns=["package", "notebook runs", "book build"])


def markdown_table(frame) -> str:
    """A pandas frame as a Markdown pipe table (no index), for a ``text/markdown``
    output that the book renders as a native, themed table."""
    def cell(value) -> str:
        text = "–" if value is None or (isinstance(value, float) and value != value) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def execution_time_figure(runs):
    """Horizontal bar chart of how long each stored notebook took to execute.

    ``runs`` is :func:`mtbc_lib.provenance.runs_table`'s frame (columns ``notebook``,
    ``title``, ``status``, ``started``, ``duration``, ``duration_s``, ``hardware``);
    notebooks without a recorded duration are left out. The time axis turns
    logarithmic when the longest run is over 100 times the shortest (training runs
    take hours, audits minutes); its unit (seconds, minutes, hours) follows the longest
    run. Returns a ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    timed = runs.dropna(subset=["duration_s"])
    if timed.empty:
        raise ValueError("runs: no notebook with a recorded duration (execute them with papermill)")
    seconds = timed["duration_s"].astype(float)
    unit, scale = ("seconds", 1.0) if seconds.max() < 180 else \
        ("minutes", 60.0) if seconds.max() < 3 * 3600 else ("hours", 3600.0)
    values = seconds / scale
    colours = {"completed": "#2b6cb0", "failed": "#c53030", "incomplete": "#dd6b20"}
    fig = go.Figure()
    for status, part in timed.groupby("status", sort=False):
        fig.add_trace(go.Bar(
            x=values[part.index], y=part["notebook"], orientation="h", name=status,
            marker_color=colours.get(status, "#718096"),
            customdata=part[["title", "started", "duration", "hardware"]].to_numpy(),
            hovertemplate=("<b>%{y}</b><br>%{customdata[0]}<br>started %{customdata[1]}"
                           "<br>took %{customdata[2]}<br>%{customdata[3]}<extra></extra>"),
        ))
    positive = values[values > 0]
    log = len(positive) > 1 and positive.max() / positive.min() > 100
    fig.update_layout(
        height=160 + 30 * len(timed), margin=dict(l=10, r=10, t=40, b=40),
        title="Execution time of each stored notebook",
        xaxis_title=unit + (" (log scale)" if log else ""),
        xaxis_type="log" if log else "linear",
        yaxis=dict(autorange="reversed", automargin=True),
        barmode="overlay", showlegend=timed["status"].nunique() > 1, template="plotly_white",
    )
    return fig
