"""Data speed: the in-memory BatchLoader against training, and the decode-once cache.

1. BatchLoader images/s (shuffle + pad-4 crop + flip, float conversion and the channels_last copy the
   training loop makes) ÷ small-cnn natural-training images/s, interleaved in one process.
2. The decode-once cache: with RTL_CACHE_DIR pointed at a fresh temporary folder, the first
   `load_dataset("cifar10-jpeg", split)` of both splits (archive hash + JPEG decode + cache write)
   against later loads (hash memo + memory-mapped read); every load also touches every memory page, so a
   lazily mapped file pays for reading it.
3. The decode-once cache of a real-world folder: 10,000 JPEGs of mixed sizes (160-400 px a side) decoded
   at `resize=224` (short side to 224, centre crop): images/s of the first load (list, hash, decode,
   resize, write the memory-mapped cache) and of later loads (list, content hash, map), each in a fresh
   process whose peak RSS (ru_maxrss) is recorded; every load touches every page of the images.

    .venv/bin/python benchmarks/bench_data.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import CLOCK, Row, env_restored, interleaved, print_rows, real_data_available  # noqa: E402  (first: see benchlib)

import torch  # noqa: E402

from robust_transfer.data import BatchLoader, ImageData, load_dataset  # noqa: E402
from robust_transfer.strategies.common import memory_format_for  # noqa: E402


def training_data(quick: bool) -> ImageData:
    if real_data_available() and not quick:
        return load_dataset("cifar10-jpeg", "train", progress=False)
    g = torch.Generator().manual_seed(0)
    n = 512 if quick else 50_000
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g), tuple(str(i) for i in range(10)), "random", "train")


def loader_vs_training(data: ImageData, batch: int = 128, loader_batches: int = 40, repeats: int = 3,
                       arch: str = "small-cnn") -> tuple[list[Row], dict]:
    from bench_train import Trainer

    fmt = memory_format_for(arch)
    loader = BatchLoader(data, batch, shuffle=True, augment=True, seed=0)
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    def load_arm():
        for _ in range(loader_batches):
            x, y = next_batch()
            x.contiguous(memory_format=fmt)   # the copy train() makes of every batch

    trainer = Trainer(arch, batch, fmt)
    tm = interleaved({"loader": load_arm, "train": trainer}, repeats)
    # images/s ratio = (loader images / loader time) / (training images / training time)
    r = {c: (loader_batches * batch / tm.best("loader", c)) / (batch / tm.best("train", c)) for c in ("cpu", "wall")}
    other = "wall" if CLOCK == "cpu" else "cpu"
    raw = {"batch": batch, "loader_batches": loader_batches, "loader": tm.summary("loader"), "train": tm.summary("train"),
           "loader_img_s_wall": loader_batches * batch / tm.best("loader", "wall"),
           "train_img_s_wall": batch / tm.best("train", "wall")}
    return [Row("Data", "data loading ÷ training, small-cnn",
                f"BatchLoader images/s (augment, batch {batch}, {len(data)} images) ÷ small-cnn training images/s "
                f"({raw['loader_img_s_wall']:,.0f} vs {raw['train_img_s_wall']:,.0f} img/s wall)",
                r[CLOCK], 20, ">=", alt=r[other], detail=raw)], raw


def _touch(data: ImageData) -> int:
    """Read one byte of every 4 KiB page (a lazily mapped file must then be read whole) and the labels."""
    return int(data.images.reshape(-1)[::4096].sum(dtype=torch.int64)) + int(data.labels.sum())


def decode_cache(spec: str = "cifar10-jpeg", splits=("train", "test"), repeats: int = 3) -> tuple[list[Row], dict]:
    """Second load ÷ first load of `spec` (all `splits`) from a fresh cache folder."""
    tmp = tempfile.mkdtemp(prefix="rtl-bench-cache-")

    def load_all():
        return sum(_touch(load_dataset(spec, s, progress=False)) for s in splits)

    try:
        with env_restored("RTL_CACHE_DIR", tmp):
            w, c = time.perf_counter(), time.process_time()
            first_sum = load_all()
            first = {"cpu": time.process_time() - c, "wall": time.perf_counter() - w}
            later = {"cpu": [], "wall": []}
            for _ in range(repeats):
                w, c = time.perf_counter(), time.process_time()
                assert load_all() == first_sum, "the cached data differs from the decoded data"
                later["cpu"].append(time.process_time() - c)
                later["wall"].append(time.perf_counter() - w)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r = {k: max(min(later[k]), 1e-6) / first[k] for k in ("cpu", "wall")}
    other = "wall" if CLOCK == "cpu" else "cpu"
    raw = {"spec": spec, "splits": list(splits), "first_wall_s": first["wall"], "first_cpu_s": first["cpu"],
           "later_wall_s": later["wall"], "later_cpu_s": later["cpu"]}
    return [Row("Data", f"decode-once cache, {spec}",
                f"second load ÷ first load of {'+'.join(splits)} (fresh RTL_CACHE_DIR; first {first['wall']:.1f} s wall, "
                f"later {min(later['wall']):.2f} s)", r[CLOCK], 0.1, "<=", alt=r[other], detail=raw)], raw


FOLDER_SCRIPT = r"""
import resource, sys, time
import torch
from robust_transfer.data import load_dataset
from robust_transfer.data.cache import release
t = time.perf_counter()
d = load_dataset(sys.argv[1], "train", progress=False)
total = 0
for i in range(0, len(d), 512):   # touch every page of the (mapped) images, as training would
    total += int(d.images[i:i + 512].reshape(-1)[::4096].sum(dtype=torch.int64))
    release(d.images)
