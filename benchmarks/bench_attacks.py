"""PGD-20 evaluation speed: ours vs the bare cost, early exit on a robust-ish model, and ART's PyTorch PGD.

Four arms on the same model and the same real test images (cifar10-jpeg), interleaved:

    bare   20 × (forward + backward w.r.t. the input only, parameters frozen) + 1 forward of the model
           as given: the floor of a PGD-20 that runs the model as it is
    plain  robust_transfer.attacks.pgd_attack(steps=20, early_exit=False) — it attacks a view of the
           model with eval-mode BatchNorm folded into the convolutions (attacks/fold.py), in channels_last
    ee     the same with early_exit=True (misclassified examples stop being attacked)
    l2     the plain arm under the ℓ2 threat (norm="l2", ε 0.5, step 0.125: normalised-gradient steps, the
           projection onto the ℓ2 ball ∩ [0,1]); its floor is the same model calls as the ℓ∞ one's
    ART    art.attacks.evasion.ProjectedGradientDescentPyTorch (eps 8/255, eps_step 2/255, max_iter 20,
           num_random_init 1, batch_size = all examples, y given)

The model is a "robust-ish" small-cnn: briefly FGSM-RS-trained on cifar10-jpeg by this script (the
checkpoint is kept under RTL_CACHE_DIR/bench/ and reused), or the checkpoint/URI in
RTL_BENCH_ROBUST_MODEL (e.g. the demo's robust source). Early exit must not raise the reported
accuracy: asserted here against the plain run with the same random start.

Two layouts of the same weights: channels_last (the library's training format; the main rows) and
the model as `load_model` returns it (NCHW: what `rtl evaluate` attacks and what one hands ART),
for which ART ÷ ours is reported separately. `bare_folded` (the floor of the folded view) shows
what ours adds on top of the model calls: the per-step bookkeeping.

    .venv/bin/python benchmarks/bench_attacks.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import CLOCK, Row, interleaved, print_rows, real_data_available  # noqa: E402  (first: see benchlib)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from robust_transfer.attacks import ThreatModel, pgd_attack  # noqa: E402
from robust_transfer.evaluation import select_examples  # noqa: E402
from robust_transfer.models import create_model  # noqa: E402

THREAT = ThreatModel(8, 2)
THREAT_L2 = ThreatModel(0.5, 0.125, "l2")     # RobustBench's CIFAR-10 ℓ2 radius, step ε/4 (issue 25)
ROBUST_RECIPE = {"arch": "small-cnn", "dataset": "cifar10-jpeg", "mode": "fgsm-rs", "updates": 100, "batch_size": 64,
                 "lr": 0.05, "seed": 0}


def robust_model(recipe: dict = ROBUST_RECIPE, *, use_cache: bool = True) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, info): RTL_BENCH_ROBUST_MODEL if set, else a briefly FGSM-RS-trained small-cnn."""
    from robust_transfer.strategies.common import memory_format_for

    model, info = _robust_model(recipe, use_cache=use_cache)
    # attacked in the memory format the library trains in (channels_last: ~1.4x faster PGD steps on the CPU)
    return model.to(memory_format=memory_format_for(getattr(model, "arch", ""))).eval(), info


def _robust_model(recipe: dict, *, use_cache: bool) -> tuple[torch.nn.Module, dict]:
    uri = os.environ.get("RTL_BENCH_ROBUST_MODEL")
    if uri:
        from robust_transfer import load_model_with_meta

        model, meta = load_model_with_meta(uri)
        return model.eval(), {"source": uri, "arch": meta.get("arch"), "data_spec": meta.get("data_spec")}
    import hashlib
    import json

    from robust_transfer.checkpoints import load_checkpoint, save_checkpoint
    from robust_transfer.data import cache_dir

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "bench" / f"robust-{recipe['arch']}-{key}"
    if use_cache and (path / "meta.json").is_file():
        try:
            model, _ = load_checkpoint(path)
            return model.eval(), {"source": f"cached ({path})", **recipe, "train_s": None}
        except Exception:  # a corrupt cache only costs retraining
            pass
    start = time.perf_counter()
    model = train_robustish(recipe)
    info = {"source": "trained here", **recipe, "train_s": round(time.perf_counter() - start, 1)}
    if use_cache:
        try:
            save_checkpoint(path, model, {"data_spec": recipe["dataset"], "classes": [str(i) for i in range(10)]})
        except Exception as e:  # a read-only cache only costs retraining next time
            print(f"warning: cannot keep the bench model in {path} ({e})", file=sys.stderr)
    return model.eval(), info


