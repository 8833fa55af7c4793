"""Transfer speed, measured side by side in one process on real data (cifar10-jpeg:half-b):

1. `transfer`, the paper's 50-epoch linear head (A.2): feature cache (z(x, θ*) computed once —
   the cache build is included, starting from an empty cache) versus re-running the frozen
   extractor over the training set every epoch (`feature_cache=false`).
2. `lwf`: stored z0 (`teacher=offline`, the paper's trick) versus `teacher=online`.

For the head, both arms get the same loaded source and data and only training is timed (decoding,
which both share, is not); an lwf run is timed whole (its final evaluation is one example). The
ratios are printed; `--write` puts the numbers into docs/benchmarks.md under "## Transfer".

    .venv/bin/python benchmarks/bench_transfer.py [--per-class 200] [--repeats 2] [--write]
"""
from __future__ import annotations

import argparse
import os
import platform as _stdlib_platform  # the standard library's (this repo's platform/ is no package)
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (imports robust_transfer before torch: passive OpenMP waiting)
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = "cifar10-jpeg:half-b"


def isolated_feature_cache() -> Path:
    """A fresh RTL_CACHE_DIR whose decoded-data cache is the user's (no re-decoding) but whose
    feature cache starts empty, so the cached arm pays for building it."""
    from robust_transfer.data import cache_dir

    shared = cache_dir()
    tmp = Path(tempfile.mkdtemp(prefix="rtl-bench-transfer-"))
    (shared / "decoded").mkdir(parents=True, exist_ok=True)
    (tmp / "decoded").symlink_to(shared / "decoded")
    if (shared / "file-hashes.json").is_file():
        shutil.copy(shared / "file-hashes.json", tmp / "file-hashes.json")
    os.environ["RTL_CACHE_DIR"] = str(tmp)
    return tmp


def make_source(tmp: Path) -> str:
    """A small-cnn 'source' with random weights: speed does not depend on what the weights learnt."""
    from robust_transfer import create_model
    from robust_transfer.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = create_model("small-cnn", 5).eval()
    return str(save_checkpoint(tmp / "source", model, {"data_spec": "cifar10-jpeg:half-a"}))


def time_head(source_uri: str, per_class: int, *, cached: bool, cache_root: Path) -> tuple[float, int]:
    """Seconds to train the 50-epoch linear head from a loaded source + data (cache build included): the
    transfer strategy's objective through the training engine's epochs (no validation check, no evaluation)."""
    from robust_transfer.commands.common import resolve_source
    from robust_transfer.config import TransferConfig
    from robust_transfer.data import BatchLoader
    from robust_transfer.device import resolve_device
    from robust_transfer.models import HeadSpec
    from robust_transfer.strategies import features
    from robust_transfer.strategies.common import FastPath, cpu_threads, make_sgd, on_device
    from robust_transfer.strategies.engine import train_epoch
    from robust_transfer.strategies.source_model import load_data, replace_head
    from robust_transfer.strategies.transfer import head_objective

    shutil.rmtree(cache_root / "features", ignore_errors=True)  # the cached arm builds its cache
    cfg = TransferConfig(source_model=source_uri, target=TARGET, per_class=per_class, epochs=50, batch_size=128,
                         feature_cache=cached, progress=False)
    device = resolve_device("auto")
    source = resolve_source(source_uri)
    train, _ = load_data(cfg.target, source, per_class=per_class, seed=0, upsample=False, progress=False)
    train.sha256()  # content hash once, outside the timing (load_dataset's callers all pay it)
    fast = FastPath.of(cfg, device, source.model.arch)
    model = on_device(replace_head(source.model, HeadSpec(), train.num_classes), device, fast)
    n0 = features.FEATURE_COMPUTATIONS
    start = time.perf_counter()
    objective = head_objective(model, train, cfg, device)
    loader = BatchLoader(train, cfg.batch_size, seed=cfg.seed, device=device, memory_format=fast.memory_format)
    opt, update = make_sgd(model.head.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay), 0
    with cpu_threads(objective.threads):
        for epoch in range(cfg.epochs):
            _, update = train_epoch(objective, opt, loader, epoch, update, fast=fast, lr_for=lambda u: cfg.lr,
                                    last=10**9)
    return time.perf_counter() - start, features.FEATURE_COMPUTATIONS - n0


