"""Training speed: MFU of one training step, free vs natural training, OpenMP wait policy, cost vs batches.

MFU = achieved GFLOP/s of one fwd+bwd+SGD step (FLOPs counted by torch.utils.flop_counter for one
fwd+bwd: convolutions and matrix products, the usual convention) ÷ the fp32 matmul peak measured
in the same process, interleaved with the steps (three 2048² torch.mm per round at each thread count
tried, each timed; the best rate seen is the peak). Each architecture runs in NCHW and channels_last (NHWC), small-cnn
also at 1 thread, all interleaved; the row reports the best configuration and docs/benchmarks.md
lists every one. The steps are the library's own training updates (`ModeObjective`, `engine.optimiser_updates`).

    .venv/bin/python benchmarks/bench_train.py [--quick]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import CLOCK, Row, interleaved, print_rows, threads  # noqa: E402  (first: see benchlib)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from robust_transfer.attacks import ThreatModel  # noqa: E402
from robust_transfer.config import TrainConfig  # noqa: E402
from robust_transfer.models import create_model  # noqa: E402
from robust_transfer.strategies.common import FastPath, make_sgd, memory_format_for  # noqa: E402
from robust_transfer.strategies.engine import Batch, optimiser_updates  # noqa: E402
from robust_transfer.strategies.train import ModeObjective  # noqa: E402

FORMATS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
FORMAT_NAME = {torch.contiguous_format: "NCHW", torch.channels_last: "NHWC"}
OTHER = {"cpu": "wall", "wall": "cpu"}


@dataclass
class Trainer:
    """A model + SGD + the library's training updates (`ModeObjective` through `engine.optimiser_updates`) on
    one fixed batch."""

    arch: str
    batch: int
    fmt: torch.memory_format
    mode: str = "natural"
    replay: int = 4
    model: torch.nn.Module | None = None
    seed: int = 0
    autocast: torch.dtype | None = None   # the training step's autocast (None: fp32; FastPath)

    def __post_init__(self):
        torch.manual_seed(self.seed)
        if self.model is None:
            self.model = create_model(self.arch, 10)
        self.model = self.model.to(memory_format=self.fmt).train()
        cfg = TrainConfig(arch=self.arch, mode=self.mode, replay=self.replay, progress=False, device="cpu")
        self.opt = make_sgd(self.model.parameters(), lr=0.01)
        self.objective = ModeObjective(cfg, self.model, ThreatModel())
        self.fast = FastPath(torch.device("cpu"), self.autocast, self.fmt)
        g = torch.Generator().manual_seed(self.seed)
        self.x = torch.rand(self.batch, 3, 32, 32, generator=g).contiguous(memory_format=self.fmt)
        self.y = torch.randint(0, 10, (self.batch,), generator=g)
        self.batch_ = Batch.of(self.x, self.y, torch.Generator().manual_seed(self.seed))

    def __call__(self):
        """One minibatch: 1 update for natural, `replay` updates for free."""
        return optimiser_updates(self.objective, self.opt, self.batch_, 0, fast=self.fast, lr_for=lambda u: 0.01,
                                 last=self.objective.updates_per_batch)

    def flops(self) -> int:
        """FLOPs of one fwd+bwd, counted on a copy so the real model is untouched."""
        model = copy.deepcopy(self.model)
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(model(self.x), self.y).backward()
        return counter.get_total_flops()


def profile_breakdown(fn) -> dict[str, float]:
    """Fractions of self CPU time in convolutions, matrix products and the rest (BN, ReLU, pool, SGD, ...)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    conv = mm = other = 0.0
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total
        if "convolution" in ev.key:
            conv += t
        elif ev.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            mm += t
        elif ev.key.startswith("aten::"):
            other += t
    total = conv + mm + other
    if total <= 0:
        return {"conv": 0.0, "matmul": 0.0, "other": 0.0}
    return {"conv": conv / total, "matmul": mm / total, "other": other / total}


_MM: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _mm(n: int, t: int, samples: dict[str, list[float]], reps: int = 3) -> None:
    """`reps` n×n products at `t` threads, each timed by both clocks into `samples` (the peak is their best)."""
    import time

    a, b, out = _MM.setdefault(n, (torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)))
    with threads(t):
        for _ in range(reps):
            w, c = time.perf_counter(), time.process_time()
            torch.mm(a, b, out=out)
            samples["cpu"].append(time.process_time() - c)
            samples["wall"].append(time.perf_counter() - w)