def train_robustish(recipe: dict) -> torch.nn.Module:
    """`updates` FGSM-RS minibatch updates (Wong et al. 2020) with the library's training objective, optimiser
    updates (strategies.engine) and BatchLoader."""
    from robust_transfer.config import TrainConfig
    from robust_transfer.data import BatchLoader, load_dataset
    from robust_transfer.strategies.common import FastPath, lr_at, make_sgd, memory_format_for
    from robust_transfer.strategies.engine import Batch, optimiser_updates
    from robust_transfer.strategies.train import ModeObjective

    torch.manual_seed(recipe["seed"])
    data = load_dataset(recipe["dataset"], "train", progress=False)
    fmt = memory_format_for(recipe["arch"])
    model = create_model(recipe["arch"], data.num_classes).to(memory_format=fmt).train()
    opt = make_sgd(model.parameters(), recipe["lr"])
    cfg = TrainConfig(arch=recipe["arch"], mode=recipe["mode"], progress=False, device="cpu")
    objective = ModeObjective(cfg, model, THREAT)
    gen, fast = torch.Generator().manual_seed(recipe["seed"]), FastPath(torch.device("cpu"), None, fmt)
    loader = BatchLoader(data, recipe["batch_size"], shuffle=True, augment=True, seed=recipe["seed"],
                         memory_format=fmt)
    done, total = 0, recipe["updates"]
    while done < total:
        for x, y in loader:
            _, done = optimiser_updates(objective, opt, Batch.of(x, y, gen), done, fast=fast, last=total,
                                        lr_for=lambda u: lr_at(u, total, recipe["lr"], "cosine"))
            if done >= total:
                break
    return model.eval()


def eval_examples(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n seeded cifar10-jpeg test images as float pixels (random pixels when the real data is absent)."""
    if real_data_available():
        from robust_transfer.data import load_dataset

        test = load_dataset("cifar10-jpeg", "test", progress=False)
        idx = select_examples(len(test), n, seed)
        return test.images[idx].float().div_(255), test.labels[idx]
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def bare_pgd_cost(model, x, y, steps: int = 20) -> None:
    """The floor: `steps` × (forward + backward w.r.t. the input only, parameters frozen) + 1 forward,
    no bookkeeping, no update."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        xa = x.clone()
        for _ in range(steps):
            xa.requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
            xa = xa.detach()
        with torch.no_grad():
            model(xa)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def ours(model, x, y, steps: int = 20, early_exit: bool = False, threat: ThreatModel = THREAT):
    return pgd_attack(model, x, y, eps=threat.eps, alpha=threat.alpha, steps=steps, early_exit=early_exit,
                      generator=torch.Generator().manual_seed(0), norm=threat.norm)


def art_attack(model, n: int, steps: int = 20):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32),
                            nb_classes=model.num_classes, clip_values=(0.0, 1.0), device_type="cpu")
    return ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=THREAT.eps, eps_step=THREAT.alpha, max_iter=steps,
                                           num_random_init=1, batch_size=n, verbose=False)


def folded_view(model):
    from robust_transfer.attacks.fold import attack_view

    return attack_view(model.eval())


