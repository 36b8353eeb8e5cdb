"""Check that every runtime dependency pinned in requirements-lock.txt has a wheel (or is pure
Python) for the platforms and Pythons researchers use: Linux x86-64 and aarch64, macOS arm64,
Windows x86-64; CPython 3.11, 3.12 and 3.13. Reads PyPI's simple index (JSON), downloads no
wheel. Prints one line per package that lacks one and exits 1 if any does.

    python scripts/check_wheels.py [--lock requirements-lock.txt] [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PLATFORMS = {"Linux x86-64": ("manylinux", "x86_64"), "Linux aarch64": ("manylinux", "aarch64"),
             "macOS arm64": ("macosx", "arm64"), "Windows x86-64": ("win", "amd64")}
PYTHONS = (11, 12, 13)
#: Installed by pip only where a marker asks for them (torch's CUDA libraries: Linux x86-64),
#: or not runtime dependencies (the test and benchmark extras, the optional fast-png decoder).
NOT_EVERYWHERE = re.compile(r"^(nvidia-.*|cuda-.*|triton|pywuffs|pytest|pytest-xdist|execnet|pluggy|iniconfig|playwright|greenlet|"
                            r"pyee|imagededup|pywavelets|ruff)$")


def wheels(name: str) -> list[str]:
    req = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return [f["filename"] for f in json.load(r)["files"]]


def fits(filename: str, version: str, py: int, system: str, arch: str) -> bool:
    if not filename.endswith(".whl"):
        return False
    parts = filename[:-4].split("-")
    if len(parts) < 5 or parts[1] != version:
        return False
    pys, abi, plats = parts[-3].split("."), parts[-2], parts[-1].split(".")
    if any(p.startswith("py3") or p == "py2.py3" for p in pys) and "none" in abi and "any" in plats:
        return True
    ok_py = any(p == f"cp3{py}" or (abi == "abi3" and p.startswith("cp3") and int(p[3:]) <= py)
                or p.startswith("py3") for p in pys)
    ok_plat = any(p.startswith(system) and p.endswith(arch) or (system == "macosx" and p.startswith("macosx")
                                                              and p.endswith("universal2")) for p in plats)
    return ok_py and ok_plat


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lock", default=Path(__file__).resolve().parents[1] / "requirements-lock.txt", type=Path)
    p.add_argument("--skip", nargs="*", default=[], metavar="NAME", help="packages not to check")
    a = p.parse_args(argv)
    pins = [line.split("==") for line in a.lock.read_text().split() if "==" in line]
    pins = [(n.lower(), v) for n, v in pins if not NOT_EVERYWHERE.match(n.lower()) and n.lower() not in a.skip]
    with ThreadPoolExecutor(8) as pool:
        files = dict(zip((n for n, _ in pins), pool.map(wheels, (n for n, _ in pins))))
    bad = 0
    for name, version in pins:
        missing = [f"{where} 3.{py}" for where, (system, arch) in PLATFORMS.items() for py in PYTHONS
                   if not any(fits(f, version, py, system, arch) for f in files[name])]
        if missing:
            bad += 1
            print(f"{name}=={version}: no wheel for {', '.join(missing)}")
    print(f"{len(pins) - bad} of {len(pins)} runtime dependencies have wheels for every platform and Python "
          f"3.{PYTHONS[0]}-3.{PYTHONS[-1]}" + ("" if not bad else f"; {bad} lack some"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