def mfu(archs=(("small-cnn", 128, None), ("wrn-16-4", 16, ())), repeats: int = 2, peak_n: int = 2048,
        compile_arm: bool | None = None) -> tuple[list[Row], dict]:
    """Per arch (name, batch, extra thread counts besides the default): MFU of the best configuration,
    training images/s (best and the library's default configuration); and every configuration's numbers.
    `None` for the thread counts means (1,): small-cnn's steps are short enough to also try one thread."""
    default_t = torch.get_num_threads()
    compile_arm = os.environ.get("RTL_BENCH_COMPILE") == "1" if compile_arm is None else compile_arm
    rows: list[Row] = []
    raw: dict = {"configs": [], "peak": {}, "nhwc_speedup": {}, "breakdown": {}, "gflop_per_image": {}}
    for arch, batch, extra in archs:
        counts = sorted({default_t, *((1,) if extra is None else extra)})
        trainers = {f"{f}/{t}t": (Trainer(arch, batch, fmt), t) for f, fmt in FORMATS.items() for t in counts}
        flops = next(iter(trainers.values()))[0].flops()

        def arm(tr, t):
            def run():
                with threads(t):
                    tr()
            return run

        arms = {name: arm(tr, t) for name, (tr, t) in trainers.items()}
        mm = {t: {"cpu": [], "wall": []} for t in counts}
        arms.update({f"mm/{t}t": (lambda t=t: _mm(peak_n, t, mm[t])) for t in counts})
        if compile_arm:  # opt-in: inductor compiles for minutes here and won ≤5% on small-cnn (docs)
            tr = Trainer(arch, batch, memory_format_for(arch))
            tr.objective.model = torch.compile(tr.model)
            trainers[f"compiled-{FORMAT_NAME[tr.fmt]}/{default_t}t"] = (tr, default_t)
            arms[f"compiled-{FORMAT_NAME[tr.fmt]}/{default_t}t"] = arm(tr, default_t)
        tm = interleaved(arms, repeats)
        rate = {(c, t): 2 * peak_n ** 3 / max(min(mm[t][c]), 1e-9) / 1e9 for c in ("cpu", "wall") for t in counts}
        peak = {c: max(rate[c, t] for t in counts) for c in ("cpu", "wall")}
        raw["peak"][arch] = {f"{c}/{t}t": r for (c, t), r in rate.items()}
        raw["gflop_per_image"][arch] = flops / batch / 1e9
        configs = []
        for name in trainers:
            g = {c: flops / tm.best(name, c) / 1e9 for c in ("cpu", "wall")}
            configs.append({"arch": arch, "batch": batch, "config": name, "gflops": g[CLOCK], "mfu": g[CLOCK] / peak[CLOCK],
                            "mfu_alt": g[OTHER[CLOCK]] / peak[OTHER[CLOCK]], "img_s_wall": batch / tm.best(name, "wall"),
                            "img_s_cpu": batch / tm.best(name, "cpu"), "times": tm.summary(name)})
        raw["configs"] += configs
        top = max(configs, key=lambda c: c["mfu"])
        lib = f"{FORMAT_NAME[memory_format_for(arch)]}/{default_t}t"
        lib_cfg = next(c for c in configs if c["config"] == lib)
        raw["nhwc_speedup"][arch] = {t: tm.ratio(f"NCHW/{t}t", f"NHWC/{t}t") for t in counts}
        tr, t = trainers[top["config"]]
        with threads(t):
            bd = profile_breakdown(tr)
        raw["breakdown"][arch] = bd
        conv_share = (top["mfu"] / bd["conv"]) if bd["conv"] > 0 else float("nan")
        note = (f"{bd['other']:.0%} of the step is BatchNorm, ReLU, pooling, loss and SGD (memory-bound, no counted "
                f"FLOPs); {bd['conv']:.0%} is convolution (forward and backward), which itself runs at ~{conv_share:.0%} "
                f"of the matmul peak")
        rows.append(Row("Training", f"training step MFU, {arch} (batch {batch})",
                        f"fwd+bwd+SGD GFLOP/s ÷ fp32 matmul peak ({peak[CLOCK]:.1f} GFLOP/s per {CLOCK} s); best of "
                        f"{len(configs)} configs: {top['config']}", top["mfu"], 0.7, ">=", note=note,
                        alt=top["mfu_alt"], detail={"config": top["config"], "library_config": lib}))
        rows.append(Row("Training", f"training images/s, {arch}", f"wall clock, {top['config']}, batch {batch} "
                        f"({top['img_s_cpu']:.0f} per CPU-second)", top["img_s_wall"], unit="img/s"))
        if lib != top["config"]:
            rows.append(Row("Training", f"training images/s, {arch}, library default",
                            f"wall clock, memory_format_for + default threads = {lib} ({lib_cfg['img_s_cpu']:.0f} per "
                            f"CPU-second)", lib_cfg["img_s_wall"], unit="img/s"))
    return rows, raw


