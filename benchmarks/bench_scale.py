"""Issue 26 on this host: a training step in bf16 autocast vs fp32 (`bench_train.bf16_vs_fp32`), an epoch of
data-parallel training on 2 gloo ranks (torchrun) vs one process on the same cores, and the small-cnn
training step's MFU in fp32 and bf16, each against its own precision's matmul peak (`bf16_mfu`).

The epoch comparison trains the library's engine (`strategies.train.train`, natural mode, no MLflow) in
child processes: one process at torch's default thread count, and `torchrun --standalone --nproc_per_node=2`
(one thread per rank, torchrun's default), alternated `rounds` times. An epoch's time is the engine's own
`epoch_time_s` (the training loop, not the validation check); each job's first epoch is a warm-up and not
counted; the row is the best epoch of each arm.

    .venv/bin/python benchmarks/bench_scale.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Row, print_rows  # noqa: E402  (first: see benchlib)

_CHILD = r"""
import json, sys
from robust_transfer import distributed
from robust_transfer.config import TrainConfig
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies.train import train
ranks = distributed.start("cpu")
dataset, arch, epochs, per_class, batch, ckpt = sys.argv[1:7]
cfg = TrainConfig(dataset=dataset, arch=arch, mode="natural", epochs=int(epochs), per_class=int(per_class),
                  batch_size=int(batch), n_examples=8, eval_steps=1, val_per_class=2, progress=False,
                  device="cpu", checkpoint_dir=ckpt)
log = MemoryLogger()
train(cfg, log)
if ranks.main:
    print(json.dumps({"epoch_time_s": [m["epoch_time_s"] for _, m in log.metrics if "epoch_time_s" in m],
                      "precision": log.tags.get("rtl.precision")}))
