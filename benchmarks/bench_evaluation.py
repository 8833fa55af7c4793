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

`--cascade` (issue 15): on a TRAINED robust small-cnn (the demo's robust source recipe: FGSM-RS on
cifar10-jpeg:half-a, cached under cache_dir()/bench), each of `quick`, `standard` with the cascade,
`standard` without it and the reference AutoAttack (`suite=autoattack`) once on the same n test
examples: cost ratios against `quick` (CPU seconds of this process; target: `standard` ≤ 10×),
`standard_worst_acc` of the two `standard` runs and their worst case per example (ASSERTED identical: the exit
status is 1 otherwise), CPU seconds per attack. `--archs small-cnn,wrn-16-4` adds a random-init
wrn-16-4 (labels = its own predictions) on `--wrn-n` examples (the reference too with
`--wrn-reference`). Writes "## Evaluation: cascade and reference AutoAttack" at the end of
docs/benchmarks.md with --write.

    nice -n 19 .venv/bin/python benchmarks/bench_evaluation.py --cascade --n 500 --batch-size 250 --threads 1 \
        --archs small-cnn,wrn-16-4 --wrn-n 8 --write
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


DEMO_ROBUST = {"arch": "small-cnn", "dataset": "cifar10-jpeg:half-a", "mode": "fgsm-rs", "updates": 160,
               "batch_size": 128, "lr": 0.05, "seed": 0}   # the demo's robust source: 4 epochs of 5000 images
CASCADE_TARGET = 10.0     # cost of standard (cascade) / quick


def timed_eval(model, images, labels, **kw) -> tuple[object, float, float]:
    import time

    from robust_transfer.evaluation import evaluate_tensors

    w0, c0 = time.perf_counter(), time.process_time()
    ev = evaluate_tensors(model, images, labels, n_examples=None, device="cpu", progress=False, resume=False, **kw)
    return ev, time.process_time() - c0, time.perf_counter() - w0


ARMS = {"quick": dict(suite="quick"), "standard": dict(suite="standard"),
        "standard-nocascade": dict(suite="standard", cascade=False), "autoattack": dict(suite="autoattack")}


def cascade_arms(model, images, labels, batch_size: int, with_reference: bool = True, names=None) -> dict:
    """quick, standard (cascade), standard (no cascade), autoattack (or `names` of them): once each on the
    same examples."""
    names = names or [a for a in ARMS if with_reference or a != "autoattack"]
    arms = {a: ARMS[a] for a in names}
    out = {}
    for name, kw in arms.items():
        ev, cpu, wall = timed_eval(model, images, labels, batch_size=batch_size, **kw)
        out[name] = {"ev": ev, "cpu_s": cpu, "wall_s": wall, "metrics": ev.result.metrics,
                     "attack_seconds": ev.extra["attack_seconds"], "attack_cpu_seconds": ev.extra["attack_cpu_seconds"],
                     "attacked": ev.extra["attacked"], "flags": ev.masking_flags}
        m = ev.result.metrics
        print(f"  {name}: cpu {cpu:.1f} s, wall {wall:.1f} s; " + ", ".join(
            f"{k} {v:.3f}" for k, v in m.items() if k.endswith("_acc") and not k.startswith("diag_")), flush=True)
        print("    cpu s per attack: " + ", ".join(f"{k} {v:.1f}" for k, v in ev.extra["attack_cpu_seconds"].items())
              + "; examples attacked: " + ", ".join(f"{k} {v}" for k, v in ev.extra["attacked"].items()
                                                    if k != "clean"), flush=True)
    return out


def assert_cascade_identical(arch: str, s: dict) -> bool:
    """The bench's assertion (printed, and the exit status): `standard`'s worst case (`standard_worst_acc`) and the
    worst case per example are the same with and without the cascade on the same examples."""
    ok = s["aa_cascade"] == s["aa_nocascade"] and s["worst_differs"] == 0
    print(f"  ASSERT {arch}: standard_worst_acc with the cascade {s['aa_cascade']:.4f} == without "
          f"{s['aa_nocascade']:.4f}, "
          f"worst case differs on {s['worst_differs']} of {s['n']} examples: {'OK' if ok else 'FAILED'}", flush=True)
    return ok


def cascade_summary(arms: dict) -> dict:
    q = arms["quick"]["cpu_s"]
    std, nocas = arms["standard"], arms["standard-nocascade"]
    worst_c = torch.stack(list(std["ev"].result.correct.values())).all(0)
    worst_n = torch.stack(list(nocas["ev"].result.correct.values())).all(0)
    s = {"ratio_standard_cascade": std["cpu_s"] / q, "ratio_standard_nocascade": nocas["cpu_s"] / q,
         "aa_cascade": std["metrics"]["worst_acc"], "aa_nocascade": nocas["metrics"]["worst_acc"],
         "worst_differs": int((worst_c != worst_n).sum()), "n": int(worst_c.numel())}
    if "autoattack" in arms:
        s["ratio_autoattack"] = arms["autoattack"]["cpu_s"] / q
        s["aa_reference"] = arms["autoattack"]["metrics"]["aa_acc"]
    return s