print("RESULT", len(d), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, total)
"""


def write_mixed_jpegs(root, n: int, classes: int = 100, seed: int = 0) -> None:
    """`n` photo-like JPEGs of mixed sizes (160-400 px a side) in `classes` class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 215, size=(classes, 3))
    for i in range(n):
        c = i % classes
        d = os.path.join(root, f"class{c:03d}")
        os.makedirs(d, exist_ok=True)
        h, w = (int(v) for v in rng.integers(160, 400, size=2))
        small = (colours[c] + rng.normal(0, 30, size=(h // 8 + 1, w // 8 + 1, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(os.path.join(d, f"{i:05d}.jpg"), quality=85)


def folder_cache(n: int = 10_000, size: int = 224, repeats: int = 2) -> tuple[list[Row], dict]:
    """First and later loads of an n-image mixed-size JPEG folder at resize=`size`, each in a fresh process."""
    import subprocess

    tmp = tempfile.mkdtemp(prefix="rtl-bench-folder-")
    try:
        write_mixed_jpegs(os.path.join(tmp, "photos"), n)
        env = {**os.environ, "RTL_CACHE_DIR": os.path.join(tmp, "cache")}
        spec = f"imagefolder:{os.path.join(tmp, 'photos')}:resize={size}"
        runs = []
        for _ in range(1 + repeats):
            out = subprocess.run([sys.executable, "-c", FOLDER_SCRIPT, spec], env=env, capture_output=True,
                                 text=True, timeout=3600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            count, secs, rss, _ = out.stdout.split("RESULT")[1].split()
            runs.append({"images": int(count), "wall_s": float(secs), "peak_rss_mb": float(rss)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first, later = runs[0], min(runs[1:], key=lambda r: r["wall_s"])
    first_ips, later_ips = first["images"] / first["wall_s"], later["images"] / later["wall_s"]
    peak = max(r["peak_rss_mb"] for r in runs)
    decoded_mb = n * 3 * size * size / 2**20
    raw = {"n": n, "size": size, "runs": runs, "first_img_s": first_ips, "later_img_s": later_ips,
           "peak_rss_mb": peak, "decoded_mb": decoded_mb}
    name = f"decode-once cache, {n:,} mixed-size JPEGs at {size}"
    return [
        Row("Data", name, f"later load ÷ first load, wall (first {first_ips:,.0f} img/s, later {later_ips:,.0f} img/s; "
            f"each in a fresh process)", later["wall_s"] / first["wall_s"], 0.1, "<=", detail=raw),
        Row("Data", f"{name}: first load", "images/s: list + decode + resize + write the memory-mapped cache",
            first_ips, unit="img/s", detail=first),
        Row("Data", f"{name}: later loads", "images/s: list + content hash + map + touch every page",
            later_ips, unit="img/s", detail=later),
        Row("Data", f"{name}: peak RSS", f"MB, the largest of the loads (the decoded set is {decoded_mb:,.0f} MB)",
            peak, 2048, "<=", unit="MB", detail=raw),
    ], raw


def rows(quick: bool = False) -> tuple[list[Row], dict]:
    data = training_data(quick)
    if quick:
        r1, raw1 = loader_vs_training(data, batch=8, loader_batches=4, repeats=1)
    else:
        r1, raw1 = loader_vs_training(data)
    out, raw = r1, {"loader": raw1}
    if real_data_available() and not quick:
        r2, raw2 = decode_cache()
        out, raw["cache"] = out + r2, raw2
    else:
        out.append(Row("Data", "decode-once cache, cifar10-jpeg", "second load ÷ first load", None, 0.1, "<=",
                       note="not measured (quick run, or no cifar10-jpeg under the data folder)"))
    r3, raw["folder"] = folder_cache(n=200 if quick else 10_000, repeats=1 if quick else 2)
    return out + r3, raw


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    args = ap.parse_args(argv)
    out, raw = rows(args.quick)
    print(raw)
    print_rows(out, 48)
    return 0


if __name__ == "__main__":
    sys.exit(main())
