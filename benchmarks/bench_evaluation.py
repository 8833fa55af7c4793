"""Evaluation speed: the `standard` suite's images/s on small-cnn and wrn-16-4, and its cost relative
to `quick`, measured side by side in one process (interleaved, benchlib's CPU clock by default).

Models are random-init at 32×32 (speed does not depend on what the weights learnt, but how long an
attack runs does: see below). Images are the first n of cifar10-jpeg's test split (random pixels
when the data is absent); labels are the model's own clean predictions, so every example is
attacked (a random-init model is right on ~10% of the true labels and the rest would be skipped).

What the numbers mean: a random-init model predicts one or two classes for everything, with margins
that ε=8/255 cannot overturn, so (almost) nothing breaks and every attack spends its full budget:
PGD/CW run all their steps, APGD all iterations and target classes, Square all its queries (3 model
calls each). That is the cost upper bound, the price of evaluating a model as robust as it gets; on
a model that breaks easily the early-exit attacks (ours, Square) stop sooner. Resuming is off.

    .venv/bin/python benchmarks/bench_evaluation.py [--n 32] [--repeats 2] [--write]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (imports robust_transfer before torch: passive OpenMP waiting)
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("small-cnn", "wrn-16-4")


def images_for(n: int) -> tuple[torch.Tensor, str]:
    if benchlib.real_data_available():
        from robust_transfer.data import load_dataset

        data = load_dataset("cifar10-jpeg", "test", progress=False)
        return data.images[:n].clone(), "cifar10-jpeg test[:n]"
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), "random pixels"


def arm(model, images, labels, suite: str, batch_size: int, last: dict):
    from robust_transfer.evaluation import evaluate_tensors

    def run():
        ev = evaluate_tensors(model, images, labels, suite=suite, n_examples=None, batch_size=batch_size,
                              device="cpu", progress=False, resume=False)
        last[suite] = ev
    return run


def write_section(text: str, path: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace (or append) the "## Evaluation" section, leaving every other section alone."""
    benchlib.write_section("Evaluation", text, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32, help="examples per evaluation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the minimum is reported")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    args = ap.parse_args(argv)

    from robust_transfer import create_model
    from robust_transfer.evaluation import SUITE_BUDGETS, SUITES, evaluate_tensors

    rows, details = [], []
    images, source = images_for(args.n)
    load_before = benchlib.loadavg()
    with benchlib.threads(args.threads):
        for arch in args.archs.split(","):
            torch.manual_seed(0)
            model = create_model(arch, 10).eval()
            with torch.no_grad():
                labels = torch.cat([model(b.float() / 255).argmax(1) for b in images.split(args.batch_size)])
            # Untimed warm-up: imports ART (seconds) and warms the allocator, on a couple of examples.
            evaluate_tensors(model, images[:2], labels[:2], suite="standard", n_examples=None, device="cpu",
                             progress=False, resume=False, apgd_iters=2, square_queries=2)
            last: dict = {}
            t = benchlib.interleaved({s: arm(model, images, labels, s, args.batch_size, last)
                                      for s in ("quick", "standard")}, args.repeats, warmup=0)
            ratio = t.ratio("standard", "quick")
            ips = args.n / t.best("standard")
            ips_quick = args.n / t.best("quick")
            per_attack = last["standard"].extra["attack_seconds"]
            flags = last["standard"].masking_flags
            rows.append((arch, ips, ips_quick, ratio, t.other_ratio("standard", "quick")))
            details.append((arch, t.summary("quick"), t.summary("standard"), per_attack,
                            last["standard"].result.metrics, flags))
            print(f"{arch}: standard {ips:.2f} img/s, quick {ips_quick:.2f} img/s ({benchlib.CLOCK} clock); "
                  f"standard/quick cost {ratio:.1f}x (other clock {rows[-1][4]:.1f}x)")
            print(f"  quick: {t.summary('quick')}\n  standard: {t.summary('standard')}")
            print("  standard per attack (s, last repeat): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in per_attack.items()))
    load_after = benchlib.loadavg()

    if args.write:
        m = benchlib.machine()
        b = SUITE_BUDGETS["standard"]
        lines = [
            "## Evaluation\n\n",
            f"`.venv/bin/python benchmarks/bench_evaluation.py --n {args.n} --batch-size {args.batch_size} "
            f"--repeats {args.repeats} --threads {args.threads} --write` — {m['cpu']}, {m['cores']} cores, "
            f"{args.threads} torch threads, CPU, torch {m['torch']}; random-init models at 32×32, "
            f"n={args.n} ({source}), labels = the model's own predictions (every example attacked); "
            f"`quick` = {', '.join(SUITES['quick'])}; `standard` = {', '.join(SUITES['standard'])} at its "
            f"default budget (APGD {b.apgd_iters} iterations, {b.apgd_targets} targets; Square "
            f"{b.square_queries} queries) plus the gradient-masking diagnostics (∇ₓ check, two-pass check, "
            f"PGD-20 at ε=64); no resuming. Minimum of {args.repeats} interleaved repeats by the "
            f"{benchlib.CLOCK} clock (load average {load_before} before, {load_after} after: a shared "
            "machine, so absolute rates are indicative only).\n\n",
            f"| model | `standard` img/s | `quick` img/s | cost `standard` / `quick` ({benchlib.CLOCK}) | "
            "same ratio, other clock |\n|---|---|---|---|---|\n",
        ]
        lines += [f"| {a} | {ips:.2f} | {q:.2f} | **{r:.1f}×** | {o:.1f}× |\n" for a, ips, q, r, o in rows]
        lines.append("\nWhere `standard`'s time goes (seconds of the last repeat, per attack):\n\n")
        for arch, _q, _s, per_attack, metrics, flags in details:
            lines.append(f"- {arch}: " + ", ".join(f"{k} {v:.2f}" for k, v in per_attack.items())
                         + f" (accuracies vs its own labels: clean {metrics['clean_acc']:.2f}, pgd20 "
                         f"{metrics['pgd20_acc']:.2f}, aa {metrics['aa_acc']:.2f}; masking flags: "
                         f"{', '.join(flags) or 'none'})\n")
        lines.append("\nRandom-init models predict one or two classes for almost every input, and the examples "
                     "that ε=8/255 cannot flip (see the accuracies above) make every attack spend its full "
                     "budget: PGD-100 and above all Square (1000 queries × 3 model calls, on every live "
                     "example) dominate, so these are upper bounds on the cost (the flags on such degenerate "
                     "models, with n this small, say little). On a model that breaks easily the early-exit "
                     "attacks (our PGD/CW, Square) stop sooner; ART's APGD always runs all its iterations. "
                     "Budget knobs (`square_queries`, `apgd_iters`, `apgd_targets`, ...) trade strength for "
                     "time; resumed runs cost nothing for the finished attacks.\n")
        write_section("".join(lines))
        print("wrote the '## Evaluation' section of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
