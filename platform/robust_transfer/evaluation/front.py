"""The front doors: `evaluate_config` (an `EvaluateConfig`: what `rtl evaluate` runs), `evaluate` (the
Python API's keyword form of the same), and `evaluate_tensors` (in-memory images and labels: the one
tensor front door, which the other two and the training strategies' validation end in).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import fields

import torch

from ..attacks import ThreatModel
from ..attacks.specs import check_attack_norm
from ..config.evaluate import EvaluateConfig
from ..device import resolve_device
from ..digests import indices_sha256, tensors_sha256, weights_sha256
from ..errors import ConfigError
from .diagnostics import MaskingThresholds, diagnose
from .engine import AttackRunner, run_attacks
from .inputs import checked_examples
from .result import EvalResult, Evaluation, MaskingWarning
from .splits import data_for_model
from .store import EvalStore
from .suites import aa_impl, substitute_metric, suite_preset

_CONFIG_FIELDS = tuple(f.name for f in fields(EvaluateConfig))
# What evaluate_config reads itself (the model, its data, where to find it) or leaves to the command (experiment);
# the rest of an EvaluateConfig is evaluate_tensors' keywords, with the same names.
_DATA_FIELDS = ("model", "dataset", "split", "data_dir", "download", "experiment")


def load_any_model(model) -> tuple[torch.nn.Module, dict]:
    """(model, metadata) for an nn.Module (no metadata) or a checkpoint path / MLflow URI."""
    from ..tracking.models import load_model_with_meta

    if isinstance(model, torch.nn.Module):
        return model, {}
    return load_model_with_meta(str(model))


def evaluate_config(cfg: EvaluateConfig, *, model: torch.nn.Module | None = None,
                    thresholds: MaskingThresholds | None = None) -> Evaluation:
    """Clean and adversarial accuracy of `cfg.model` on its `cfg.split` of `cfg.dataset` (default: the
    model's own), per attack and worst case per example, with the suite's diagnostics. `model`: an
    nn.Module to evaluate instead of loading `cfg.model` (which then only names it). `cfg` was validated
    when it was made, so a bad value has failed before anything loads."""
    net, meta = (model, {}) if model is not None else load_any_model(cfg.model)
    own = own_threat(meta)            # the model's recorded threat: the default of whatever cfg leaves out
    data, val_split = data_for_model(meta, cfg.dataset, cfg.split, cfg.data_dir, cfg.progress, net,
                                     download=cfg.download)
    if cfg.n_examples > len(data):
        raise ConfigError(f"n_examples={cfg.n_examples} is larger than the {cfg.split} split ({len(data)} examples)")
    options = {k: getattr(cfg, k) for k in _CONFIG_FIELDS if k not in _DATA_FIELDS}
    threat = evaluation_threat(cfg.norm, cfg.epsilon, cfg.step_size, own)
    options.update(norm=threat.norm, epsilon=threat.epsilon, step_size=threat.step_size)
    options["diagnostics"] = None if cfg.diagnostics else False      # true: whatever the suite runs
    ev = evaluate_tensors(net, data.images, data.labels, thresholds=thresholds, data_sha256=data.sha256(), **options)
    ev.meta, ev.data = meta, data
    ev.result.params["split"] = cfg.split
    if cfg.split == "val":      # validation metrics are val_* everywhere (runs, version tags, promotion policies)
        ev.result.metrics = {f"val_{k}": v for k, v in ev.result.metrics.items()}
        ev.result.per_example = {f"val_{k}": v for k, v in ev.result.per_example.items()}
        ev.result.params["val_split"] = val_split
    return ev


def own_threat(meta: dict) -> ThreatModel | None:
    """The threat a model records: `eval_threat` (what its reported `<attack>_acc` were measured at), else
    `threat_model` (its training threat, or the one its publisher states: `rtl import --norm --epsilon`)."""
    for key in ("eval_threat", "threat_model"):
        try:
            found = ThreatModel.from_dict(meta.get(key))
        except ConfigError:          # a recorded threat we cannot attack with (e.g. an imported ε=0): skip it
            found = None
        if found is not None:
            return found
    return None


def evaluation_threat(norm, epsilon, step_size, own: ThreatModel | None) -> ThreatModel:
    """The evaluation's threat: what is given, the rest from the model's own threat `own` (its norm; its ε and
    step when the norm is its own and no ε is given), else the norm's defaults (ℓ∞ 8/2, ℓ2 0.5/ε÷4)."""
    norm = norm or (own.norm if own is not None else "linf")
    if own is not None and own.norm == norm and epsilon is None:
        return ThreatModel(own.epsilon, step_size if step_size is not None else own.step_size, norm)
    return ThreatModel(epsilon, step_size, norm)


def evaluate(model, dataset: str = "", *, thresholds: MaskingThresholds | None = None, **options) -> Evaluation:
    """`evaluate_config` in keywords: `model` is an nn.Module, a checkpoint path or an MLflow model URI;
    `options` are `EvaluateConfig`'s fields (split, suite, attacks, norm, epsilon, step_size, n_examples, seed,
    batch_size, device, data_dir, progress, download, diagnostics, resume, cascade and the budget knobs
    apgd_iters, apgd_restarts, apgd_targets, square_queries, square_restarts, deepfool_iters)."""
    unknown = sorted(set(options) - set(_CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} of evaluate; allowed: "
                          + ", ".join(k for k in _CONFIG_FIELDS if k not in ("model", "dataset", "experiment")))
    if options.get("diagnostics", True) is None:          # the earlier spelling of "whatever the suite runs"
        options["diagnostics"] = True
    obj = model if isinstance(model, torch.nn.Module) else None
    name = f"<{type(model).__name__} object>" if obj is not None else str(model)
    return evaluate_config(EvaluateConfig(model=name, dataset=dataset, **options), model=obj, thresholds=thresholds)


def threat_metrics(metrics: dict, threat: ThreatModel) -> dict:
    """The evaluation's metric names under its threat: unchanged for ℓ∞; every name but `clean_acc` (no threat)
    ends in `_l2` for ℓ2 (`pgd20_acc_l2`, `aa_acc_l2`), so an ℓ2 number never overwrites an ℓ∞ one."""
    return {k if k == "clean_acc" else k + threat.suffix: v for k, v in metrics.items()}


def evaluate_tensors(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, suite: str = "quick",
                     attacks: str | tuple = "", epsilon: float | None = None, step_size: float | None = None,
                     norm: str | None = None,
                     n_examples: int | None = 1000, seed: int = 0, batch_size: int = 256, device="auto",
                     progress: bool = True, diagnostics: bool | None = None, resume: bool = True,
                     thresholds: MaskingThresholds | None = None, data_sha256: str | None = None,
                     store_root=None, cascade: bool = True, **budget) -> Evaluation:
    """The suite's attacks on a seeded subset of in-memory data: uint8 [N,3,H,W] (or float pixels in [0,1])
    and int labels [N], under the threat `norm` (linf, the default, or l2), `epsilon`, `step_size` (None: the
    norm's defaults). `n_examples=None`: all of them. `diagnostics`: None runs the suite's, True or False
    forces them on or off. `budget`: apgd_iters, apgd_restarts, apgd_targets, square_queries, square_restarts,
    deepfool_iters (default: the suite's). `store_root` (default `cache_dir()/eval`) keeps per-attack,
    per-batch results when `resume`. The model is moved to `device` (nn.Module.to is in place) and every
    module's training flag is restored afterwards."""
    if not isinstance(cascade, bool):
        raise ConfigError(f"cascade={cascade!r} must be true or false")
    preset = suite_preset(suite)
    specs = preset.specs(attacks)
    bud = preset.budget_with(**budget)
    threat = ThreatModel(epsilon, step_size, norm or "linf")
    for spec in specs:
        check_attack_norm(spec, threat.norm)
    idx = checked_examples(images, labels, n_examples=n_examples, seed=seed, batch_size=batch_size)
    diagnosed = preset.diagnosed if diagnostics is None else bool(diagnostics)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    idx_sha = indices_sha256(idx)

    model.to(dev)
    store = None
    if resume:
        from ..data import cache_dir

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
    # metric → the examples it counts (its mean is the metric): the per-example record (result.py's module doc)
    per_example = {s.metric: correct[s.name] for s in run_specs}
    per_example["worst_acc"] = worst
    reference = any(s.kind == "autoattack" for s in run_specs)
    if preset.diagnosed and not reference:
        # `aa_acc` is only ever the reference AutoAttack's number (issue 24 §4): a substitute suite's worst case
        # is `worst_acc`, and also `<suite>_worst_acc` so a registered version keeps it apart from other suites'.
        per_example[substitute_metric(suite)] = worst
    per_example.update(runner.run.extra_correct)
    per_example = threat_metrics(per_example, threat)
    metrics = {k: v.float().mean().item() for k, v in per_example.items()}
    if diag is not None:
        metrics.update(diag.measurements)         # (named for their own threat by diagnostics.py)
    n = idx.numel()
    params = {"attacks": [s.name for s in run_specs], **threat.to_dict(), "n_examples": n, "seed": seed,
              "batch_size": batch_size, "suite": suite, "budget": bud.to_dict(), "attack_seconds": runner.run.seconds,
              "cascade": cascade, "specs": [s.resolve(bud).describe() for s in run_specs],
              "aa_impl": aa_impl(suite, run_specs, runner.run.reference_deviation)}
    result = EvalResult(metrics=metrics, correct=correct, n_examples=n, indices_sha256=idx_sha, seconds=seconds,
                        images_per_s=n / seconds if seconds > 0 else float("inf"), params=params, indices=idx,
                        per_example=per_example)
    ev = Evaluation(result=result, meta={}, data=None, suite=suite, diagnostics=diag, budget=bud,
                    extra={"resumed_batches": runner.run.resumed, "skipped": runner.run.skipped,
                           "attack_seconds": runner.run.seconds, "attack_cpu_seconds": runner.run.cpu_seconds,
                           "attacked": runner.run.attacked,
                           "store": str(store.dir) if store else None})
    if diag is not None and diag.flags:
        warnings.warn(diag.warning(), MaskingWarning, stacklevel=2)
    return ev
