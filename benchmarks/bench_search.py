"""Search speed: a 30-trial `mlp_head` study (search_spaces/mlp_head.yaml) with the feature cache, on real data.

Prints trials per minute and the share of the study's wall time spent outside training — MLflow
(parent and child runs, params, per-epoch metrics, the logged model) plus Optuna (storage, sampling)
plus the study's artifacts. "Training" is measured directly: after each trial, the configuration it
sampled runs again through the `transfer` strategy with a `NullLogger` — no MLflow, no Optuna — in
the same process with the same warm caches (the arms alternate trial by trial, so a shared machine's
load hits both alike; the twin runs are subtracted from the study's time). Overhead share =
1 − training / study.

    .venv/bin/python benchmarks/bench_search.py [--trials 30] [--per-class 100] [--write]

Both arms use the same (random-weight) small-cnn source and the same decoded data and feature cache
(built once before timing). `--write` puts the numbers into docs/benchmarks.md under "## Search".
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

import robust_transfer  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
import torch

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "mlp_head.yaml"
TARGET = "cifar10-jpeg:half-b"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
# The same isolated feature cache (shared decoded data) and random-weight source as the transfer bench.
from bench_transfer import isolated_feature_cache as isolated_cache, make_source  # noqa: E402


def overrides(source: str, args) -> str:
    """The source, target and N; epochs, n_examples and width stay the YAML's unless given."""
    extra = "".join(f" {k}={v}" for k, v in (("epochs", args.epochs), ("n_examples", args.n_examples),
                                              ("width", args.width)) if v is not None)
    return f"source_model={source} target={TARGET} per_class={args.per_class}{extra}"


class PlainTwin:
    """After each trial of the study, the same configuration through the strategy alone (NullLogger: no
    MLflow, no Optuna), timed: the two arms alternate trial by trial under the same machine load."""

    def __init__(self, source: str, work: Path, args):
        from robust_transfer.search import load_space

        self.space = load_space(SPACE)
        self.space.apply_overrides(overrides(source, args))
        self.work, self.times = work, []

    def run(self, params: dict) -> float:
        from robust_transfer.commands.common import resolve_source
        from robust_transfer.reporting import NullLogger
        from robust_transfer.strategies.transfer import transfer

        _, cfg = self.space.build_config(params)
        cfg.progress = False
        cfg.checkpoint_dir = str(self.work / "plain" / f"t{len(self.times)}")
        start = time.perf_counter()
        transfer(cfg, NullLogger(), source=resolve_source(cfg.source_model))
        t = time.perf_counter() - start
        self.times.append(t)
        return t

    def __call__(self, study, frozen) -> None:  # an Optuna callback
        self.run(frozen.params)


def run_study(source: str, work: Path, args, twin: PlainTwin) -> tuple[float, object]:
    """Wall time of the whole study (parent run, trials, artifacts) minus the twin runs between its trials."""
    import optuna

    from robust_transfer.config import SearchConfig
    from robust_transfer.commands import run_search
    from robust_transfer.search.storage import open_storage

    cfg = SearchConfig(space=str(SPACE), trials=args.trials, storage=f"sqlite:///{work / 'optuna.db'}",
                       study_name="bench-mlp-head", set=overrides(source, args), seed=0)
    start = time.perf_counter()
    run_search(cfg, callbacks=[twin])
    wall = time.perf_counter() - start - sum(twin.times)
    return wall, optuna.load_study(study_name="bench-mlp-head", storage=open_storage(cfg.storage))


