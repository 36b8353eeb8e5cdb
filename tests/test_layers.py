"""The layer rule of ARCHITECTURE.md: every import inside mtbc_lib points down the layers
(core → data → dedup → networks, losses, metrics, refine → engine → studies → report →
command line), there is no import cycle, every module sits in a layer, and the repository
cites no file outside itself."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "mtbc_lib"
#: Top-level module or subpackage of mtbc_lib -> its layer (lower layers never import higher ones).
LAYERS: dict[str, int] = {
    "": 0, "core": 1, "provenance": 1,
    "data": 2,
    "dedup": 3,
    "networks": 4, "losses": 4, "metrics": 4, "refine": 4,
    "engine": 5,
    "studies": 6,
    "report": 7,
    "cli": 8, "__main__": 8,
}


def module_name(path: Path) -> str:
    """``mtbc_lib/engine/train.py`` -> ``engine.train``; a package's ``__init__`` -> the package."""
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in LIB.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The mtbc_lib modules a module imports, at any level (imports inside functions too):
    ``from mtbc_lib.dedup import registration`` is the module ``dedup.registration``,
    ``from mtbc_lib.dedup import keep_list`` the package ``dedup``."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                raise AssertionError(f"{path.relative_to(REPO)}: relative import; mtbc_lib imports absolutely")
            if n.module == "mtbc_lib" or (n.module or "").startswith("mtbc_lib."):
                base = n.module[len("mtbc_lib."):] if n.module != "mtbc_lib" else ""
                for a in n.names:
                    sub = f"{base}.{a.name}".strip(".")
                    out.add(sub if sub in known else base)
        elif isinstance(n, ast.Import):
            out.update(a.name[len("mtbc_lib."):] for a in n.names if a.name.startswith("mtbc_lib."))
    return out


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_reader_tells_modules_from_names(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from mtbc_lib.dedup import registration, keep_list\nimport mtbc_lib.core\n"
                 "def f():\n    from mtbc_lib import networks\n")
    assert imports(p, {"dedup", "dedup.registration", "core", "networks"}) == {"dedup.registration", "dedup",
                                                                                "core", "networks"}


def test_every_module_sits_in_a_layer():
    loose = [m for m in modules() if m.split(".")[0] not in LAYERS]
    assert not loose, f"modules in no layer (add them to LAYERS and ARCHITECTURE.md): {', '.join(loose)}"


def test_every_import_points_down_the_layers():
    up = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
          for m, deps in graph().items() for d in sorted(deps) if layer(d) > layer(m)]
    assert not up, "imports pointing up the layers:\n" + "\n".join(up)


def test_mtbc_lib_has_no_import_cycle():
    c = cycle(graph())
    assert c is None, " -> ".join(c)


def test_every_subpackage_and_module_is_on_the_architecture_map():
    text = (REPO / "ARCHITECTURE.md").read_text()
    missing = [m for m in modules() if m and f"`{m}`" not in text]
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
