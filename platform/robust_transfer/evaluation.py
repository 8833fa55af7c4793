"""The evaluation library: robustness of a model (object, checkpoint path or MLflow URI) on a dataset split.

Suites (`suite=`), each a list of attacks (attacks/specs.py) with a compute budget; docs/evaluation.md
says what each is comparable with:

    quick       clean, PGD-20 (CE), CW-20 (margin); the worst case per example (`worst_acc`)
    standard    quick + APGD-CE + APGD-T (targeted DLR towards the 3 top classes) + Square (300 queries,
                score-based black box): AutoAttack's pipeline without FAB-T at a CPU budget, with Croce &
                Hein's own APGD and Square code (pyautoattack); `aa_acc` = worst case per example (an
                AutoAttack-style number, NOT the reference's); gradient-masking diagnostics
    full        APGD-CE, APGD-DLR (+ targeted on 9 classes), DeepFool in FAB's place (ART), Square at
                AutoAttack's budget, plus PGD-100 with 5 restarts; diagnostics
    autoattack  the reference: Croce & Hein's AutoAttack (standard) from `pyautoattack` (attacks/reference.py);
                `aa_acc` is the number RobustBench reports; its own checks are masking flags

The cascade (`cascade=True`, the default; attacks/engine.py): each attack runs only on the examples every
earlier attack failed to break; the worst case per example is the same, per-attack numbers are cascade
numbers (`rtl.eval_per_attack=cascade`). `cascade=False` runs every attack on every example.

`attacks=` replaces a suite's attack list (the suite still sets the budget and whether diagnostics
run). Evaluated examples are a seeded subset (`indices_sha256`), so numbers are comparable across runs;
results are stored per attack and batch under `cache_dir()/eval/` and an interrupted evaluation resumes.
The `evaluate` entry point is commands/evaluate.py; registry tagging is tracking/registry.py.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from .attacks import EvalResult, ThreatModel, indices_sha256, select_examples
from .attacks.diagnostics import Diagnostics, MaskingThresholds, diagnose
from .attacks.resume import EvalStore, tensors_sha256, weights_sha256
from .attacks.engine import AttackRunner, run_attacks
from .attacks.reference import LABEL as REFERENCE_LABEL, reference_version
from .attacks.specs import parse_attacks as parse_attack_list
from .attacks.strong import Budget
from .data import ImageData, load_dataset, resize_images
from .device import resolve_device
from .errors import ConfigError, DataError, ModelError, one_of

SUITES = {
    "quick": ("clean", "pgd20", "cw20"),
    # cheapest-and-strongest first; Square (black box) last, after every white-box attack (docs/evaluation.md)
    "standard": ("clean", "pgd20", "cw20", "apgd-ce", "apgd-t", "square"),
    "full": ("clean", "pgd20", "cw20", "apgd-ce", "apgd-dlr", "deepfool", "square", "pgd100r5"),
    "autoattack": ("clean", "autoattack"),
}
# Budgets: `full` is AutoAttack's (APGD 100 iterations, 9 target classes, Square 5000 queries); `standard`
# is sized for CPU runs: ≤ 10× the cost of `quick` on a robust model (issue 15; docs/evaluation.md says
# why 300 Square queries). Every knob can be overridden (apgd_iters=, square_queries=, ...).
SUITE_BUDGETS = {
    "quick": Budget(apgd_iters=50, apgd_targets=3, square_queries=300, deepfool_iters=50),
    "standard": Budget(apgd_iters=50, apgd_targets=3, square_queries=300, deepfool_iters=50),
    "full": Budget(apgd_iters=100, apgd_targets=9, square_queries=5000, deepfool_iters=100),
    "autoattack": Budget(apgd_iters=100, apgd_targets=9, square_queries=5000, deepfool_iters=100),  # fixed inside
}
DIAGNOSED_SUITES = ("standard", "full", "autoattack")   # gradient-masking diagnostics run with these (and aa_acc is reported)
SPLITS = ("test", "train", "val")
BUDGET_KNOBS = ("apgd_iters", "apgd_restarts", "apgd_targets", "square_queries", "square_restarts", "deepfool_iters")


class MaskingWarning(UserWarning):
    """An evaluation found signs of gradient masking (see Evaluation.diagnostics)."""


@dataclass
class Evaluation:
    result: EvalResult
    meta: dict
    data: ImageData | None
    suite: str = "quick"
    diagnostics: Diagnostics | None = None     # None when the suite runs none (quick)
    budget: Budget | None = None
    extra: dict = field(default_factory=dict)  # resumed batches, skipped attacks, per-attack seconds

    @property
    def masking_flags(self) -> list[str]:
        return self.diagnostics.flag_names if self.diagnostics else []


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise one_of("suite", suite, tuple(SUITES))
    return suite


def suite_attacks(suite: str, override: str = "") -> tuple[str, ...]:
    """The attack names a suite (or an `attacks=` override of it) runs, canonical, clean first."""
    check_suite(suite)
    return tuple(s.name for s in parse_attack_list(override or SUITES[suite]))


def suite_budget(suite: str, **overrides) -> Budget:
    """The suite's budget with any non-None knob overridden (ConfigError on a bad value)."""
    unknown = set(overrides) - set(BUDGET_KNOBS)
    if unknown:
        raise ConfigError(f"unknown budget knob(s) {', '.join(sorted(unknown))}; allowed: {', '.join(BUDGET_KNOBS)}")
    return SUITE_BUDGETS[check_suite(suite)].with_overrides(**overrides)