def pgd_rows(model, x, y, *, repeats: int = 2, with_art: bool = True) -> tuple[list[Row], dict]:
    model.eval()
    n = len(y)
    view = folded_view(model)
    arms = {"bare": lambda: bare_pgd_cost(model, x, y), "plain": lambda: ours(model, x, y),
            "ee": lambda: ours(model, x, y, early_exit=True), "bare_folded": lambda: bare_pgd_cost(view, x, y),
            "l2": lambda: ours(model, x, y, threat=THREAT_L2)}
    art_adv = {}
    if with_art:
        atk = art_attack(model, n)
        xn, yn = x.numpy(), y.numpy()
        arms["art"] = lambda: art_adv.__setitem__("x", atk.generate(xn, y=yn))
        art_attack(model, n, steps=1).generate(xn, y=yn)  # warm-up (ART's first call sets things up)
    bare_pgd_cost(model, x, y, steps=1)  # warm-up: oneDNN primitives for these shapes
    tm = interleaved(arms, repeats, warmup=0)
    plain_out, ee_out = ours(model, x, y), ours(model, x, y, early_exit=True)
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    plain_acc, ee_acc = (~plain_out.fooled).float().mean().item(), (~ee_out.fooled).float().mean().item()
    l2_acc = (~ours(model, x, y, threat=THREAT_L2).fooled).float().mean().item()
    # early exit must not raise the reported accuracy (same random start: it should be identical)
    assert ee_acc <= plain_acc, f"early exit raised PGD-20 accuracy: {ee_acc} > {plain_acc}"
    raw = {"n": n, "clean_acc": clean_acc, "pgd20_acc_plain": plain_acc, "pgd20_acc_early_exit": ee_acc,
           "pgd20_acc_l2": l2_acc,
           "forward_images_plain": plain_out.forward_images, "forward_images_ee": ee_out.forward_images,
           **{name: tm.summary(name) for name in tm.names()}}
    if with_art:
        with torch.no_grad():
            raw["pgd20_acc_art"] = (model(torch.from_numpy(art_adv["x"])).argmax(1) == y).float().mean().item()
    acc = f"clean {clean_acc:.2f}, PGD-20 {plain_acc:.2f}"
    out = [
        Row("Attacks", "PGD-20 evaluation, plain ÷ bare cost", f"pgd_attack(early_exit=False) ÷ (20 × (fwd + bwd "
            f"w.r.t. the input only, parameters frozen) + 1 fwd) of the model as given (channels_last), {n} images",
            tm.ratio("plain", "bare"), 1.0, "<=", alt=tm.other_ratio("plain", "bare"),
            note="ours attacks the model with eval-mode BatchNorm folded into its convolutions (the same function); "
                 "against the floor of that folded view it pays the per-step bookkeeping (sign step, projection, "
                 "best-iterate tracking), see the next row"),
        Row("Attacks", "PGD-20 ℓ2 evaluation, plain ÷ bare cost", f"pgd_attack(norm='l2', ε 0.5, step 0.125, "
            f"early_exit=False) ÷ the same floor as the row above (the model as given, channels_last), {n} images "
            f"(PGD-20 ℓ2 accuracy {l2_acc:.2f})", tm.ratio("l2", "bare"), 1.0, "<=", alt=tm.other_ratio("l2", "bare"),
            note="the ℓ2 step adds two per-example norms (of the gradient and of δ) and a rescale to the ℓ∞ "
                 "step's sign and clamp"),
        Row("Attacks", "PGD-20 evaluation, plain ÷ bare cost of the BN-folded view",
            "pgd_attack(early_exit=False) ÷ the same floor on the folded view it attacks: what ours adds",
            tm.ratio("plain", "bare_folded"), alt=tm.other_ratio("plain", "bare_folded")),
        Row("Attacks", "PGD-20 evaluation, early exit ÷ bare cost", f"pgd_attack(early_exit=True) ÷ (20 fwd+bwd + 1 fwd) "
            f"on the robust-ish model ({acc}; with early exit {ee_acc:.2f}, asserted not higher)",
            tm.ratio("ee", "bare"), 0.6, "<=", alt=tm.other_ratio("ee", "bare"),
            note="early exit saves work in proportion to the examples already fooled; the saving is smaller the "
                 "more robust the model"),
        Row("Attacks", "PGD-20 evaluation images/s, plain", f"wall clock, {n} images, small-cnn "
            f"({n / tm.best('plain', 'cpu'):.1f} per CPU-second)", n / tm.best("plain", "wall"), unit="img/s"),
        Row("Attacks", "PGD-20 evaluation images/s, early exit", f"wall clock, {n} images, robust-ish small-cnn "
            f"({n / tm.best('ee', 'cpu'):.1f} per CPU-second)", n / tm.best("ee", "wall"), unit="img/s"),
    ]
    if with_art:
        art_bare, fold_gain = tm.ratio("art", "bare"), tm.ratio("bare", "bare_folded")
        raw["art_over_bare"], raw["bare_over_bare_folded"] = art_bare, fold_gain
        art_note = (f"ART's loss_gradient calls loss.backward(), which also computes every parameter's gradient, and "
                    f"its generate() ends with two extra predict passes: ART costs {art_bare:.2f}× the bare floor of "
                    f"this channels_last model; ours runs below that floor by attacking the BN-folded view "
                    f"({fold_gain:.2f}× cheaper per step here), so ART ÷ ours ≈ {art_bare:.2f} × {fold_gain:.2f} "
                    f"÷ (ours' bookkeeping ≈ 1.0). The former target ART ÷ ours ≥ 2.5 is retired (issue 15: ~1.8–2.2 is what "
                    f"honest code reaches; reaching 2.5 would need ours at {art_bare / 2.5:.2f}× the floor); the row is "
                    f"information, the target that stays is ours ÷ floor ≤ 1.0; "
                    f"what is left of a folded small-cnn step is convolutions (~36%, profiler), ReLU (~18%), "
                    f"max-pooling (~9%) and small elementwise ops, none of which the attack can drop")
        out += [Row("Attacks", "ART PGD-20 ÷ ours (plain)", f"ProjectedGradientDescentPyTorch.generate ÷ pgd_attack("
                    f"early_exit=False), same channels_last model and {n} images (ART's accuracy "
                    f"{raw['pgd20_acc_art']:.2f})", tm.ratio("art", "plain"), None, "",
                    alt=tm.other_ratio("art", "plain"), note=art_note),
                Row("Attacks", "ART PGD-20 ÷ ours (early exit)", "the same, ours with early_exit=True",
                    tm.ratio("art", "ee"), None, "", alt=tm.other_ratio("art", "ee"), note=art_note)]
    return out, raw


