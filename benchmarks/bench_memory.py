"""Peak resident memory of `transfer` (feature cache) and `lwf` (stored z0) over repeated search trials.

A search runs many trials in one process (search/runner.py: in-process trials), so memory that a
trial leaves behind would add up. Here one process runs N trials of a head search (`transfer`,
MLP head, the frozen features read from the feature cache) or of an lwf search (`teacher=offline`:
stored z0), each with its own hyperparameters, and records after trials 1, 2, 4 and 8 the
process's peak RSS (VmHWM: the high-water mark of its address space) and its current RSS
(psutil). The row is peak after the last trial ÷ peak after the first: it must stay ≤ 1.05.

Target data: Tiny-ImageNet (../shared/data/tiny-imagenet-200.tar.gz, spec `tiny-imagenet`, 200
classes, 64×64 resized to the source's 32×32: `upsample=true`), `per_class` images per class,
transferred from a small-cnn source checkpoint (random weights: memory does not depend on what
they learnt). Each series runs in its own child process, so its high-water mark is its own.

    .venv/bin/python benchmarks/bench_memory.py [--quick] [--series transfer|lwf --trials 8 --json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Row, env_restored, print_rows  # noqa: E402  (first: see benchlib)

import torch  # noqa: E402

TARGET = "tiny-imagenet"
CHECKPOINTS = (1, 2, 4, 8)
BOUND = 1.05     # peak RSS after the last trial ÷ after the first


def tiny_imagenet_available() -> bool:
    from robust_transfer.data import default_data_dir

    d = default_data_dir()
    return (d / "tiny-imagenet-200.tar.gz").is_file() or (d / "tiny-imagenet-200").is_dir()


def peak_rss_mib() -> float:
    """This process's peak resident set size so far: VmHWM from /proc/self/status (Linux; per address
    space, so a fresh exec starts its own), else ru_maxrss. (ru_maxrss survives fork + exec on Linux:
    a child of a big parent would report the parent's peak.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024   # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def make_source(root: Path, num_classes: int = 10) -> str:
    from robust_transfer import create_model
    from robust_transfer.checkpoints import save_checkpoint

    torch.manual_seed(0)
    return str(save_checkpoint(root / "source", create_model("small-cnn", num_classes).eval(),
                               {"data_spec": "cifar10-jpeg", "classes": [str(i) for i in range(num_classes)]}))


def run_trial(kind: str, i: int, src: str, target: str, per_class: int, root: Path) -> None:
    """Trial i of a head search (transfer) or an lwf search: hyperparameters vary, data and source don't."""
    from robust_transfer.commands.common import resolve_source
    from robust_transfer.reporting import NullLogger

    common = dict(source_model=src, target=target, per_class=per_class, val_per_class=1, upsample=True, n_examples=32,
                  eval_steps=2, progress=False, device="cpu", checkpoint_dir=str(root / f"{kind}-{i}"))
    if kind == "transfer":
        from robust_transfer.config import TransferConfig
        from robust_transfer.strategies.transfer import transfer

        transfer(TransferConfig(**common, head="mlp", mlp_depth=1 + i % 2, width=512, dropout=0.1 * (i % 4),
                                lr=(0.01, 0.03, 0.1, 0.003)[i % 4], epochs=5, batch_size=64, feature_cache=True),
                 NullLogger(), source=resolve_source(src))
    else:
        from robust_transfer.config import LwfConfig
        from robust_transfer.strategies.lwf import lwf

        lwf(LwfConfig(**common, lambda_d=(0.01, 0.1, 1.0, 0.001)[i % 4], iterations=16, batch_size=64,
                      teacher="offline"), NullLogger(), source=resolve_source(src))
    shutil.rmtree(root / f"{kind}-{i}", ignore_errors=True)


def series(kind: str, *, trials: int = 8, target: str = TARGET, per_class: int = 5,
           checkpoints=CHECKPOINTS) -> dict:
    """Run `trials` trials in this process; peak and current RSS (MiB) after each trial in `checkpoints`."""
    root = Path(tempfile.mkdtemp(prefix=f"rtl-bench-memory-{kind}-"))
    try:
        src = make_source(root)
        out = {"kind": kind, "target": target, "per_class": per_class, "start_rss_mib": rss_mib(), "trials": [],
               "peak_mib": [], "rss_mib": [], "seconds": []}
        t0 = time.perf_counter()
        for i in range(1, trials + 1):
            run_trial(kind, i, src, target, per_class, root)
            gc.collect()
            if i in checkpoints or i == trials:
                out["trials"].append(i)
                out["peak_mib"].append(peak_rss_mib())
                out["rss_mib"].append(rss_mib())
                out["seconds"].append(time.perf_counter() - t0)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def child_series(kind: str, trials: int, target: str, per_class: int, timeout: float = 300) -> dict:
    """`series` in a fresh process (its own high-water mark); the result comes back as JSON."""
    cmd = [sys.executable, os.path.abspath(__file__), "--series", kind, "--trials", str(trials), "--target", target,
           "--per-class", str(per_class), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed (rc {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row_of(s: dict) -> Row:
    growth = s["peak_mib"][-1] / s["peak_mib"][0]
    what = ("head search: transfer, MLP head on the feature cache" if s["kind"] == "transfer"
            else "lwf search: teacher=offline (stored z0)")
    peaks = ", ".join(f"{n}: {p:,.0f}" for n, p in zip(s["trials"], s["peak_mib"]))
    cur = ", ".join(f"{n}: {p:,.0f}" for n, p in zip(s["trials"], s["rss_mib"]))
    return Row("Memory", f"peak RSS growth over trials, {s['kind']}",
               f"{what}; target {s['target']} per_class={s['per_class']} (upsampled to 32), small-cnn source; peak RSS "
               f"after trial N ÷ after trial 1, N = {s['trials'][-1]} (peak MiB after N trials: {peaks}; current RSS: "
               f"{cur})", growth, BOUND, "<=",
               note="a trial leaves memory behind (a growing cache or references kept across trials)")


def rows(quick: bool = False) -> tuple[list[Row], dict]:
    if quick:   # a synthetic image folder, 2 trials, in this process (a smoke test, not a measurement)
        from PIL import Image

        root = Path(tempfile.mkdtemp(prefix="rtl-bench-memory-quick-"))
        try:
            g = torch.Generator().manual_seed(0)
            for split in ("train", "val"):
                for c in range(3):
                    (root / "f" / split / f"c{c}").mkdir(parents=True)
                    for k in range(6):   # 1 per class goes to validation, 4 of the rest are trained on
                        px = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=g).numpy()
                        Image.fromarray(px).save(root / "f" / split / f"c{c}" / f"{k}.png")
            with env_restored("RTL_CACHE_DIR", root / "cache"):
                res = {k: series(k, trials=2, target=f"imagefolder:{root / 'f'}", per_class=4, checkpoints=(1, 2))
                       for k in ("transfer", "lwf")}
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return [row_of(s) for s in res.values()], res
    if not tiny_imagenet_available():
        return [Row("Memory", "peak RSS growth over trials", "Tiny-ImageNet not found under the data directory",
                    None, BOUND, "<=", note="n/a (no ../shared/data/tiny-imagenet-200.tar.gz)")], {}
    res = {k: child_series(k, 8, TARGET, 5) for k in ("transfer", "lwf")}
    return [row_of(s) for s in res.values()], res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny synthetic data, 2 trials (a smoke test)")
    ap.add_argument("--series", choices=("transfer", "lwf"), help="run one series in this process")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--target", default=TARGET)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the series as one JSON line (for the parent)")
    args = ap.parse_args(argv)
    if args.series:
        s = series(args.series, trials=args.trials, target=args.target, per_class=args.per_class)
        print(json.dumps(s) if args.json else s)
        return 0
    out, raw = rows(args.quick)
    for s in raw.values():
        print(s)
    print_rows(out, 44)
    return 0


if __name__ == "__main__":
    sys.exit(main())
