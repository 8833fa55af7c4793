"""`evaluate`: robustness of a model (object, checkpoint path or MLflow URI) on a dataset split."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .attacks import EvalResult, ThreatModel, evaluate_robustness, parse_attack
from .data import ImageData, load_dataset, resize_images
from .device import resolve_device
from .errors import ConfigError, ModelError, one_of

# Attack suites (issue: strong evaluation extends `standard` and `full` with APGD/Square/AutoAttack).
SUITES = {
    "quick": ("clean", "pgd20", "cw20"),
}


@dataclass
class Evaluation:
    result: EvalResult
    meta: dict
    data: ImageData


def suite_attacks(suite: str, override: str = "") -> tuple[str, ...]:
    if override:
        names = tuple(a.strip() for a in override.split(",") if a.strip())
        for a in names:
            parse_attack(a)
        return names if "clean" in names else ("clean", *names)
    if suite not in SUITES:
        raise one_of("suite", suite, tuple(SUITES))
    return SUITES[suite]


def load_any_model(model) -> tuple[torch.nn.Module, dict]:
    from . import load_model_with_meta

    if isinstance(model, torch.nn.Module):
        return model, {}
    return load_model_with_meta(str(model))


def data_for_model(meta: dict, dataset: str, split: str, data_dir=None, progress=True, model=None) -> ImageData:
    spec = dataset or meta.get("data_spec")
    if not spec:
        raise ConfigError("dataset is required: the model's metadata records none")
    data = load_dataset(spec, split, data_dir=data_dir, progress=progress)
    num_classes = getattr(model, "num_classes", meta.get("num_classes"))
    if num_classes is not None and data.num_classes != num_classes:
        raise ModelError(f"the model has {num_classes} classes but dataset={spec!r} has {data.num_classes}; "
                         "evaluate on the data the model was trained for")
    size = getattr(model, "input_size", meta.get("input_size"))
    if size and data.image_size != size:
        data = resize_images(data, int(size))
    return data


def evaluate(model, dataset: str = "", *, split: str = "test", suite: str = "quick", attacks: str = "",
             epsilon: float = 8.0, step_size: float = 2.0, n_examples: int = 1000, seed: int = 0,
             batch_size: int = 256, device: str = "auto", data_dir=None, progress: bool = True) -> Evaluation:
    """Clean and adversarial accuracy, per attack and worst case per example."""
    names = suite_attacks(suite, attacks)
    threat = ThreatModel(epsilon, step_size)
    net, meta = load_any_model(model)
    data = data_for_model(meta, dataset, split, data_dir, progress, net)
    if n_examples > len(data):
        raise ConfigError(f"n_examples={n_examples} is larger than the {split} split ({len(data)} examples)")
    dev = resolve_device(device)
    result = evaluate_robustness(net.to(dev), data.images, data.labels, attacks=names, threat=threat,
                                 n_examples=n_examples, seed=seed, batch_size=batch_size, device=dev,
                                 progress=progress)
    return Evaluation(result=result, meta=meta, data=data)
