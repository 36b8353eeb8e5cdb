"""The layout ARCHITECTURE.md promises: no import cycle in mtbc_lib, modules of a readable
size, and a repository that cites no file outside itself."""

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "mtbc_lib"
MAX_LINES = 420  # "about 400"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The mtbc_lib modules a module imports, at any level (function-level imports too)."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level == 1:
                out.update([n.module.split(".")[0]] if n.module else [a.name for a in n.names])
            elif n.module == "mtbc_lib":
                out.update(a.name for a in n.names)
            elif n.module and n.module.startswith("mtbc_lib."):
                out.add(n.module.split(".")[1])
        elif isinstance(n, ast.Import):
            out.update(a.name.split(".")[1] for a in n.names if a.name.startswith("mtbc_lib."))
    return (out & modules) - {path.stem}


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in LIB.glob("*.py")}
    return {p.stem: _imports(p, modules) for p in LIB.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_mtbc_lib_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(LIB.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_readable(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name}: {n} lines; split it by concept (ARCHITECTURE.md)"


def test_every_module_is_on_the_architecture_map():
    text = (REPO / "ARCHITECTURE.md").read_text()
    missing = [p.stem for p in LIB.glob("*.py") if p.stem != "__init__" and f"`{p.stem}`" not in text]
    assert not missing, f"ARCHITECTURE.md does not place: {', '.join(missing)}"


def test_the_repository_cites_no_file_outside_it():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for f in files:
        p = REPO / f
        if p.suffix in (".py", ".md", ".ipynb", ".yml", ".toml", ".cfg", ".txt") and p.is_file():
            text = p.read_text(errors="replace")
            if ("PAPER.md" in text or "DESIGN.md" in text) and not f.startswith("tests/"):  # tests look for them
                hits.append(f)
    assert not hits, f"files citing PAPER.md / DESIGN.md (not in the repository): {', '.join(hits)}"
