"""`make demo`: a short end-to-end run on real data: CIFAR-10 from the offline mirror
(../shared/data/cifar10-jpeg.tar.gz) when it is there, else CIFAR-10 downloaded once into the data
root (~/.cache/robust-transfer/data, or RTL_DATA_DIR / --data-dir; RTL_DATA_MIRROR for another URL).

1. Train two small sources on one half of the CIFAR-10 classes: natural, and robust (FGSM-RS,
   Wong et al. 2020 — adversarial training at ~2× the cost of natural training).
2. Evaluate both with PGD-20 and CW-20 (ε = 8/255) on held-out test images.
3. Transfer both to the other half of the classes with a linear head on frozen features (Eq. 2):
   robustness comes along only from the robust source (Table 2).
4. One LwF run from the robust source (Eq. 3, section 6).
5. A small multi-objective search over λ_d (validation clean vs PGD-10 accuracy: the Pareto front),
   then promote the best trial to `champion` by a stated policy over validation metrics and load it
   back by alias; test-set numbers (clean, PGD-20, CW-20) are only reported.
Every step is an ordinary tracked run (the same code as the `rtl` subcommands).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .cli import quiet_third_party_output
from . import load_model
from .commands import run_evaluate, run_lwf, run_promote, run_search, run_train, run_transfer
from .config import EvaluateConfig, LwfConfig, PromoteConfig, SearchConfig, TrainConfig, TransferConfig
from .errors import UserError
from .resources import named_file


SPACE = named_file("search_spaces", "lwf_lambda_pareto")  # shipped with the package (resources.py)
POLICY = "max (val_clean_acc + val_pgd10_acc) / 2"   # chosen on validation; test numbers reported


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m robust_transfer.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="cifar10-jpeg:half-a", help="source data (default: %(default)s)")
    p.add_argument("--target", default="cifar10-jpeg:half-b", help="transfer target (default: %(default)s)")
    p.add_argument("--arch", default="small-cnn")
    p.add_argument("--per-class", type=int, default=1000, help="source images per class (default: %(default)s)")
    p.add_argument("--target-per-class", type=int, default=500, help="target images per class (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4, help="source training epochs (default: %(default)s)")
    p.add_argument("--head-epochs", type=int, default=30, help="linear-head epochs on cached features")
    p.add_argument("--lwf-iterations", type=int, default=150)
    p.add_argument("--trials", type=int, default=4, help="λ_d search trials (default: %(default)s)")
    p.add_argument("--n-examples", type=int, default=500, help="test images attacked (default: %(default)s)")
    p.add_argument("--experiment", default="demo")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--progress", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    return p.parse_args(argv)


class Clock:
    def __init__(self):
        self.t0 = time.perf_counter()

    def step(self, text: str) -> None:
        print(f"\n== [{time.perf_counter() - self.t0:5.0f}s] {text}", flush=True)

    def total(self) -> float:
        return time.perf_counter() - self.t0


def prepare_data(args) -> None:
    """Without the offline mirror's cifar10-jpeg, use CIFAR-10 itself, downloading it once (checksummed)."""
    from .data.download import download
    from .data.paths import resolve_data_dir

    if not any(s.split(":", 1)[0] == "cifar10-jpeg" for s in (args.source, args.target)):
        return
    root = resolve_data_dir(args.data_dir)
    if (root / "cifar10-jpeg.tar.gz").exists() or (root / "cifar10-jpeg").exists():
        return
    print(f"no offline mirror of cifar10-jpeg in {root}: using CIFAR-10 from its public archive instead")
    download("cifar10", root)
    args.source = args.source.replace("cifar10-jpeg", "cifar10", 1)
    args.target = args.target.replace("cifar10-jpeg", "cifar10", 1)
    args.data_dir = str(root)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_third_party_output()
    clock = Clock()
    try:
        prepare_data(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    io = dict(experiment=args.experiment, data_dir=args.data_dir, progress=args.progress)
    rows: list[tuple[str, str, dict]] = []
    try:
        sources = {}
        for mode in ("natural", "fgsm-rs"):
            clock.step(f"training the {mode} source on {args.source}")
            sources[mode] = run_train(TrainConfig(
                mode=mode, lr=0.05, dataset=args.source, arch=args.arch, per_class=args.per_class,
                epochs=args.epochs, n_examples=args.n_examples, batch_size=128, register_as=f"demo-{mode}-source", **io))
            clock.step(f"evaluating the {mode} source (PGD-20, CW-20)")
            ev = run_evaluate(EvaluateConfig(model=sources[mode]["checkpoint"], n_examples=args.n_examples, **io))
            rows.append((f"{mode} source", args.source, ev["metrics"]))

        for mode, src in sources.items():
            clock.step(f"linear transfer from the {mode} source to {args.target} (frozen features, Eq. 2)")
            out = run_transfer(TransferConfig(source_model=src["checkpoint"], target=args.target, head="linear",
                                              per_class=args.target_per_class, epochs=args.head_epochs,
                                              n_examples=args.n_examples, **io))
            rows.append((f"transfer ← {mode}", args.target, out["metrics"]))

        robust = sources["fgsm-rs"]["checkpoint"]
        clock.step(f"LwF from the robust source to {args.target} (λ_d = 0.1, Eq. 3)")
        out = run_lwf(LwfConfig(source_model=robust, target=args.target, lambda_d=0.1, lr=0.01,
                                iterations=args.lwf_iterations, per_class=args.target_per_class,
                                n_examples=args.n_examples, **io))
        rows.append(("lwf ← fgsm-rs", args.target, out["metrics"]))

        clock.step(f"multi-objective λ_d search ({args.trials} trials): validation clean vs PGD-10")
        overrides = (f"source_model={robust} target={args.target} iterations={args.lwf_iterations} "
                     f"per_class={args.target_per_class} n_examples={args.n_examples} lr=0.01")
        study = f"demo-lwf-lambda-{int(time.time())}"
        found = run_search(SearchConfig(space=str(SPACE), study_name=study, trials=args.trials, set=overrides,
                                        storage="sqlite:///optuna.db", experiment=args.experiment,
                                        quiet=False))

        clock.step(f"promoting the best trial by policy: {POLICY}")
        decision = run_promote(PromoteConfig(name="demo-lwf", study=study, storage="sqlite:///optuna.db",
                                             policy=POLICY, experiment=args.experiment))
        champion = load_model("models:/demo-lwf@champion")
        ev = run_evaluate(EvaluateConfig(model="models:/demo-lwf@champion", n_examples=args.n_examples,
                                         dataset=args.target, **io))
        rows.append(("champion (loaded)", args.target, ev["metrics"]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code

    print(f"\nrobust-transfer demo — {args.arch}; sources {args.per_class}/class × {args.epochs} epochs, "
          f"targets {args.target_per_class}/class; ε=8/255, {args.n_examples} test images; {clock.total():.0f} s in all")
    print(f"{'model':<20} {'data':<22} {'clean':>7} {'PGD-20':>7} {'CW-20':>7}")
    for name, data, m in rows:
        cw = f"{m['cw20_acc']:7.3f}" if "cw20_acc" in m else f"{'':>7}"
        print(f"{name:<20} {data:<22} {m['clean_acc']:7.3f} {m['pgd20_acc']:7.3f} {cw}")
    print("\nλ_d search, Pareto front on the validation split (val clean, val PGD-10):")
    for t in found["best"]:
        print(f"  trial {t['number']}: λ_d={t['params']['lambda_d']:.2e}  clean {t['values'][0]:.3f}  "
              f"PGD-10 {t['values'][1]:.3f}")
    print(f"promote: demo-lwf version {decision['version']} {decision['decision']} — {decision['reason']}")
    print(f"loaded models:/demo-lwf@champion → {type(champion).__name__} ({champion.arch}, "
          f"{champion.num_classes} classes)")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    print(f"\nLook at the runs: .venv/bin/mlflow ui --backend-store-uri {uri}  → experiment '{args.experiment}'")
    print("Watch the search:  .venv/bin/optuna-dashboard sqlite:///optuna.db")
    return 0


if __name__ == "__main__":
    sys.exit(main())
