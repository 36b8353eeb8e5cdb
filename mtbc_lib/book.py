"""Build the book: the one command behind ``make book``, CI and the book tests.

``python -m mtbc_lib.book build`` runs ``jupyter-book build`` on the repository in
strict mode (warnings are errors, nitpicky, every warning reported before failing).
It executes no stored notebook and needs neither the BUSI data nor the network: only
the reproducibility page is computed, from the stored notebooks' metadata. The HTML
lands in ``_build/html``; plotly.js and MathJax are copied into ``_build/html/_static``
by the build itself (``book/_ext/mtbc_book.py``, ``sphinx-mathjax-offline``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mtbc_lib.config import REPO_ROOT

#: Where the HTML lands, relative to the repository root.
HTML_DIR = Path("_build") / "html"
#: Strict flags: -W warnings are errors, -n nitpicky, --keep-going reports them all.
STRICT_FLAGS: tuple[str, ...] = ("-W", "-n", "--keep-going")


def toc_docnames(root: str | Path = REPO_ROOT) -> list[str]:
    """Every page of ``root/_toc.yml`` as a Sphinx docname (``"book/intro"``), in reading
    order; ``glob`` entries are expanded against the ``.md``/``.ipynb`` files under
    ``root``. The built page of docname ``d`` is ``_build/html/d.html``."""
    import yaml

    root = Path(root)
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise FileNotFoundError(f"{toc_path}: no table of contents")
    docs: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    docs.append(Path(node[key]).with_suffix("").as_posix()
                                if Path(node[key]).suffix in (".md", ".ipynb") else str(node[key]))
            if "glob" in node:
                matches = {p.relative_to(root).with_suffix("").as_posix()
                           for suffix in (".md", ".ipynb") for p in root.glob(node["glob"] + suffix)}
                docs.extend(d for d in sorted(matches) if d not in docs and ".ipynb_checkpoints" not in d)
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)

    walk(yaml.safe_load(toc_path.read_text()))
    return docs


def jupyter_book() -> str:
    """The ``jupyter-book`` executable of this environment (beside ``sys.executable``,
    else on PATH)."""
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if not found:
        raise FileNotFoundError("jupyter-book not found: install the project (pip install -e '.[test]')")
    return found


def command(root: str | Path = REPO_ROOT, rebuild_all: bool = False) -> list[str]:
    """The build command line (a list for subprocess)."""
    return [jupyter_book(), "build", str(root), *STRICT_FLAGS, *(["--all"] if rebuild_all else [])]


def build(root: str | Path = REPO_ROOT, rebuild_all: bool = False, capture: bool = False,
          timeout: float | None = None) -> subprocess.CompletedProcess:
    """Build the book under ``root``; returns the finished process (``returncode`` 0 on
    success; output captured as text when ``capture``)."""
    return subprocess.run(command(root, rebuild_all), cwd=root, capture_output=capture,
                          text=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtbc_lib.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the HTML book into _build/html (strict)")
    p_build.add_argument("--all", action="store_true", help="re-build every page, not only changed ones")
    args = parser.parse_args(argv)
    try:
        return build(rebuild_all=args.all).returncode
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
