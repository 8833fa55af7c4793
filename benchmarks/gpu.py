"""GPU throughput: training images/s (fp32 vs bf16 autocast, NCHW vs channels_last), PGD-20 evaluation
images/s and MFU against the card's measured bf16 matmul rate, for wrn-16-4, preact-resnet18 and
wrn-34-10. Training steps are the library's own (strategies.train.ModeObjective's updates under a FastPath:
bf16 autocast, channels_last), and the data is CIFAR-10 from ../shared/data (cifar10-jpeg; random
pixels if it is absent) held on the device as uint8 behind the library's BatchLoader (`on_device=True`),
which crops and flips there; one more row per arch (bf16, channels_last) streams the batches as the
library does by default on CUDA (pinned host memory, non-blocking copies; issue 26); every timing is bracketed by torch.cuda.synchronize(). PGD-20 runs
robust_transfer.attacks.pgd_attack on test images (fp32 as the library evaluates; bf16 asked for
explicitly, for the record). The whole run keeps to a time budget (default 270 s): configurations
left when it runs out are reported as skipped.

On a machine without CUDA it prints one line saying it skipped and exits 0 (`make bench` calls it).

    .venv/bin/python benchmarks/gpu.py [--budget-s 270]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import robust_transfer  # noqa: E402,F401  (before torch: sets OMP_WAIT_POLICY, see benchlib)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

ARCHS = (("wrn-16-4", 256), ("preact-resnet18", 256), ("wrn-34-10", 128))
# (precision, channels_last, data held on the device): the last is the library's default on CUDA
CONFIGS = (("fp32", False, True), ("fp32", True, True), ("bf16", False, True), ("bf16", True, True),
           ("bf16", True, False))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_peak(device, dtype=torch.bfloat16, n: int = 8192, reps: int = 10) -> float:
    """Best TFLOP/s of an n×n @ n×n torch.mm in `dtype` on `device` (2n³ FLOPs per product)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e12


_DATA: dict = {}


def image_data(split: str, n_images: int, size: int = 32):
    """CIFAR-10 (cifar10-jpeg from the data directory, decoded once) or, without it, random uint8 pixels."""
    from robust_transfer.data import ImageData, load_dataset

    key = (split, n_images)
    if key not in _DATA:
        try:
            d = load_dataset("cifar10-jpeg", split, progress=False)
            n = min(n_images, len(d))
            _DATA[key] = ImageData(d.images[:n], d.labels[:n], d.classes, d.spec, split)
        except Exception:  # noqa: BLE001  (no data here: random pixels measure the same speed)
            g = torch.Generator().manual_seed(0)
            _DATA[key] = ImageData(torch.randint(0, 256, (n_images, 3, size, size), dtype=torch.uint8, generator=g),
                                   torch.randint(0, 10, (n_images,), generator=g), tuple(str(i) for i in range(10)),
                                   "random", split)
    return _DATA[key]


def device_loader(n_images: int, batch: int, device, size: int = 32, memory_format=torch.contiguous_format,
                  on_device: bool = True):
    """The library's BatchLoader over a uint8 image set held on `device` (augment on, on the device), or
    streamed from pinned host memory (`on_device=False`: the library's default on CUDA)."""
    from robust_transfer.data import BatchLoader

    return BatchLoader(image_data("train", n_images, size), batch, shuffle=True, augment=True, seed=0, device=device,
                       memory_format=memory_format, on_device=on_device)


def _batches(loader):
    while True:
        yield from loader


def flops_per_image(arch: str, device, precision: str, channels_last: bool) -> float:
    """FLOPs of one training fwd+bwd per image (torch.utils.flop_counter: convolutions and matmuls)."""
    from robust_transfer.models import create_model

    model = create_model(arch, 10).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.rand(2, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device))
        loss.backward()
    return counter.get_total_flops() / 2


def train_throughput(arch: str, batch: int, *, device, precision: str = "fp32", channels_last: bool = True,
                     steps: int = 20, warmup: int = 5, repeats: int = 2, n_images: int | None = None,
                     on_device: bool = True) -> dict:
    """Training images/s (best of `repeats` runs of `steps` SGD steps of the library's ModeObjective, natural
    mode, under a FastPath with this precision and layout) with the data on the device."""
    from robust_transfer.attacks import ThreatModel
    from robust_transfer.config import TrainConfig
    from robust_transfer.models import create_model
    from robust_transfer.strategies.common import FastPath, make_sgd
    from robust_transfer.strategies.engine import Batch, optimiser_updates
    from robust_transfer.strategies.train import ModeObjective

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    fast = FastPath(torch.device(device), torch.bfloat16 if precision == "bf16" else None, fmt)
    model = create_model(arch, 10).to(device).to(memory_format=fmt).train()
    opt = make_sgd(model.parameters(), 0.01)
    cfg = TrainConfig(arch=arch, mode="natural", progress=False, device=str(torch.device(device).type),
                      precision=precision, channels_last=str(channels_last).lower())
    objective, gen = ModeObjective(cfg, model, ThreatModel()), torch.Generator()
    batches = _batches(device_loader(n_images or max(4 * batch, 2 * batch), batch, device, memory_format=fmt,
                                     on_device=on_device))

    def step():
        x, y = next(batches)
        optimiser_updates(objective, opt, Batch.of(x, y, gen), 0, fast=fast, lr_for=lambda u: 0.01, last=1)

    for _ in range(warmup):
        step()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return {"arch": arch, "batch": batch, "precision": precision, "channels_last": channels_last,
            "data": "on device" if on_device else "streamed", "img_s": steps * batch / best, "step_s": best / steps}