def load_any_model(model) -> tuple[torch.nn.Module, dict]:
    from .tracking.models import load_model_with_meta

    if isinstance(model, torch.nn.Module):
        return model, {}
    return load_model_with_meta(str(model))


VAL_DEFAULTS = {"val_fraction": 0.1, "val_seed": 0}     # the training entry points' defaults (config/common.py)


def validation_split(meta: dict, data: ImageData) -> tuple[ImageData, str]:
    """(the validation set, which split it is in words) for `split=val`: carved from the training split `data`
    (`data.validation.carve_validation`) with what the model's training recorded (`meta["validation"]`:
    val_fraction or val_per_class, and val_seed), else the training defaults (val_fraction=0.1, val_seed=0).

    When the training recorded the SHA-256 of its validation indices, the carved split must match it;
    checkpoints written before the recipe was recorded (seed and size only) are matched by trying the
    default fraction, then the recorded size as images per class, then as a fraction. DataError (exit 3)
    when nothing matches: evaluating on a different split would silently mix training images in."""
    from .data.validation import carve_validation, positions_sha256

    rec = meta.get("validation") if isinstance(meta.get("validation"), dict) else {}
    same_data = not meta.get("data_spec") or data.spec == meta.get("data_spec")
    if not rec or not same_data:
        why = "the model records no validation split" if not rec else \
            f"dataset {data.spec!r} is not the one the model was trained on ({meta.get('data_spec')!r})"
        split = carve_validation(data, val_fraction=VAL_DEFAULTS["val_fraction"], seed=VAL_DEFAULTS["val_seed"])
        return split.val, (f"training defaults val_fraction={VAL_DEFAULTS['val_fraction']}, "
                           f"val_seed={VAL_DEFAULTS['val_seed']} ({why}; {len(split.val)} images)")
    seed = rec.get("val_seed", VAL_DEFAULTS["val_seed"])
    if rec.get("val_per_class") is not None:
        asks = [({"val_per_class": rec["val_per_class"]}, "recorded")]
    elif rec.get("val_fraction") is not None:
        asks = [({"val_fraction": rec["val_fraction"]}, "recorded")]
    else:                        # older checkpoints: seed and sizes only
        asks = [({"val_fraction": VAL_DEFAULTS["val_fraction"]}, "default, not recorded")]
        size, classes = rec.get("val_size"), data.num_classes
        if isinstance(size, int) and size > 0:
            if size % classes == 0:
                asks.append(({"val_per_class": size // classes}, "from the recorded val_size"))
            if size / len(data) <= 0.5:
                asks.append(({"val_fraction": size / len(data)}, "from the recorded val_size"))
    want = rec.get("val_indices_sha256")
    for ask, how in asks:
        try:
            split = carve_validation(data, seed=seed, **ask)
        except (ConfigError, DataError):
            continue
        if want is None or positions_sha256(split.val_indices) == want:
            (k, v), = ask.items()
            check = "; its indices match the recorded SHA-256" if want else ""
            return split.val, (f"recorded by the model's training: {k}={v:g} ({how}), val_seed={seed} "
                               f"({len(split.val)} images{check})")
    raise DataError(f"split=val: no validation split of {data.spec} train carved with val_seed={seed} matches the "
                    f"one the model's training recorded (val_indices_sha256={str(want)[:16]}…); tried "
                    + ", ".join(f"{k}={v:g}" for ask, _ in asks for k, v in ask.items()))


def data_for_model(meta: dict, dataset: str, split: str, data_dir=None, progress=True, model=None,
                   download: bool = False) -> tuple[ImageData, str]:
    """(images to evaluate on, which validation split in words or ''): `split` (test | train | val) of
    `dataset` (default: the model's own), resized to the model's input size. `val` is the validation split
    the model's training carved out of its training split (`validation_split`)."""
    spec = dataset or meta.get("data_spec")
    if not spec:
        raise ConfigError("dataset is required: the model's metadata records none")
    data = load_dataset(spec, "train" if split == "val" else split, data_dir=data_dir, progress=progress,
                        download=download)
    val_split = ""
    if split == "val":
        data, val_split = validation_split(meta, data)
    num_classes = getattr(model, "num_classes", meta.get("num_classes"))
    if num_classes is not None and data.num_classes != num_classes:
        raise ModelError(f"the model has {num_classes} classes but dataset={spec!r} has {data.num_classes}; "
                         "evaluate on the data the model was trained for")
    size = getattr(model, "input_size", meta.get("input_size"))
    if size and data.image_size != size:
        data = resize_images(data, int(size))
    return data, val_split


def evaluate(model, dataset: str = "", *, split: str = "test", suite: str = "quick", attacks: str = "",
             epsilon: float = 8.0, step_size: float = 2.0, n_examples: int = 1000, seed: int = 0,
             batch_size: int = 256, device: str = "auto", data_dir=None, progress: bool = True,
             download: bool = False, diagnostics: bool | None = None, resume: bool = True,
             thresholds: MaskingThresholds | None = None, cascade: bool = True, **budget) -> Evaluation:
    """Clean and adversarial accuracy, per attack and worst case per example (+ diagnostics for
    standard/full). `budget`: apgd_iters, apgd_restarts, apgd_targets, square_queries, square_restarts,
    deepfool_iters (default: the suite's)."""
    suite_attacks(suite, attacks)           # validate the request before loading anything
    suite_budget(suite, **budget)
    ThreatModel(epsilon, step_size)
    if split not in SPLITS:
        raise one_of("split", split, SPLITS)
    net, meta = load_any_model(model)
    data, val_split = data_for_model(meta, dataset, split, data_dir, progress, net, download=download)
    if isinstance(n_examples, int) and not isinstance(n_examples, bool) and n_examples > len(data):
        raise ConfigError(f"n_examples={n_examples} is larger than the {split} split ({len(data)} examples)")
    ev = evaluate_tensors(net, data.images, data.labels, suite=suite, attacks=attacks, epsilon=epsilon,
                          step_size=step_size, n_examples=n_examples, seed=seed, batch_size=batch_size,
                          device=device, progress=progress, diagnostics=diagnostics, resume=resume,
                          thresholds=thresholds, data_sha256=data.sha256(), cascade=cascade, **budget)
    ev.meta, ev.data = meta, data
    ev.result.params["split"] = split
    if split == "val":      # validation metrics are val_* everywhere (runs, version tags, promotion policies)
        ev.result.metrics = {f"val_{k}": v for k, v in ev.result.metrics.items()}
        ev.result.params["val_split"] = val_split
    return ev


def evaluate_tensors(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, suite: str = "quick",
                     attacks: str | tuple = "", epsilon: float = 8.0, step_size: float = 2.0,
                     n_examples: int | None = 1000, seed: int = 0, batch_size: int = 256, device="auto",
                     progress: bool = True, diagnostics: bool | None = None, resume: bool = True,
                     thresholds: MaskingThresholds | None = None, data_sha256: str | None = None,
                     store_root=None, cascade: bool = True, **budget) -> Evaluation:
    """`evaluate` on in-memory data: uint8 [N,3,H,W] (or float pixels in [0,1]) and int labels [N]."""
    if not isinstance(cascade, bool):
        raise ConfigError(f"cascade={cascade!r} must be true or false")
    specs = parse_attack_list(attacks if attacks else SUITES[check_suite(suite)])
    bud = suite_budget(suite, **budget)
    threat = ThreatModel(epsilon, step_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise DataError(f"images must be a non-empty tensor [N, C, H, W]; got {getattr(images, 'shape', type(images))}")
    diagnosed = suite in DIAGNOSED_SUITES if diagnostics is None else bool(diagnostics)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    idx = select_examples(images.shape[0], n_examples, seed)
    if images.is_floating_point():
        chosen = images[idx]
        if chosen.min() < 0 or chosen.max() > 1:
            raise DataError(f"float images must be pixels in [0,1]; got values in "
                            f"[{chosen.min().item():.3g}, {chosen.max().item():.3g}] (pass uint8 0-255 instead?)")
    idx_sha = indices_sha256(idx)

    model.to(dev)
    store = None
    if resume:
        from .data import cache_dir

        root = store_root or cache_dir() / "eval"
        store = EvalStore(root, {"model": weights_sha256(model), "data": data_sha256 or tensors_sha256(images, labels),
                                 "indices": idx_sha, "batch_size": batch_size, "seed": seed})
    start = time.perf_counter()
    runner = AttackRunner(model, images, labels, idx, batch_size=batch_size, seed=seed, device=dev, budget=bud,
                          progress=progress, store=store)
    try:
        correct = run_attacks(runner, specs, threat, cascade=cascade)
        run_specs = [s for s in specs if s.name in correct]
        diag = (diagnose(runner, correct, run_specs, threat, thresholds or MaskingThresholds(), cascade=cascade,
                         reference_flags=runner.run.reference_flags) if diagnosed else None)
    finally:
        runner.close()
    seconds = time.perf_counter() - start

    worst = torch.stack(list(correct.values())).all(dim=0)
    metrics = {s.metric: correct[s.name].float().mean().item() for s in run_specs}
    metrics["worst_acc"] = worst.float().mean().item()
    reference = any(s.kind == "autoattack" for s in run_specs)
    if suite in DIAGNOSED_SUITES and not reference:
        metrics["aa_acc"] = metrics["worst_acc"]
    metrics.update(runner.run.extra_metrics)
    if diag is not None:
        metrics.update(diag.measurements)
    n = idx.numel()
    params = {"attacks": [s.name for s in run_specs], **threat.to_dict(), "n_examples": n, "seed": seed,
              "batch_size": batch_size, "suite": suite, "budget": bud.to_dict(), "attack_seconds": runner.run.seconds,
              "cascade": cascade, "specs": [s.resolve(bud).describe() for s in run_specs],
              "aa_impl": aa_impl(suite, run_specs, runner.run.reference_deviation)}
    result = EvalResult(metrics=metrics, correct=correct, n_examples=n, indices_sha256=idx_sha, seconds=seconds,
                        images_per_s=n / seconds if seconds > 0 else float("inf"), params=params)
    ev = Evaluation(result=result, meta={}, data=None, suite=suite, diagnostics=diag, budget=bud,
                    extra={"resumed_batches": runner.run.resumed, "skipped": runner.run.skipped,
                           "attack_seconds": runner.run.seconds, "attack_cpu_seconds": runner.run.cpu_seconds,
                           "attacked": runner.run.attacked,
                           "store": str(store.dir) if store else None})
    if diag is not None and diag.flags:
        warnings.warn(diag.warning(), MaskingWarning, stacklevel=2)
    return ev


def aa_impl(suite: str, specs, deviation: str = "") -> str:
    """What `aa_acc` is, in words a model card can quote ('' when the evaluation reports none)."""
    if any(s.kind == "autoattack" for s in specs):
        if deviation:
            return f"AutoAttack (standard, adapted: {deviation}); pyautoattack {reference_version()}"
        return f"{REFERENCE_LABEL}; pyautoattack {reference_version()}"
    if suite in DIAGNOSED_SUITES:
        code = {"ours": "robust_transfer", "pyautoattack": "pyautoattack's APGD/Square", "art": "ART"}
        used = " + ".join(dict.fromkeys(code[s.impl] for s in specs if s.kind != "clean"))
        return (f"suite {suite}: worst case over {', '.join(s.name for s in specs if s.kind != 'clean')} "
                f"({used}; an AutoAttack-style substitute, not comparable with RobustBench)")
    return ""