def write_section(text: str, path: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace (or append) the "## Search" section, leaving every other section alone."""
    benchlib.write_section("Search", text, path)


def section_text(args, machine: str, load: str, n: int, wall: float, train_s: float, notes: str = "") -> str:
    share = 1.0 - train_s / wall
    flags = f"--trials {args.trials} --per-class {args.per_class}"
    if (args.epochs, args.n_examples, args.width) != (10, 500, 2048):
        flags += f" --epochs {args.epochs} --n-examples {args.n_examples} --width {args.width}"
    return (
        "## Search\n\n"
        f"`.venv/bin/python benchmarks/bench_search.py {flags} --write` — {machine}; "
        f"`search_spaces/mlp_head.yaml` (mlp_depth 0–3, dropout 0–0.5, batch_norm; two objectives, TPE; "
        f"{args.epochs} epochs, head width {args.width}, final evaluation clean + PGD-20 on {args.n_examples} test "
        f"images) on `transfer` from a small-cnn source (random weights), target `{TARGET}` with per_class="
        f"{args.per_class} ({5 * args.per_class} images); feature cache built before timing; sqlite MLflow and "
        f"Optuna stores ({load}; a shared machine).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| trials per minute (whole study: parent run, {n} trials, artifacts) | **{60 * n / wall:.1f}** |\n"
        f"| study wall time, {n} trials | {wall:.1f} s |\n"
        f"| the same {n} configurations through the strategy alone (no MLflow, no Optuna; each run right after "
        f"its trial) | {train_s:.1f} s |\n"
        f"| time outside training (MLflow + Optuna + study artifacts) | **{100 * share:.1f}%** "
        f"({(wall - train_s) / n:.2f} s per trial; target < 10%{'' if share < 0.10 else ': not met here'}) |\n\n"
        "Trials run in-process, so the decoded data and the frozen features are read from the caches by every "
        "trial; what a trial adds around the strategy is its MLflow child run (params and tags in one batch each, "
        "per-epoch metrics, the checkpoint and the pyfunc model) and Optuna's storage round trips; the study adds "
        "its parent run and artifacts (the importances import scikit-learn once, ~4 s). That cost is about fixed "
        "per trial, so its share falls as trials grow." + (" " + notes if notes else "") + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=None, help="default: the YAML's (10)")
    ap.add_argument("--n-examples", type=int, default=None, help="default: the YAML's (500)")
    ap.add_argument("--width", type=int, default=None, help="default: the YAML's (2048)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steady on a shared machine)")
    ap.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    cache_root = isolated_cache()
    work = Path(tempfile.mkdtemp(prefix="rtl-bench-search-work-"))
    cwd = os.getcwd()
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        source = make_source(cache_root)
        # warm-up, untimed: decoded data, the feature cache, MLflow's store and first-call imports
        from mlflow.tracking import MlflowClient

        MlflowClient().search_experiments()
        PlainTwin(source, work, args).run({"mlp_depth": 1, "dropout": 0.0, "batch_norm": False})
        twin = PlainTwin(source, work, args)
        wall, study = run_study(source, work, args, twin)
        trials = study.get_trials()
        plain = twin.times
    finally:
        os.chdir(cwd)
        shutil.rmtree(cache_root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    load = f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f}"
    import yaml

    fixed = yaml.safe_load(SPACE.read_text())["fixed"]
    args.epochs = args.epochs or fixed["epochs"]
    args.n_examples = args.n_examples or fixed["n_examples"]
    args.width = args.width or fixed["width"]
    n = len(trials)
    train_s = sum(plain)
    trial_s = [t.duration.total_seconds() for t in trials if t.duration]
    share = 1.0 - train_s / wall
    per_trial_overhead = (wall - train_s) / n
    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    machine = f"{_stdlib_platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), {device}"
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"\nmlp_head study: {n} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
          f"{states['FAIL']} failed), {TARGET} per_class={args.per_class}, {args.epochs} epochs, "
          f"eval n_examples={args.n_examples}, width {args.width}")
    print(f"  study wall time:              {wall:8.1f} s   ({60 * n / wall:.1f} trials/min)")
    print(f"  the same configs, strategy only: {train_s:8.1f} s   (median {statistics.median(plain):.2f} s per trial, "
          "run between the study's trials)")
    print(f"  trial durations in the study: median {statistics.median(trial_s):.2f} s")
    print(f"  outside training (MLflow + Optuna + artifacts): {wall - train_s:.1f} s = {100 * share:.1f}% "
          f"({per_trial_overhead:.2f} s per trial)")
    print(f"({machine}; {load})")
    if args.write:
        write_section(section_text(args, machine, load, n, wall, train_s))
        print("wrote the '## Search' section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