def time_lwf(source_uri: str, per_class: int, iterations: int, *, teacher: str, cache_root: Path) -> float:
    """Seconds for a whole `lwf` run (z0 computation included; its final evaluation is 1 example, PGD-1)."""
    from robust_transfer.commands.common import resolve_source
    from robust_transfer.config import LwfConfig
    from robust_transfer.reporting import NullLogger
    from robust_transfer.strategies.lwf import lwf

    shutil.rmtree(cache_root / "features", ignore_errors=True)  # offline pays for computing z0
    cfg = LwfConfig(source_model=source_uri, target=TARGET, per_class=per_class, iterations=iterations,
                    teacher=teacher, lambda_d=0.01, progress=False, n_examples=1, eval_steps=1,
                    checkpoint_dir=str(cache_root / f"lwf-{teacher}"))
    start = time.perf_counter()
    lwf(cfg, NullLogger(), source=resolve_source(source_uri))
    return time.perf_counter() - start


def write_section(text: str, path: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace (or append) the "## Transfer" section, leaving every other section alone."""
    benchlib.write_section("Transfer", text, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the median is reported")
    ap.add_argument("--lwf-iterations", type=int, default=120)
    ap.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]  # a shared machine inflates absolute times: say how busy it was
    cache_root = isolated_feature_cache()
    try:
        src = make_source(cache_root)
        from robust_transfer.data import load_dataset

        load_dataset(TARGET, "train", progress=False)  # decode (or read the decoded cache) before timing
        cached_s, online_s, lwf_off, lwf_on = [], [], [], []
        for _ in range(args.repeats):
            t, built = time_head(src, args.per_class, cached=True, cache_root=cache_root)
            assert built == 1, "the cached arm must build its cache exactly once"
            cached_s.append(t)
            online_s.append(time_head(src, args.per_class, cached=False, cache_root=cache_root)[0])
            for teacher, out in (("offline", lwf_off), ("online", lwf_on)):
                out.append(time_lwf(src, args.per_class, args.lwf_iterations, teacher=teacher, cache_root=cache_root))
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)

    load = f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}"
    c, o = statistics.median(cached_s), statistics.median(online_s)
    lo, ln = statistics.median(lwf_off), statistics.median(lwf_on)
    n = args.per_class * 5
    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    machine = f"{_stdlib_platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {device}"
    print(f"transfer, 50-epoch linear head, small-cnn, {TARGET} per_class={args.per_class} ({n} images), batch 128:")
    print(f"  feature cache (build included): {c:7.2f} s   runs: {', '.join(f'{t:.2f}' for t in cached_s)}")
    print(f"  extractor every epoch:          {o:7.2f} s   runs: {', '.join(f'{t:.2f}' for t in online_s)}")
    print(f"  speed-up: {o / c:.1f}x")
    print(f"lwf, {args.lwf_iterations} iterations (warm start 0.5), same data:")
    print(f"  teacher=offline (stored z0):    {lo:7.2f} s   runs: {', '.join(f'{t:.2f}' for t in lwf_off)}")
    print(f"  teacher=online:                 {ln:7.2f} s   runs: {', '.join(f'{t:.2f}' for t in lwf_on)}")
    print(f"  speed-up: {ln / lo:.2f}x")
    print(f"({machine}; {load})")
    if args.write:
        write_section(
            "## Transfer\n\n"
            f"`.venv/bin/python benchmarks/bench_transfer.py --per-class {args.per_class} --repeats {args.repeats} "
            f"--lwf-iterations {args.lwf_iterations} --write` — {machine}; small-cnn source (random weights), "
            f"target `{TARGET}` with per_class={args.per_class} ({n} images), batch 128; median of "
            f"{args.repeats} interleaved runs ({load}); data decoding not timed (shared); the lwf runs are "
            "timed whole, z0 computation included.\n\n"
            "| comparison | fast arm | slow arm | speed-up |\n|---|---|---|---|\n"
            f"| `transfer`, 50-epoch linear head (paper A.2): feature cache (cache build included) vs the frozen "
            f"extractor re-run every epoch | {c:.2f} s | {o:.2f} s | **{o / c:.1f}×** |\n"
            f"| `lwf`, {args.lwf_iterations} iterations, warm start 0.5: stored z0 (`teacher=offline`) vs "
            f"`teacher=online` | {lo:.2f} s | {ln:.2f} s | **{ln / lo:.2f}×** |\n\n"
            "The cache removes 49 of the 50 passes of the extractor over the training set; what is left is one "
            "pass plus 50 epochs of a linear layer on 128-d vectors. LwF gains less: after the warm start the "
            "student's forward and backward passes dominate and only the teacher's forward pass is saved (during "
            "the warm start, offline trains the head on stored z0 with no extractor pass at all).\n")
        print("wrote the '## Transfer' section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
