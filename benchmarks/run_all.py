"""`make bench`: every benchmark, one table of ratios against their targets, written to docs/benchmarks.md.

    .venv/bin/python benchmarks/run_all.py [--quick] [--no-write] [--only train,attacks,data,transfer,memory,others,gpu]

What each stage measures, how (clocks, interleaving, floors), the contract for other benchmark modules
(`rows(quick)`) and the run-to-run spread: docs/benchmarks.md, section "How the numbers are measured".
This script rewrites only the sections it owns (benchdocs.OWNED, and the preamble; benchdocs.py renders them); every other section of that
file, the hand-written method section included, is kept as it is.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchlib import CLOCK, DOCS, Row, env_restored, loadavg, machine  # noqa: E402  (first: see benchlib)

import torch  # noqa: E402

from benchdocs import compose, plots, render  # noqa: E402,F401  (compose: tests/test_benchmarks.py)

STAGES = ("train", "attacks", "data", "transfer", "memory", "others", "gpu")


# --------------------------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(msg, flush=True)


def import_optional(name: str):
    if not (HERE / f"{name}.py").is_file():
        return None
    return importlib.import_module(name)


def as_row(item, section: str) -> Row:
    """A Row from another engineer's row (a benchlib.Row, another dataclass, or a dict)."""
    if isinstance(item, Row):
        return item
    d = item if isinstance(item, dict) else vars(item)
    return Row(d.get("section", section), str(d["name"]), d.get("measured_as", ""), d.get("value"), d.get("target"),
               d.get("better", ""), d.get("unit", "×"), d.get("note", ""), d.get("alt"))


