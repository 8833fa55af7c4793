"""Device selection (`device=auto|cpu|cuda|cuda:N`): one check (configs) and one resolution (strategies); and
the machine in one line (`rtl.machine`, so a report can say where a suite ran)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import one_of

DEVICES = ("auto", "cpu", "cuda")


def check_device(name) -> str:
    """`name` if it is a device we accept (auto, cpu, cuda, cuda:N), else ConfigError; no torch needed."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise one_of("device", name, DEVICES)
    return name


def resolve_device(name: str = "auto"):
    """The torch.device for `name`; a CUDA device that is not visible is refused in one line."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise one_of("device", name, ("auto", "cpu") + (" (no CUDA device is visible)",))
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 avx512_bf16 or AMX tiles, arm64 `bf16`): there a bf16
    autocast training step is faster than fp32 (cnn4 1.7x here, docs/benchmarks.md); elsewhere oneDNN
    emulates bf16 and it is slower. torch's own probes first, /proc/cpuinfo's flags where they are missing."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        if any(probe() for probe in probes if probe is not None):
            return True
    except RuntimeError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def cpu_model() -> str:
    """/proc/cpuinfo's "model name" (Linux), else what the standard library knows (e.g. arm64)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform   # the standard library's (this repo's platform/ folder is no package)

    return platform.processor() or platform.machine()


def machine_description() -> str:
    """"<cpu>, <n> cores, <m> GiB": tagged on suite and step runs (rtl.machine), so the wall times a report
    states say what they were measured on. Memory is left out where sysconf cannot tell it."""
    parts = [cpu_model(), f"{os.cpu_count()} cores"]
    try:
        parts.append(f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB")
    except (AttributeError, ValueError, OSError):
        pass
    return ", ".join(parts)