def run_cascade(args) -> int:
    from bench_attacks import robust_model

    from robust_transfer import create_model
    from robust_transfer.data import load_dataset
    from robust_transfer.evaluation import select_examples

    results, load_before = {}, benchlib.loadavg()
    with benchlib.threads(args.threads):
        model, info = robust_model(DEMO_ROBUST)
        test = load_dataset(DEMO_ROBUST["dataset"], "test", progress=False)
        idx = select_examples(len(test), args.n, 0)
        images, labels = test.images[idx].clone(), test.labels[idx].clone()
        print(f"small-cnn (robust, {info['source']}), n={args.n}:", flush=True)
        if args.reference_only:      # quick and the reference only (e.g. in a second process, alongside)
            arms = cascade_arms(model, images, labels, args.batch_size, names=["quick", "autoattack"])
            q = arms["quick"]["cpu_s"]
            print(f"  reference ÷ quick (CPU): {arms['autoattack']['cpu_s'] / q:.1f}×; aa_acc "
                  f"{arms['autoattack']['metrics']['aa_acc']:.4f}", flush=True)
            return 0
        # The reference last (it takes longest): the rows that have targets come first.
        arms = cascade_arms(model, images, labels, args.batch_size, with_reference=False)
        results["small-cnn"] = {"arms": arms, "summary": cascade_summary(arms), "info": info}
        print("  ", results["small-cnn"]["summary"], flush=True)
        identical = assert_cascade_identical("small-cnn", results["small-cnn"]["summary"])
        if "wrn-16-4" in args.archs.split(","):
            torch.manual_seed(0)
            wrn = create_model("wrn-16-4", 10).eval()
            x = images[:args.wrn_n]
            with torch.no_grad():
                y = wrn(x.float() / 255).argmax(1)
            print(f"wrn-16-4 (random init, labels = its predictions), n={args.wrn_n}:", flush=True)
            arms = cascade_arms(wrn, x, y, args.batch_size, with_reference=args.wrn_reference)
            results["wrn-16-4"] = {"arms": arms, "summary": cascade_summary(arms), "info": {"source": "random init"}}
            print("  ", results["wrn-16-4"]["summary"], flush=True)
            identical &= assert_cascade_identical("wrn-16-4", results["wrn-16-4"]["summary"])
        if not args.no_reference:
            print(f"small-cnn, the reference AutoAttack, n={args.n}:", flush=True)
            small = results["small-cnn"]
            small["arms"].update(cascade_arms(model, images, labels, args.batch_size, names=["autoattack"]))
            small["summary"] = cascade_summary(small["arms"])
            print("  ", small["summary"], flush=True)
    load_after = benchlib.loadavg()
    raw = {arch: {"summary": r["summary"], "info": r["info"],
                  "arms": {a: {k: v for k, v in d.items() if k != "ev"} for a, d in r["arms"].items()}}
           for arch, r in results.items()}
    from robust_transfer.data import cache_dir

    out = cache_dir() / "bench" / "evaluation_cascade.json"     # raw numbers, outside the repository
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(__import__("json").dumps(raw, indent=1, default=str))
    if args.write:
        write_cascade_section(args, results, load_before, load_after)
    return 0 if identical else 1