def as_loaded_rows(model, x, y, *, repeats: int = 2) -> tuple[list[Row], dict]:
    """ART ÷ ours on the model as `load_model` returns it (NCHW): the same object handed to both, as
    `rtl evaluate` attacks it. Ours runs its folded view in channels_last; ART runs the model as given."""
    import copy

    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    n = len(y)
    atk = art_attack(model, n)
    xn, yn = x.numpy(), y.numpy()
    art_attack(model, n, steps=1).generate(xn, y=yn)
    arms = {"plain": lambda: ours(model, x, y), "art": lambda: atk.generate(xn, y=yn),
            "bare": lambda: bare_pgd_cost(model, x, y)}
    tm = interleaved(arms, repeats, warmup=1)
    raw = {name: tm.summary(name) for name in tm.names()}
    return [Row("Attacks", "ART PGD-20 ÷ ours (plain), model as loaded (NCHW)",
                f"the same as the row above, on the model as load_model returns it (what `rtl evaluate` attacks and "
                f"one hands ART; ART ÷ the NCHW floor {tm.ratio('art', 'bare'):.2f}, ours ÷ it "
                f"{tm.ratio('plain', 'bare'):.2f})", tm.ratio("art", "plain"), None, "",
                alt=tm.other_ratio("art", "plain"),
                note="ours picks channels_last and folds BatchNorm for itself; ART runs the model as given")], raw


def pgd_scaling(model, x, y, steps=(5, 10, 20, 40), repeats: int = 1) -> dict:
    """Seconds (primary clock) of pgd_attack at each step count, plain and with early exit (cost-vs-work plot)."""
    arms = {}
    for k in steps:
        arms[f"plain/{k}"] = (lambda k=k: ours(model, x, y, k))
        arms[f"ee/{k}"] = (lambda k=k: ours(model, x, y, k, early_exit=True))
    tm = interleaved(arms, repeats, warmup=0)
    return {"n": len(y), "steps": list(steps), "clock": CLOCK, "plain_s": [tm.best(f"plain/{k}") for k in steps],
            "ee_s": [tm.best(f"ee/{k}") for k in steps]}


def rows(quick: bool = False) -> tuple[list[Row], dict]:
    if quick:
        torch.manual_seed(0)
        model = create_model("small-cnn", 10).eval()
        info = {"source": "random weights (quick)"}
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
        out, raw = pgd_rows(model, x, y, repeats=1)
        loaded, loaded_raw = as_loaded_rows(model, x, y, repeats=1)
        scaling = pgd_scaling(model, x, y, steps=(1, 2))
    else:
        model, info = robust_model()
        x, y = eval_examples(64)
        out, raw = pgd_rows(model, x, y, repeats=3)
        loaded, loaded_raw = as_loaded_rows(model, x, y, repeats=3)
        scaling = pgd_scaling(model, x[:32], y[:32], repeats=2)
    return out + loaded, {"model": info, "pgd": raw, "pgd_as_loaded": loaded_raw, "pgd_scaling": scaling}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    args = ap.parse_args(argv)
    out, raw = rows(args.quick)
    print("model:", raw["model"])
    for k, v in raw["pgd"].items():
        print(f"  {k}: {round(v, 4) if isinstance(v, float) else v}")
    print("scaling:", raw["pgd_scaling"])
    print_rows(out, 48)
    return 0


if __name__ == "__main__":
    sys.exit(main())