def cpu_scale_arch(archs=("small-cnn", "cnn4"), batch: int = 128, repeats: int = 4) -> tuple[list[Row], dict]:
    """The `cpu` scale's architecture (issue 18) beside small-cnn: training images/s of the library's natural
    training updates at the library's layout and thread count, both arms interleaved in one run, so the ratio holds on a
    noisy host. Parameters are counted from the built models."""
    trainers = {a: Trainer(a, batch, memory_format_for(a)) for a in archs}
    tm = interleaved({a: trainers[a] for a in archs}, repeats)
    params = {a: sum(p.numel() for p in trainers[a].model.parameters()) for a in archs}
    img_s = {a: batch / tm.best(a, "wall") for a in archs}
    base, new = archs
    rows = [Row("Training", f"training images/s, {a} (cpu-scale candidates)",
                f"wall clock, library default layout/threads, batch {batch}, {params[a] / 1e6:.2f}M parameters; "
                f"interleaved with {base if a == new else new}", img_s[a], unit="img/s") for a in archs]
    rows.append(Row("Training", f"training speed {new} ÷ {base}",
                    f"images/s ratio, the two interleaved in one run ({params[new] / params[base]:.1f}× the parameters)",
                    img_s[new] / img_s[base]))
    return rows, {"params": params, "img_s": img_s, "times": {a: tm.summary(a) for a in archs}}


def bf16_vs_fp32(archs=(("cnn4", 128), ("wrn-16-4", 16)), repeats: int = 4) -> tuple[list[Row], dict]:
    """Issue 26: a training step under bf16 autocast ÷ the same step in fp32, per arch (same weights, batch,
    layout and threads; the two interleaved in one process). What `precision=auto` picks on this CPU is said
    beside it (`device.cpu_has_native_bf16`)."""
    from robust_transfer.device import cpu_has_native_bf16
    from robust_transfer.strategies.common import resolve_precision

    auto = "bf16" if resolve_precision("auto", "cpu") == torch.bfloat16 else "fp32"
    rows: list[Row] = []
    raw: dict = {"native_bf16": cpu_has_native_bf16(), "auto": auto}
    for arch, batch in archs:
        base = create_model(arch, 10)
        arms = {p: Trainer(arch, batch, memory_format_for(arch), model=copy.deepcopy(base), autocast=dt)
                for p, dt in (("fp32", None), ("bf16", torch.bfloat16))}
        tm = interleaved(arms, repeats)
        speedup = tm.ratio("fp32", "bf16")
        raw[arch] = {"batch": batch, "speedup": speedup, "fp32": tm.summary("fp32"), "bf16": tm.summary("bf16")}
        rows.append(Row("Training", f"training step fp32 ÷ bf16 autocast, {arch} (batch {batch})",
                        f"time ratio (> 1: bf16 faster), interleaved in one process; native bf16 on this CPU: "
                        f"{raw['native_bf16']}, precision=auto picks {auto}", speedup, unit="×",
                        alt=tm.other_ratio("fp32", "bf16"), detail=raw[arch]))
    return rows, raw


def free_vs_natural(arch: str = "small-cnn", batch: int = 64, replay: int = 4, repeats: int = 3) -> tuple[list[Row], dict]:
    """Time per minibatch update of free training (replay m) ÷ natural training's, same model and batch."""
    fmt = memory_format_for(arch)
    base = create_model(arch, 10)
    natural = Trainer(arch, batch, fmt, mode="natural", model=copy.deepcopy(base))
    free = Trainer(arch, batch, fmt, mode="free", replay=replay, model=copy.deepcopy(base))

    def natural_arm():  # as many updates as one free call makes
        for _ in range(replay):
            natural()

    tm = interleaved({"natural": natural_arm, "free": free}, repeats)
    raw = {"arch": arch, "batch": batch, "replay": replay, "natural": tm.summary("natural"), "free": tm.summary("free")}
    return [Row("Training", f"free training per update ÷ natural, {arch}",
                f"mode=free (replay {replay}) vs natural, batch {batch}, {replay} updates per timing",
                tm.ratio("free", "natural"), 1.1, "<=", alt=tm.other_ratio("free", "natural"),
                note="free adds the input gradient of the first layer and δ's clone, clamp, sign and projection per "
                     "update: elementwise, memory-bound passes over the batch", detail=raw)], raw