def write_cascade_section(args, results, load_before, load_after) -> None:
    from robust_transfer.evaluation import SUITES

    m = benchlib.machine()
    small = results["small-cnn"]
    s = small["summary"]
    b = SUITES["standard"].budget
    lines = ["## Evaluation: cascade and reference AutoAttack\n\n",
             f"`nice -n 19 .venv/bin/python benchmarks/bench_evaluation.py --cascade --n {args.n} --batch-size "
             f"{args.batch_size} --threads {args.threads} --archs {args.archs} --wrn-n {args.wrn_n} --write` (issue 15; "
             f"not part of `make bench`, whose 10-minute budget it exceeds) — {m['cpu']}, {m['cores']} cores, "
             f"{args.threads} torch thread(s), CPU, torch {m['torch']}; one run of each arm, in one process, on the same "
             f"examples; cost = CPU seconds of this process (wall seconds alongside; load average {load_before} before, "
             f"{load_after} after: the machine was shared). small-cnn: the demo's robust source recipe (FGSM-RS, "
             f"{DEMO_ROBUST['dataset']}, {DEMO_ROBUST['updates']} updates of {DEMO_ROBUST['batch_size']}; "
             f"{small['info']['source']}), n={args.n} seeded test examples of {DEMO_ROBUST['dataset']}. "
             f"`standard` = {', '.join(SUITES['standard'].attacks[1:])} (APGD {b.apgd_iters} iterations, APGD-T "
             f"{b.apgd_targets} targets, Square {b.square_queries} queries; APGD and Square are pyautoattack's code) "
             f"+ the gradient-masking diagnostics; `autoattack` = the reference (pyautoattack, version standard).\n\n",
             "| model | arm | CPU s | wall s | cost ÷ `quick` (CPU) | clean | pgd20 | `aa_acc` (reference) or `standard_worst_acc` | examples attacked per attack |\n",
             "|---|---|---|---|---|---|---|---|---|\n"]
    for arch, r in results.items():
        q = r["arms"]["quick"]["cpu_s"]
        for arm, d in r["arms"].items():
            mt = d["metrics"]
            att = ", ".join(f"{k} {v}" for k, v in d["attacked"].items() if k != "clean")
            pgd20 = f"{mt['pgd20_acc']:.3f}" if "pgd20_acc" in mt else "—"
            aa = next((f"{mt[k]:.3f}" for k in ("aa_acc", "standard_worst_acc") if k in mt), "—")
            lines.append(f"| {arch} | {arm} | {d['cpu_s']:.1f} | {d['wall_s']:.1f} | **{d['cpu_s'] / q:.1f}×** | "
                         f"{mt['clean_acc']:.3f} | {pgd20} | {aa} | {att} |\n")
    status = "PASS" if s["ratio_standard_cascade"] <= CASCADE_TARGET else "FAIL"
    same = "identical" if s["aa_cascade"] == s["aa_nocascade"] and s["worst_differs"] == 0 else "NOT identical"
    lines += ["\n", f"- Target `standard` (cascade) ÷ `quick` ≤ {CASCADE_TARGET:g}× (small-cnn): "
              f"**{s['ratio_standard_cascade']:.1f}×, {status}** (without the cascade: "
              f"{s['ratio_standard_nocascade']:.1f}×).\n",
              f"- Asserted by the bench (its exit status): `standard_worst_acc` with and without the cascade on the same examples "
              f"{s['aa_cascade']:.4f} vs {s['aa_nocascade']:.4f}, **{same}**; the worst case differs on "
              f"{s['worst_differs']} of {s['n']} examples. Our PGD/CW and pyautoattack's APGD/Square as the engine runs "
              "them draw each example's random start from its position in its batch, and Square's proposals per "
              "iteration, so which examples share a call changes nothing per example.\n"]
    if "aa_reference" in s:
        lines.append(f"- The reference AutoAttack (pyautoattack, standard) on the same examples: aa_acc "
                     f"{s['aa_reference']:.3f} (ours, `standard`: {s['aa_cascade']:.3f}) at "
                     f"{s['ratio_autoattack']:.1f}× the cost of `quick`.\n")
    for arch, r in results.items():
        for arm in ("quick", "standard", "standard-nocascade", "autoattack"):
            if arm in r["arms"]:
                secs = r["arms"][arm]["attack_cpu_seconds"]
                lines.append(f"- {arch} {arm}, CPU seconds per attack: "
                             + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()) + "\n")
    text = "".join(lines)
    benchlib.write_section("Evaluation: cascade and reference AutoAttack", text, REPO / "docs" / "benchmarks.md")
    print("wrote the '## Evaluation: cascade and reference AutoAttack' section of docs/benchmarks.md")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32, help="examples per evaluation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the minimum is reported")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    ap.add_argument("--cascade", action="store_true", help="the cascade / reference AutoAttack benchmark (issue 15)")
    ap.add_argument("--wrn-n", type=int, default=4, help="--cascade: wrn-16-4 examples")
    ap.add_argument("--no-reference", action="store_true", help="--cascade: skip the reference AutoAttack")
    ap.add_argument("--reference-only", action="store_true",
                    help="--cascade: only quick and the reference on small-cnn (no --write), e.g. in a second process")
    ap.add_argument("--wrn-reference", action="store_true",
                    help="--cascade: the reference AutoAttack on wrn-16-4 too (its 5000 Square queries on a random-init "
                         "wrn-16-4, where nothing breaks, take hours on 2 CPU cores)")
    args = ap.parse_args(argv)
    if args.cascade:
        return run_cascade(args)

    from robust_transfer import create_model
    from robust_transfer.evaluation import SUITES, evaluate_tensors

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
        b = SUITES["standard"].budget
        lines = [
            "## Evaluation\n\n",
            f"`.venv/bin/python benchmarks/bench_evaluation.py --n {args.n} --batch-size {args.batch_size} "
            f"--repeats {args.repeats} --threads {args.threads} --write` — {m['cpu']}, {m['cores']} cores, "
            f"{args.threads} torch threads, CPU, torch {m['torch']}; random-init models at 32×32, "
            f"n={args.n} ({source}), labels = the model's own predictions (every example attacked); "
            f"`quick` = {', '.join(SUITES['quick'].attacks)}; `standard` = {', '.join(SUITES['standard'].attacks)} at its "
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
