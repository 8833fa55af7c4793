"""What every benchmark here shares: result rows, interleaved timing, the machine, the matmul peak.

Policy (docs/benchmarks.md): the machine these run on is shared and noisy, so every figure that
has a target is a RATIO of two things measured side by side in one process, interleaved
(A B A B ..., the order rotated each round), each summarised by the minimum of its repeats (the
least-disturbed run); medians are kept for the record. No absolute time is ever asserted.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import robust_transfer  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY=PASSIVE while libgomp can still read it)
import torch

from robust_transfer.device import cpu_model
from robust_transfer.strategies.common import cpu_threads

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


@dataclass
class Row:
    """One line of the results table. `value` None means not measured (n/a)."""

    section: str                 # "Training", "Attacks", "Data", "Transfer", ... (docs section)
    name: str
    measured_as: str
    value: float | None
    target: float | None = None  # None: for information only
    better: str = ""             # ">=" or "<=" (with a target)
    unit: str = "×"              # "×" for ratios; "img/s", "GFLOP/s" ... for information rows
    note: str = ""               # what limits it (shown when the row misses its target), or why n/a
    alt: float | None = None     # the same figure by the other clock (see CLOCK), for the record
    detail: dict = field(default_factory=dict)   # raw numbers (times, sizes) for the docs

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        if self.target is None:
            return "info"
        ok = self.value >= self.target if self.better == ">=" else self.value <= self.target
        return "PASS" if ok else "FAIL"

    def value_text(self) -> str:
        if self.value is None:
            return "n/a" + (f" ({self.note})" if self.note and self.target is not None and "not yet" in self.note else "")
        v = self.value
        text = (f"{v:.2g}" if abs(v) < 0.01 else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000
                else f"{v:,.0f}")
        return text if self.unit == "×" else f"{text} {self.unit}"

    def target_text(self) -> str:
        return "—" if self.target is None else f"{self.better} {self.target:g}"

    def as_dict(self) -> dict:
        return {"section": self.section, "name": self.name, "measured_as": self.measured_as, "value": self.value,
                "target": self.target, "better": self.better, "unit": self.unit, "status": self.status,
                "note": self.note, "alt": self.alt, "clock": CLOCK}


# The clock the ratios use: "cpu" = CPU seconds of this process (all its threads), "wall" = elapsed.
# On a shared machine wall time mostly measures the neighbours (load 8-10 on 2 cores made repeats of
# one arm differ by ±40% in wall time but ±5% in CPU time); with OMP_WAIT_POLICY=PASSIVE idle
# OpenMP threads burn no CPU, so CPU time is the work the code itself does. Both are recorded and
# docs/benchmarks.md shows both ratios; RTL_BENCH_CLOCK=wall makes wall time the primary one.
CLOCK = os.environ.get("RTL_BENCH_CLOCK", "cpu")
if CLOCK not in ("cpu", "wall"):
    raise SystemExit(f"RTL_BENCH_CLOCK={CLOCK!r}: use cpu or wall")


@dataclass
class Timings:
    """Per arm, the seconds of every timed repeat by both clocks."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def of(self, name: str, clock: str | None = None) -> list[float]:
        return (self.cpu if (clock or CLOCK) == "cpu" else self.wall)[name]

    def best(self, name: str, clock: str | None = None) -> float:
        """The least-disturbed repeat (min), floored at 1 µs so ratios stay finite."""
        return max(min(self.of(name, clock)), 1e-6)

    def median(self, name: str, clock: str | None = None) -> float:
        return statistics.median(self.of(name, clock))

    def ratio(self, num: str, den: str, clock: str | None = None) -> float:
        return self.best(num, clock) / self.best(den, clock)

    def other_ratio(self, num: str, den: str) -> float:
        """The same ratio by the other clock (for the record)."""
        return self.ratio(num, den, "wall" if CLOCK == "cpu" else "cpu")

    def names(self) -> list[str]:
        return list(self.wall)

    def summary(self, name: str) -> str:
        return f"wall {fmt_times(self.wall[name])} s; cpu {fmt_times(self.cpu[name])} s"


@contextlib.contextmanager
def env_restored(name: str, value: str | os.PathLike | None = None):
    """Within the block `name` is `value` (when given); afterwards it is what it was, or absent again."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def write_section(heading: str, text: str, path: Path) -> None:
    """Replace (or append) the `## <heading>` section of a Markdown file, leaving every other section alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {heading}"), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    path.write_text(new)


def print_rows(rows, width: int = 48) -> None:
    """One line per row: name, value, target, PASS/FAIL (each bench's `main`)."""
    for row in rows:
        print(f"{row.name:<{width}} {row.value_text():>14}  {row.target_text():>7}  {row.status}")


def interleaved(arms: dict[str, Callable[[], object]], repeats: int, *, warmup: int = 1) -> Timings:
    """Time each arm over `repeats` rounds, run A B C, B C A, C A B, ... (warm-up rounds untimed)."""
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            w, c = time.perf_counter(), time.process_time()
            arms[name]()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    return Timings(wall, cpu)


def fmt_times(ts: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in ts)


# Run a block with n intra-op threads, then restore: the package's own helper.
threads = cpu_threads




def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    except OSError:
        pass
    return ""


def machine() -> dict:
    import psutil

    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none"}


def real_data_available() -> bool:
    from robust_transfer.data import default_data_dir

    return (default_data_dir() / "cifar10-jpeg.tar.gz").is_file() or (default_data_dir() / "cifar10-jpeg").is_dir()


def finite_positive(x: float) -> bool:
    return x is not None and math.isfinite(x) and x > 0