def foreign_rows(mod, section: str, quick: bool) -> tuple[list[Row], dict]:
    try:
        out = mod.rows(quick=quick)
    except TypeError:
        out = mod.rows()
    raw = {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        out, raw = out
    return [as_row(r, section) for r in out], raw


# ----------------------------------------------------------------------------------- transfer pieces

def transfer_rows(quick: bool) -> tuple[list[Row], dict]:
    """The 50-epoch linear head with the feature cache (build included) ÷ the extractor every epoch, and
    the cost of both vs per_class N, through bench_transfer.py's own helpers (wall clock, as it times)."""
    mod = import_optional("bench_transfer")
    na = Row("Transfer", "head search with feature cache", "cached ÷ uncached", None, 0.05, "<=",
             note="n/a (not yet built)")
    if mod is None:
        return [na], {}
    if hasattr(mod, "rows"):
        return foreign_rows(mod, "Transfer", quick)
    from robust_transfer.data import load_dataset

    cached_n, uncached_n, ratio_n = ((2, 4), (2,), 2) if quick else ((10, 20, 40, 80), (10, 20), 20)
    with env_restored("RTL_CACHE_DIR"):
        root = mod.isolated_feature_cache()   # sets RTL_CACHE_DIR to a fresh folder (decoded data shared)
        try:
            src = mod.make_source(root)
            load_dataset(mod.TARGET, "train", progress=False)   # decode (or read the cache) before timing
            cached, uncached = {}, {}
            for n in sorted(set(cached_n) | set(uncached_n)):   # interleaved per N
                if n in cached_n:
                    cached[n] = mod.time_head(src, n, cached=True, cache_root=root)[0]
                if n in uncached_n:
                    uncached[n] = mod.time_head(src, n, cached=False, cache_root=root)[0]
        finally:
            shutil.rmtree(root, ignore_errors=True)
    r = cached[ratio_n] / uncached[ratio_n]
    search_note = (" (bench_search.py times a whole Optuna study, not this ratio)" if (HERE / "bench_search.py").is_file()
                   else " (bench_search.py not yet built)")
    raw = {"target": mod.TARGET, "cached_s": cached, "uncached_s": uncached, "ratio_per_class": ratio_n}
    row = Row("Transfer", "head search with feature cache",
              f"bench_transfer.py's helpers{search_note}: 50-epoch linear head, small-cnn source, "
              f"{mod.TARGET} per_class={ratio_n}: feature cache (build included) ÷ extractor every epoch (wall clock; "
              f"{cached[ratio_n]:.2f} s vs {uncached[ratio_n]:.2f} s)", r, 0.05, "<=",
              note="the cached arm still pays one extractor pass over the data and 50 epochs of Python-level "
                   "minibatch overhead for a tiny linear layer")
    return [row], raw


# Without a rows() API, the other engineers' scripts run as smoke tests with small arguments (their
# defaults take many minutes here) and without --write: their own docs sections hold their full runs.
SMALL_ARGS = {"bench_search": ["--trials", "4", "--per-class", "20", "--epochs", "2", "--n-examples", "50"],
              "bench_evaluation": ["--n", "8", "--repeats", "1", "--archs", "small-cnn"]}
SUBPROCESS_TIMEOUT_S = 150
BUDGET_S = 570          # `make bench` must finish within 10 minutes: the smoke runs get what is left
T0 = time.perf_counter()


def time_left() -> float:
    return BUDGET_S - (time.perf_counter() - T0)


def run_script(path: Path, args: list[str], timeout: float) -> dict:
    """Run a script in its own process group; on timeout kill the whole group (its children too)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=HERE.parent, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        rc, out = None, (out or "") + f"\n(timed out after {timeout:.0f} s)"
    lines = [ln for ln in (out or "").splitlines() if "USDT" not in ln and "gpuGetDeviceCount" not in ln]
    return {"rc": rc, "args": args, "seconds": time.perf_counter() - start, "tail": "\n".join(lines[-40:])}


def other_engineers(quick: bool) -> tuple[list[Row], dict]:
    rows, raw = [], {}
    for name, section in (("bench_search", "Search"), ("bench_evaluation", "Evaluation")):
        mod = import_optional(name)
        if mod is None:
            continue
        if hasattr(mod, "rows"):
            r, x = foreign_rows(mod, section, quick)
            rows += r
            raw[name] = x
            continue
        if quick:
            continue
        timeout = min(SUBPROCESS_TIMEOUT_S, time_left() - 30)   # 30 s kept for gpu.py and the docs
        if timeout < 20:
            rows.append(Row(section, f"{name}.py (smoke run)", "not run: the 10-minute budget was spent", None,
                            note=f"see '## {section}'"))
            continue
        res = run_script(HERE / f"{name}.py", SMALL_ARGS.get(name, []), timeout)
        raw[name] = res
        log(f"--- {name}.py {' '.join(res['args'])} (rc {res['rc']}, {res['seconds']:.0f} s):\n{res['tail']}")
        status = "ran" if res["rc"] == 0 else f"failed (rc {res['rc']})" if res["rc"] is not None else "timed out"
        rows.append(Row(section, f"{name}.py (smoke run)", f"{status} with {' '.join(res['args'])} in "
                        f"{res['seconds']:.0f} s; no rows() API, so its numbers are in its own section", None,
                        note=f"see '## {section}'"))
    if any("head search" in r.name for r in rows):
        raw["search_has_head_row"] = True
    return rows, raw


def gpu_section(quick: bool) -> dict:
    if quick:
        return {"rc": 0, "output": "(not run: quick)"}
    res = run_script(HERE / "gpu.py", [], 420)
    return {"rc": res["rc"], "output": res["tail"].strip()}


# ---------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement (writes nothing)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--only", default=",".join(STAGES), help=f"comma-separated stages of {','.join(STAGES)}")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any row misses its target")
    ap.add_argument("--docs", default=None, help="write the docs here instead of docs/ (also with --quick)")
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stage(s) {sorted(unknown)}; choose from {','.join(STAGES)}")
    write = not args.no_write and (not args.quick or args.docs is not None)

    global T0
    t0 = T0 = time.perf_counter()
    info = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "load_before": loadavg(), "machine": machine(),
            "load_stages": {}, "stage_seconds": {}}
    log(f"robust-transfer benchmarks — {info['machine']['cpu']}, {info['machine']['cores']} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), clock={CLOCK}, load {info['load_before']}")
    rows: list[Row] = []
    raw: dict = {}
    failed: list[str] = []

    def stage(name, fn):
        if name not in stages:
            return
        s0 = time.perf_counter()
        log(f"== [{s0 - t0:5.0f}s] {name}")
        try:
            r, x = fn()
            rows.extend(r)
            raw[name] = x
        except Exception as e:  # one broken stage must not hide the others' numbers
            failed.append(name)
            traceback.print_exc()
            rows.append(Row(name.title(), f"stage '{name}'", "", None, note=f"error: {type(e).__name__}: {e}"))
        info["stage_seconds"][name] = time.perf_counter() - s0
        info["load_stages"][name] = loadavg().split()[0]

    import bench_attacks
    import bench_data
    import bench_memory
    import bench_train

    stage("train", lambda: bench_train.rows(args.quick))
    stage("attacks", lambda: bench_attacks.rows(args.quick))
    stage("data", lambda: bench_data.rows(args.quick))
    stage("transfer", lambda: transfer_rows(args.quick))
    stage("memory", lambda: bench_memory.rows(args.quick))
    stage("others", lambda: other_engineers(args.quick))
    if raw.get("others", {}).get("search_has_head_row"):
        for r in rows:  # bench_search.py's own head-search row carries the target then
            if r.section == "Transfer" and r.name == "head search with feature cache" and r.target is not None:
                r.name, r.target, r.better = "transfer head with feature cache", None, ""
    if "gpu" in stages:
        s0 = time.perf_counter()
        log(f"== [{s0 - t0:5.0f}s] gpu")
        raw["gpu"] = gpu_section(args.quick)
        log(raw["gpu"]["output"])
        info["stage_seconds"]["gpu"] = time.perf_counter() - s0
    info["load_after"] = loadavg()
    info["seconds"] = time.perf_counter() - t0

    width = max(len(r.name) for r in rows) if rows else 10
    log(f"\n{'what':<{width}}  {'value':>14}  {'target':>7}  result   ({CLOCK} clock; other clock in brackets)")
    for r in rows:
        alt = "" if r.alt is None else f"  ({r.alt:.3f})"
        log(f"{r.name:<{width}}  {r.value_text():>14}  {r.target_text():>7}  {r.status}{alt}")
    log(f"\nload average {info['load_before']} before, {info['load_after']} after; {info['seconds']:.0f} s in all")

    if write:
        docs = Path(args.docs or DOCS)
        docs.mkdir(parents=True, exist_ok=True)
        made = plots(raw, docs)
        pre, mine = render(rows, raw, info, made)
        path = docs / "benchmarks.md"
        path.write_text(compose(path, pre, mine))
        (docs / "benchmarks.json").write_text(json.dumps({"info": info, "rows": [r.as_dict() for r in rows]},
                                                         indent=1, default=str))
        log(f"wrote {path} and {', '.join(made.values()) or 'no plots'}")
    if failed:
        log(f"stages that raised: {', '.join(failed)}")
        return 1
    return 1 if args.strict and any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