_POLICY_CHILD = r"""
import json, sys, time
import torch, torch.nn.functional as F          # torch first: libgomp reads OMP_WAIT_POLICY as it loads
from robust_transfer.models import create_model
batch, steps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
m = create_model("small-cnn", 10); opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
def step():
    loss = F.cross_entropy(m(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
step()
wall, cpu = [], []
for _ in range(steps):
    w, c = time.perf_counter(), time.process_time(); step()
    cpu.append(time.process_time() - c); wall.append(time.perf_counter() - w)
print(json.dumps({"wall": min(wall), "cpu": min(cpu), "threads": torch.get_num_threads()}))
"""


def wait_policy(batch: int = 128, steps: int = 3, rounds: int = 2) -> tuple[list[Row], dict]:
    """Wall time of a small-cnn step at the default thread count with libgomp's default spin-waiting vs
    OMP_WAIT_POLICY=PASSIVE (which robust_transfer sets on import): separate processes, alternated."""
    res: dict[str, list[dict]] = {"default": [], "PASSIVE": []}
    for _ in range(rounds):
        for policy in res:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            out = subprocess.run([sys.executable, "-c", _POLICY_CHILD, str(batch), str(steps)], env=env,
                                 capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"wait-policy child failed: {out.stderr[-500:]}")
            res[policy].append(json.loads(out.stdout.strip().splitlines()[-1]))
    r = {c: min(x[c] for x in res["default"]) / min(x[c] for x in res["PASSIVE"]) for c in ("cpu", "wall")}
    nthreads = res["default"][0]["threads"]
    return [Row("Training", f"OpenMP wait policy: libgomp default ÷ PASSIVE ({nthreads} threads)",
                f"time of a small-cnn training step (batch {batch}), separate processes alternated, best of "
                f"{rounds}×{steps} steps each", r[CLOCK], unit="×", alt=r[OTHER[CLOCK]],
                note="robust_transfer sets OMP_WAIT_POLICY=PASSIVE on import (before torch loads)")], res


def train_scaling(arch: str = "small-cnn", batch: int = 32, counts=(1, 2, 4, 8), repeats: int = 1) -> dict:
    """Seconds (primary clock) for k natural-training minibatches, k in `counts` (cost-vs-work plot)."""
    tr = Trainer(arch, batch, memory_format_for(arch))
    tr()  # warm-up

    def arm(k):
        def run():
            for _ in range(k):
                tr()
        return run

    tm = interleaved({str(k): arm(k) for k in counts}, repeats, warmup=0)
    return {"arch": arch, "batch": batch, "counts": list(counts), "clock": CLOCK,
            "seconds": [tm.best(str(k)) for k in counts]}


def rows(quick: bool = False) -> tuple[list[Row], dict]:
    if quick:
        r1, raw1 = mfu(archs=(("small-cnn", 4, None), ("wrn-10-1", 2, ())), repeats=1, peak_n=128, compile_arm=False)
        r2, raw2 = free_vs_natural(batch=4, replay=2, repeats=1)
        r3, raw3 = wait_policy(batch=2, steps=1)
        r4, raw4 = cpu_scale_arch(batch=4, repeats=1)
        scaling = train_scaling(batch=4, counts=(1, 2))
    else:
        r1, raw1 = mfu()
        r2, raw2 = free_vs_natural()
        r3, raw3 = wait_policy()
        r4, raw4 = cpu_scale_arch()
        scaling = train_scaling()
    return r1 + r2 + r3 + r4, {"mfu": raw1, "free": raw2, "wait_policy": raw3, "cpu_scale_arch": raw4,
                               "train_scaling": scaling}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    args = ap.parse_args(argv)
    out, raw = rows(args.quick)
    for c in raw["mfu"]["configs"]:
        print(f"  {c['arch']:<10} {c['config']:<12} {c['gflops']:6.1f} GFLOP/{CLOCK}-s  MFU {c['mfu']:.2f} "
              f"(by the other clock {c['mfu_alt']:.2f})  {c['img_s_wall']:7.1f} img/s wall   {c['times']}")
    print("peak GFLOP/s:", raw["mfu"]["peak"], " NCHW÷NHWC time:", raw["mfu"]["nhwc_speedup"])
    print_rows(out, 58)
    return 0


if __name__ == "__main__":
    sys.exit(main())