"""


def _job(ranks: int, args: list[str], tmp: Path, threads: int | None = None) -> dict:
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "OMP_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "platform"),
                                         env.get("PYTHONPATH", "")])
    script = tmp / "child.py"
    script.write_text(_CHILD)
    cmd = ([sys.executable] if ranks == 1 else
           [str(bin_dir / "torchrun"), "--standalone", f"--nproc_per_node={ranks}"]) + [str(script), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, cwd=tmp)
    if out.returncode != 0:
        raise RuntimeError(f"{ranks}-rank job failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ddp_vs_one(dataset: str = "cifar10-jpeg", arch: str = "cnn4", epochs: int = 3, per_class: int = 200,
               batch: int = 128, rounds: int = 2) -> tuple[list[Row], dict]:
    raw: dict = {"dataset": dataset, "arch": arch, "per_class": per_class, "batch": batch, "epochs": epochs,
                 "one": [], "one_1t": [], "two": []}
    arms = [("one", 1, None), ("one_1t", 1, 1), ("two", 2, None)]   # (torchrun gives its ranks 1 thread each)
    with tempfile.TemporaryDirectory(prefix="rtl-bench-ddp-") as tmp:
        for r in range(rounds):
            for name, n, t in arms[r % 3:] + arms[:r % 3]:
                res = _job(n, [dataset, arch, str(epochs), str(per_class), str(batch), f"ck-{name}-{r}"], Path(tmp), t)
                raw[name] += res["epoch_time_s"][1:]
                raw["precision"] = res["precision"]
    best = {name: min(raw[name]) for name, _, _ in arms}
    what = (f"best training-epoch wall time, {dataset} {per_class}/class, global batch {batch}, precision "
            f"{raw['precision']}; torchrun 2 ranks × 1 thread vs 1 process")
    return [Row("Scaling", f"data-parallel epoch, 2 gloo ranks ÷ 1 process ({os.cpu_count()} threads), {arch}",
                f"{what} × {os.cpu_count()} threads (torch's default); < 1: the 2 ranks are faster",
                best["two"] / best["one"], unit="×", detail=best),
            Row("Scaling", f"data-parallel epoch, 2 gloo ranks ÷ 1 process (1 thread), {arch}",
                f"{what} × 1 thread", best["two"] / best["one_1t"], unit="×", detail=best)], raw


def bf16_mfu(arch: str = "small-cnn", batch: int = 128, repeats: int = 3, peak_n: int = 2048) -> tuple[list[Row], dict]:
    """The training step's MFU in each precision against that precision's own matmul peak: fp32 steps ÷ the
    fp32 torch.mm rate, bf16-autocast steps ÷ the bf16 torch.mm rate (all four interleaved in one process, at
    torch's thread count, the library's layout). FLOPs of one fwd+bwd as bench_train counts them."""
    import time

    import torch

    import bench_train
    from robust_transfer.models import create_model
    from robust_transfer.strategies.common import memory_format_for

    base = create_model(arch, 10)
    steps = {p: bench_train.Trainer(arch, batch, memory_format_for(arch), model=__import__("copy").deepcopy(base),
                                    autocast=dt) for p, dt in (("fp32", None), ("bf16", torch.bfloat16))}
    flops = steps["fp32"].flops()
    mats = {p: (torch.randn(peak_n, peak_n, dtype=dt), torch.randn(peak_n, peak_n, dtype=dt))
            for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    mm_best = {"fp32": float("inf"), "bf16": float("inf")}

    def mm(p):
        def run():
            a, b = mats[p]
            t = time.perf_counter()
            torch.mm(a, b)
            mm_best[p] = min(mm_best[p], time.perf_counter() - t)
        return run

    from benchlib import interleaved
    tm = interleaved({"fp32": steps["fp32"], "bf16": steps["bf16"], "mm-fp32": mm("fp32"), "mm-bf16": mm("bf16")},
                     repeats)
    peak = {p: 2 * peak_n ** 3 / mm_best[p] / 1e9 for p in mm_best}
    mfu = {p: flops / tm.best(p, "wall") / 1e9 / peak[p] for p in ("fp32", "bf16")}
    raw = {"arch": arch, "batch": batch, "gflop_per_step": flops / 1e9, "peak_gflops_wall": peak, "mfu_wall": mfu,
           "step_s_wall": {p: tm.best(p, "wall") for p in ("fp32", "bf16")}}
    return [Row("Training", f"training step MFU, {arch} (batch {batch}), {p} vs the {p} matmul peak",
                f"fwd+bwd+SGD GFLOP/s (wall) ÷ {p} torch.mm peak ({peak[p]:.0f} GFLOP/s, same process, interleaved)",
                mfu[p], 0.7, ">=", detail=raw) for p in ("fp32", "bf16")], raw


def rows(quick: bool = False) -> tuple[list[Row], dict]:
    import bench_train

    if quick:
        r1, raw1 = bench_train.bf16_vs_fp32(archs=(("cnn4", 4),), repeats=1)
        r2, raw2 = ddp_vs_one(per_class=20, batch=16, epochs=2, rounds=1)
        r3, raw3 = bf16_mfu(batch=4, repeats=1, peak_n=128)
    else:
        r1, raw1 = bench_train.bf16_vs_fp32()
        r2, raw2 = ddp_vs_one()
        r3, raw3 = bf16_mfu()
    return r1 + r2 + r3, {"bf16": raw1, "ddp": raw2, "mfu": raw3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    ap.add_argument("--only", choices=("bf16", "ddp", "mfu"), help="one of the comparisons")
    args = ap.parse_args(argv)
    if args.only == "mfu":
        out, raw = bf16_mfu(**({"batch": 4, "repeats": 1, "peak_n": 128} if args.quick else {}))
    elif args.only == "ddp":
        out, raw = ddp_vs_one(**({"per_class": 20, "batch": 16, "epochs": 2, "rounds": 1} if args.quick else {}))
    elif args.only == "bf16":
        import bench_train
        out, raw = bench_train.bf16_vs_fp32(**({"archs": (("cnn4", 4),), "repeats": 1} if args.quick else {}))
    else:
        out, raw = rows(args.quick)
    print_rows(out)
    print(json.dumps(raw, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
