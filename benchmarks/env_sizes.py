"""Installed size of the environment this Python runs in, by part (docs/install.md's table): the runtime
set (requirements-runtime.txt), torch's CUDA wheels, what only the development lock adds. Not a speed
benchmark (run_all.py does not run it):

    .venv/bin/python benchmarks/env_sizes.py            # in the checkout

Sizes are the bytes of each installed package's files (its RECORD), GB = 10**9 bytes.
"""
from __future__ import annotations

import re
from importlib.metadata import distributions
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CUDA = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def _names(path: Path) -> set[str]:
    return {canonicalize_name(ln.split("==")[0]) for ln in path.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")}


def installed_bytes() -> dict[str, int]:
    out: dict[str, int] = {}
    for dist in distributions():
        files = [Path(str(dist.locate_file(f))) for f in dist.files or []]
        name = canonicalize_name(dist.metadata["Name"])
        out[name] = out.get(name, 0) + sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())
    return out


def main() -> None:
    runtime, lock = _names(REPO / "requirements-runtime.txt"), _names(REPO / "requirements.lock")
    size = installed_bytes()
    parts = {"runtime set": [n for n in size if n in runtime],
             "CUDA wheels": [n for n in size if CUDA.match(n)],
             "development only": [n for n in size if n in lock and n not in runtime and not CUDA.match(n)],
             "other (pip, setuptools, this package)": [n for n in size
                                                       if n not in lock and n not in runtime and not CUDA.match(n)]}
    for part, names in parts.items():
        print(f"{part:40s} {sum(size[n] for n in names) / 1e9:6.2f} GB  ({len(names)} packages)")
    print(f"{'all':40s} {sum(size.values()) / 1e9:6.2f} GB")
    if "torch" in size:
        print(f"{'  of which torch':40s} {size['torch'] / 1e9:6.2f} GB")


if __name__ == "__main__":
    main()