def pgd_throughput(arch: str, batch: int, *, device, precision: str = "bf16", channels_last: bool = True,
                   steps: int = 20, repeats: int = 2) -> dict:
    """PGD-`steps` evaluation images/s (robust_transfer.attacks.pgd_attack, no early exit) on CIFAR-10 test
    images on the device; `precision` bf16 is passed to the attack (which otherwise stays fp32)."""
    from robust_transfer.attacks import ThreatModel, pgd_attack
    from robust_transfer.models import create_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(arch, 10).to(device).to(memory_format=fmt).eval()
    data = image_data("test", batch)
    x = data.images[:batch].to(device).float().div_(255).contiguous(memory_format=fmt)
    y = data.labels[:batch].to(device)
    threat = ThreatModel(8, 2)

    def attack(k):
        pgd_attack(model, x, y, eps=threat.eps, alpha=threat.alpha, steps=k, early_exit=False, precision=precision)

    attack(1)   # warm-up (cuDNN algorithm choice)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        attack(steps)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return {"arch": arch, "batch": batch, "precision": precision, "channels_last": channels_last, "steps": steps,
            "img_s": len(y) / best}


def run(device="cuda", archs=ARCHS, configs=CONFIGS, *, budget_s: float = 270, steps: int = 20,
        pgd_batch: int = 512, peak_n: int = 8192) -> dict:
    """Everything, in priority order, until the time budget runs out. Returns the results; prints as it goes."""
    t0 = time.perf_counter()
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    peak = matmul_peak(device, torch.bfloat16, peak_n)
    peak32 = matmul_peak(device, torch.float32, peak_n)
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu"
    print(f"device: {name}; measured matmul peak: bf16 {peak:.1f} TFLOP/s, fp32 {peak32:.1f} TFLOP/s "
          f"(TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, cuDNN TF32 convs "
          f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'})", flush=True)
    out = {"device": name, "peak_bf16_tflops": peak, "peak_fp32_tflops": peak32, "train": [], "pgd": [], "skipped": []}
    data = image_data("train", 1)
    print(f"data: {'CIFAR-10 (cifar10-jpeg)' if data.spec != 'random' else 'random uint8 pixels (no cifar10-jpeg found)'}"
          f", held on the device as uint8 (\"streamed\": from pinned host memory, the library's default)", flush=True)
    print(f"{'arch':<16} {'batch':>5} {'precision':<9} {'layout':<6} {'train img/s':>12} {'MFU (bf16 peak)':>16}")
    for arch, batch in archs:
        flops = {}
        for precision, cl, held in configs:
            layout = ("NHWC" if cl else "NCHW") + ("" if held else " streamed")
            label = f"train {arch} {precision} {layout}"
            if time.perf_counter() - t0 > budget_s:
                out["skipped"].append(label)
                continue
            try:
                r = train_throughput(arch, batch, device=device, precision=precision, channels_last=cl, steps=steps,
                                     on_device=held)
            except torch.cuda.OutOfMemoryError:
                out["skipped"].append(label + " (out of memory)")
                torch.cuda.empty_cache()
                continue
            key = (precision, cl)
            flops[key] = flops.get(key) or flops_per_image(arch, device, precision, cl)
            r["tflops"] = r["img_s"] * flops[key] / 1e12
            r["mfu_bf16_peak"] = r["tflops"] / peak
            out["train"].append(r)
            print(f"{arch:<16} {batch:>5} {precision:<9} {layout:<6} {r['img_s']:>12.0f} "
                  f"{r['mfu_bf16_peak']:>16.2f}", flush=True)
        for precision in ("fp32", "bf16"):
            label = f"pgd20 {arch} {precision}"
            if time.perf_counter() - t0 > budget_s:
                out["skipped"].append(label)
                continue
            r = pgd_throughput(arch, pgd_batch, device=device, precision=precision, channels_last=True)
            out["pgd"].append(r)
            print(f"{arch:<16} {pgd_batch:>5} {precision:<9} NHWC   PGD-20 evaluation {r['img_s']:.0f} img/s", flush=True)
    if out["skipped"]:
        print(f"skipped (time budget {budget_s:.0f} s): {', '.join(out['skipped'])}")
    out["seconds"] = time.perf_counter() - t0
    print(f"gpu.py finished in {out['seconds']:.0f} s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=270, help="stop starting new configurations after this")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu.py: skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    run("cuda", budget_s=args.budget_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
