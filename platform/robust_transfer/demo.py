"""`make demo`: a short end-to-end run on real data (CIFAR-10 from ../shared/data).

1. Train two small sources on one half of the CIFAR-10 classes: natural, and robust (FGSM-RS,
   Wong et al. 2020 — adversarial training at ~2× the cost of natural training).
2. Evaluate both with PGD-20 and CW-20 (ε = 8/255) on held-out test images.
3. Print a table and where to look in the MLflow UI.
Every step is an ordinary tracked run (the same code as `rtl train` / `rtl evaluate`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .cli import quiet_third_party_output
from .commands import run_evaluate, run_train
from .config import EvaluateConfig, TrainConfig
from .errors import UserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m robust_transfer.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="cifar10-jpeg:half-a", help="source data (default: %(default)s)")
    p.add_argument("--target", default="cifar10-jpeg:half-b", help="transfer target (default: %(default)s)")
    p.add_argument("--arch", default="small-cnn")
    p.add_argument("--per-class", type=int, default=1000, help="training images per class (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n-examples", type=int, default=500, help="test images attacked (default: %(default)s)")
    p.add_argument("--experiment", default="demo")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--progress", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_third_party_output()
    t0 = time.perf_counter()
    common = dict(dataset=args.source, arch=args.arch, per_class=args.per_class, epochs=args.epochs,
                  n_examples=args.n_examples, experiment=args.experiment, data_dir=args.data_dir,
                  progress=args.progress, batch_size=128)
    rows = []
    try:
        for mode, lr in (("natural", 0.05), ("fgsm-rs", 0.05)):
            print(f"\n== [{time.perf_counter() - t0:5.0f}s] training the {mode} source on {args.source}", flush=True)
            trained = run_train(TrainConfig(mode=mode, lr=lr, register_as=f"demo-{mode}-source", **common))
            print(f"\n== [{time.perf_counter() - t0:5.0f}s] evaluating the {mode} source (PGD-20, CW-20)", flush=True)
            ev = run_evaluate(EvaluateConfig(model=trained["checkpoint"], n_examples=args.n_examples,
                                             experiment=args.experiment, data_dir=args.data_dir,
                                             progress=args.progress))
            rows.append((f"{mode} source", args.source, ev["metrics"], trained["run_id"]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code

    print(f"\nrobust-transfer demo — {args.arch}, {args.per_class}/class, {args.epochs} epochs, "
          f"ε=8/255, {args.n_examples} test images, {time.perf_counter() - t0:.0f} s in all")
    print(f"{'model':<18} {'data':<22} {'clean':>7} {'PGD-20':>7} {'CW-20':>7} {'worst':>7}  run")
    for name, data, m, run_id in rows:
        print(f"{name:<18} {data:<22} {m['clean_acc']:7.3f} {m['pgd20_acc']:7.3f} {m['cw20_acc']:7.3f} "
              f"{m['worst_acc']:7.3f}  {run_id[:8]}")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    print(f"\nLook at the runs: .venv/bin/mlflow ui --backend-store-uri {uri}  → experiment '{args.experiment}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
