"""Published checkpoints → our checkpoint (safetensors + meta.json), with the exact same logits.

(Over 400 lines on purpose: the four formats share the safe reading, key checking and error paths
here, and each format is ~30 lines; split it when a fifth format arrives.)

Formats (docs/importing.md):
  torchvision  a torchvision ResNet state dict (resnet18/34/50/101, wide_resnet50_2): ImageNet
               mean/std, 224×224.
  robustness   MadryLab `robustness` / microsoft/robust-models-transfer checkpoints: a dict whose
               `model` (or `state_dict`) entry holds `module.model.*` (the classifier, torchvision
               naming), a duplicate `module.attacker.model.*` and `module.normalizer.new_mean/new_std`.
  robustbench  RobustBench CIFAR models in its state-dict layout (optionally under `state_dict`,
               keys optionally prefixed `module.`): WideResNet (`conv1`, `block{1,2,3}.layer.N.*`,
               `bn1`, `fc`; `sub_block1.*` is unused by its forward and dropped) as wrn-28-10,
               wrn-34-10, ...; PreActResNet-18 (`conv1`, `layer{1..4}.N.*`, [`bn`], `linear`) as
               preact-resnet18 (with `bn`: BN-ReLU before the pool, shortcut from the pre-activated
               input) or preact-resnet18-rb (RobustBench's default, no `bn`). Models that carry their
               own normalisation have `mu`/`sigma` buffers; the others take raw [0,1] pixels.
  keymap       any state dict plus a YAML key map (`--key-map`): regex renames into our names.

Reading never unpickles: safetensors, or `torch.load(weights_only=True)`, which refuses any
pickled object that is not a tensor or a plain container. Every way a file can be wrong is a
ModelError (exit 4), raised before anything is written or registered.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from .digests import file_sha256
from .errors import ConfigError, ModelError, one_of
from .models import (IMAGENET_MEAN, IMAGENET_STD, MAX_CLASSES, TORCHVISION_RESNETS, HeadSpec, ImageClassifier,
                     check_arch, create_model)
from .models.resnet import torchvision_body
from .models.wide_resnet import units_per_stage

from .config.import_model import FORMATS  # noqa: E402  (the config validates against the same list)
_ROBUSTNESS_ARCHS = TORCHVISION_RESNETS  # the transfer literature's are resnet18/50 and wide_resnet50_2
_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
MAX_FILE_BYTES = 4 << 30      # the largest published ResNet/WRN checkpoints are < 1 GB
MAX_KEYMAP_BYTES = 64 << 10
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def read_tensors(path: Path) -> dict:
    """The file's content: safetensors, or a torch file that loads with weights_only=True."""
    if not path.is_file():
        raise ModelError(f"file={str(path)!r} does not exist or is not a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelError(f"file={str(path)!r} is {size / 2**30:.1f} GiB; allowed: at most {MAX_FILE_BYTES >> 30} GiB")
    if _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"file={str(path)!r} is not a readable safetensors file: {e}") from None
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error line says what matters
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (a pickled class/function), RuntimeError (not a torch file), ...
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "Weights only load failed" in text or "Unsupported global" in text:
            hint = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), first)
            raise ModelError(f"file={str(path)!r} needs unpickling Python objects to load, which is refused (only "
                             f"tensors and plain containers are read; re-save it with torch.save(model.state_dict(), "
                             f"...) or as safetensors): {hint[:160]}") from None
        raise ModelError(f"file={str(path)!r} is neither a safetensors nor a torch checkpoint: {first[:200]}") from None


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8).ljust(8, b"\xff"), "little")
        return 2 <= n <= 100 << 20 and f.read(1) == b"{"


def _tensor_dict(obj, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"{what} is not a state dict (a dict of tensors); got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{what} is not a state dict: entry {str(bad[0])[:80]!r} is not a tensor")
    return dict(obj)


def _unwrap(obj, keys: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    """The state dict itself, or the one under the first of `keys` present."""
    if isinstance(obj, dict):
        for k in keys:
            if isinstance(obj.get(k), dict):
                return _tensor_dict(obj[k], f"{what}[{k!r}]")
    return _tensor_dict(obj, what)


def _strip(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _mismatch(file: Path, fmt: str, arch: str, missing, unexpected) -> ModelError:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_first(unexpected)}")
    return ModelError(f"file={str(file)!r} does not match format={fmt} arch={arch}: keys {'; '.join(parts)}")


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], file: Path, fmt: str, arch: str,
               reported_names: dict[str, str] | None = None) -> None:
    """Strict load: every key of `module` present with its shape, nothing left over (named as in the file)."""
    want = module.state_dict()
    names = reported_names or {}
    missing = [names.get(k, k) for k in want if k not in sd]
    unexpected = [names.get(k, k) for k in sd if k not in want]
    if missing or unexpected:
        raise _mismatch(file, fmt, arch, missing, unexpected)
    for k, v in want.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ModelError(f"file={str(file)!r} does not match format={fmt} arch={arch}: tensor {names.get(k, k)!r} "
                             f"has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")
    module.load_state_dict({k: sd[k].to(v.dtype) for k, v in want.items()}, strict=True)


def _head_classes(sd: dict, key: str, file: Path, fmt: str, arch: str) -> int:
    """The number of classes the file's classifier `key` ([classes, features]) asks for, checked before any model
    is built (every format: a stride-0 tensor of 50M rows weighs nothing in the file and 102 GB as a head)."""
    if key not in sd or sd[key].dim() != 2:
        raise _mismatch(file, fmt, arch, [key], [])
    n = int(sd[key].shape[0])
    if not 2 <= n <= MAX_CLASSES:
        raise ModelError(f"file={str(file)!r}: its classifier {key!r} has shape {tuple(sd[key].shape)}, a head for "
                         f"{n} classes; allowed: 2 to {MAX_CLASSES} classes")
    return n


def _norm_values(t: torch.Tensor, name: str, file: Path) -> tuple[float, ...]:
    if t.numel() != 3 or not torch.isfinite(t).all():
        raise ModelError(f"file={str(file)!r}: {name} must hold 3 finite values (one per RGB channel), has shape {tuple(t.shape)}")
    vals = tuple(float(v) for v in t.flatten())
    if name.endswith(("std", "sigma")) and min(vals) <= 0:
        raise ModelError(f"file={str(file)!r}: {name}={vals} must be > 0")
    return vals


# --- torchvision and robustness: torchvision's own module, its modules shared with ours -----------------

def _torchvision_model(arch: str, sd: dict, file: Path, fmt: str, input_size: int, mean, std) -> ImageClassifier:
    if arch not in TORCHVISION_RESNETS:
        raise ModelError(f"arch={arch!r} is not a {fmt} architecture; choose one of: {', '.join(TORCHVISION_RESNETS)}")
    num_classes = _head_classes(sd, "fc.weight", file, fmt, arch)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    _load_into(net, sd, file, fmt, arch)
    body, dim = torchvision_body(net)  # the loaded modules themselves: our model computes net(x)
    model = ImageClassifier(body, net.fc, dim, arch=arch, num_classes=num_classes, input_size=input_size,
                            mean=mean, std=std)
    model.head_spec = HeadSpec()
    return model


def _robustness(obj, file: Path, arch: str, input_size: int) -> ImageClassifier:
    sd = _strip(_unwrap(obj, ("model", "state_dict"), f"file={str(file)!r}"), "module.")
    if "normalizer.new_mean" not in sd or "normalizer.new_std" not in sd:
        raise _mismatch(file, "robustness", arch, [k for k in ("module.normalizer.new_mean", "module.normalizer.new_std")
                                                   if k[7:] not in sd], [])
    mean = _norm_values(sd["normalizer.new_mean"], "normalizer.new_mean", file)
    std = _norm_values(sd["normalizer.new_std"], "normalizer.new_std", file)
    classifier = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    # the rest must be the attacker's duplicate of the same classifier and normaliser: nothing else
    other = [f"module.{k}" for k in sd if not k.startswith(("model.", "attacker.", "normalizer."))]
    if not classifier or other:
        raise _mismatch(file, "robustness", arch, [] if classifier else ["module.model.*"], other)
    return _torchvision_model(arch, classifier, file, "robustness", input_size, mean, std)


# --- robustbench: explicit renames into our block layout ------------------------------------------------

def _unit_key(u: int, rest: str) -> str:
    # unit 0 sits inside Sequential(stem, unit0) as body.0.1
    return f"body.0.1.{rest}" if u == 0 else f"body.{u}.{rest}"


def _robustbench_names(arch: str, keys, file: Path) -> tuple[dict[str, str], list[str]]:
    """{file key: our key} for a RobustBench WideResNet / PreActResNet-18, and the keys it drops."""
    out, drop = {}, []
    m = _WRN.match(arch)
    if m:
        n = units_per_stage(int(m.group(1)))
        last = 3 * n
        for k in keys:
            if k.startswith("sub_block1."):
                drop.append(k)  # WideResNet(sub_block1=True) builds it, but its forward never uses it
                continue
            if k == "conv1.weight":
                out[k] = "body.0.0.weight"
            elif mm := re.match(r"^block([123])\.layer\.(\d+)\.(.+)$", k):
                stage, i, rest = int(mm.group(1)), int(mm.group(2)), mm.group(3)
                rest = rest.replace("convShortcut.", "shortcut.")
                out[k] = _unit_key((stage - 1) * n + i, rest) if i < n else k
            elif k.startswith("bn1."):
                out[k] = f"body.{last}.pre.0.{k[4:]}"
            elif k.startswith("fc."):
                out[k] = "head." + k[3:]
        return out, drop
    if arch in ("preact-resnet18", "preact-resnet18-rb"):
        for k in keys:
            if k == "conv1.weight":
                out[k] = "body.0.0.weight"
            elif mm := re.match(r"^layer([1234])\.(\d)\.(.+)$", k):
                stage, i, rest = int(mm.group(1)), int(mm.group(2)), mm.group(3)
                rest = "shortcut.weight" if rest == "shortcut.0.weight" else rest
                out[k] = _unit_key((stage - 1) * 2 + i, rest) if i < 2 else k
            elif k.startswith("bn."):
                out[k] = "body.8.pre.0." + k[3:]
            elif k.startswith("linear."):
                out[k] = "head." + k[7:]
        return out, drop
    raise ModelError(f"arch={arch!r} is not a robustbench architecture; choose one of: wrn-28-10, wrn-34-10 "
                     f"(any wrn-<depth>-<width>), preact-resnet18, preact-resnet18-rb")


def _robustbench(obj, file: Path, arch: str, input_size: int) -> ImageClassifier:
    sd = _strip(_unwrap(obj, ("state_dict", "model_state_dict"), f"file={str(file)!r}"), "module.")
    mean, std = IDENTITY
    if "mu" in sd or "sigma" in sd:
        if "mu" not in sd or "sigma" not in sd:
            raise _mismatch(file, "robustbench", arch, [k for k in ("mu", "sigma") if k not in sd], [])
        mean, std = _norm_values(sd.pop("mu"), "mu", file), _norm_values(sd.pop("sigma"), "sigma", file)
    names, drop = _robustbench_names(arch, list(sd), file)
    for k in drop:
        sd.pop(k)
    head_key = next((k for k, v in names.items() if v == "head.weight"), None)
    num_classes = _head_classes(sd, head_key or ("fc.weight" if _WRN.match(arch) else "linear.weight"), file,
                                "robustbench", arch)
    bias_key = head_key[:-len("weight")] + "bias"
    if bias_key not in sd:  # WideResNet(bias_last=False): a linear head without bias is one with a zero bias
        sd[bias_key] = torch.zeros(num_classes, dtype=sd[head_key].dtype)
        names[bias_key] = "head.bias"
    model = create_model(arch, num_classes, input_size=input_size, mean=mean, std=std)
    ours = {names.get(k, k): v for k, v in sd.items()}
    back = {v: k for k, v in names.items()}
    _load_into(_without_norm(model), ours, file, "robustbench", arch, reported_names=back)
    return model


class _NoNorm(nn.Module):
    """`model` seen without its mean/std buffers (they come from the file's own entries, not its weights)."""

    def __init__(self, model: ImageClassifier):
        super().__init__()
        self.body, self.head = model.body, model.head


def _without_norm(model: ImageClassifier) -> nn.Module:
    return _NoNorm(model)


# --- keymap: a plain state dict plus a small YAML ---------------------------------------------------------

KEYMAP_FIELDS = ("strip_prefix", "rename", "drop", "mean", "std", "input_size")


def read_key_map(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"key_map={str(path)!r} does not exist or is not a regular file")
    if path.stat().st_size > MAX_KEYMAP_BYTES:
        raise ConfigError(f"key_map={str(path)!r} is larger than {MAX_KEYMAP_BYTES >> 10} KiB")
    try:
        text = path.read_text(encoding="utf-8")
        if "&" in text and re.search(r"(^|[\s:\[,-])&\w", text):
            raise ConfigError(f"key_map={str(path)!r} uses YAML anchors/aliases; write the map out in full")
        spec = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"key_map={str(path)!r} is not valid UTF-8 YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"key_map={str(path)!r} must be a mapping with fields: {', '.join(KEYMAP_FIELDS)}")
    unknown = sorted(set(map(str, spec)) - set(KEYMAP_FIELDS))
    if unknown:
        raise ConfigError(f"key_map={str(path)!r} has unknown field {unknown[0]!r}; allowed: {', '.join(KEYMAP_FIELDS)}")
    rename = spec.get("rename") or []
    if not isinstance(rename, list) or not all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r)
                                               for r in rename):
        raise ConfigError(f"key_map={str(path)!r}: rename must be a list of [regex, replacement] pairs")
    drop = spec.get("drop") or []
    if not isinstance(drop, list) or not all(isinstance(x, str) for x in drop):
        raise ConfigError(f"key_map={str(path)!r}: drop must be a list of regexes")
    for pattern in [r[0] for r in rename] + drop:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"key_map={str(path)!r}: {pattern!r} is not a regex: {e}") from None
    for name in ("mean", "std"):
        v = spec.get(name)
        if v is not None and (not isinstance(v, list) or len(v) != 3
                              or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                              or (name == "std" and min(v) <= 0)):
            raise ConfigError(f"key_map={str(path)!r}: {name} must be 3 finite numbers{' > 0' if name == 'std' else ''}")
    if (spec.get("mean") is None) != (spec.get("std") is None):
        raise ConfigError(f"key_map={str(path)!r}: give both mean and std, or neither (raw [0,1] pixels)")
    if spec.get("input_size") is not None and (not isinstance(spec["input_size"], int) or not 8 <= spec["input_size"] <= 1024):
        raise ConfigError(f"key_map={str(path)!r}: input_size must be a whole number in [8, 1024]")
    prefix = spec.get("strip_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigError(f"key_map={str(path)!r}: strip_prefix must be a string")
    return {"strip_prefix": prefix or "", "rename": rename, "drop": drop, "mean": spec.get("mean"),
            "std": spec.get("std"), "input_size": spec.get("input_size")}


def _keymap(obj, file: Path, arch: str, key_map: dict, input_size: int) -> ImageClassifier:
    check_arch(arch)
    sd = _unwrap(obj, ("state_dict", "model", "model_state_dict"), f"file={str(file)!r}")
    names: dict[str, str] = {}
    for k in list(sd):
        if any(re.search(p, k) for p in key_map["drop"]):
            sd.pop(k)
            continue
        new = k[len(key_map["strip_prefix"]):] if key_map["strip_prefix"] and k.startswith(key_map["strip_prefix"]) else k
        for pattern, repl in key_map["rename"]:
            if re.search(pattern, new):
                new = re.sub(pattern, repl, new)
                break
        names[k] = new
    ours = {names[k]: v for k, v in sd.items()}
    if len(ours) != len(sd):
        raise ModelError(f"key_map maps two keys of file={str(file)!r} to the same name; make the renames distinct")
    if "head.weight" not in ours or ours["head.weight"].dim() != 2:
        raise _mismatch(file, "keymap", arch, ["head.weight (after renaming)"], [])
    num_classes = _head_classes(ours, "head.weight", file, "keymap", arch)
    mean, std = (tuple(key_map["mean"]), tuple(key_map["std"])) if key_map["mean"] is not None else IDENTITY
    model = create_model(arch, num_classes, input_size=input_size, mean=mean, std=std)
    _load_into(_without_norm(model), ours, file, "keymap", arch, reported_names={v: k for k, v in names.items()})
    return model


# ---------------------------------------------------------------------------------------------------------

def default_input_size(fmt: str) -> int:
    return 224 if fmt in ("torchvision", "robustness") else 32


def convert(file: str | Path, fmt: str, arch: str, *, num_classes: int | None = None, input_size: int | None = None,
            key_map: str | Path | None = None) -> tuple[ImageClassifier, dict]:
    """The published checkpoint `file` as our model (eval mode) + the metadata fields it determines."""
    if fmt not in FORMATS:
        raise ModelError(f"format={fmt!r} is not known; choose one of: {', '.join(FORMATS)}")
    file = Path(file).expanduser()
    km = None
    if fmt == "keymap":
        if not key_map:
            raise ConfigError("format=keymap needs key_map=<a YAML file> (docs/importing.md: key maps)")
        km = read_key_map(Path(key_map).expanduser())
    elif key_map:
        raise ConfigError(f"key_map is only used with format=keymap, not format={fmt}")
    if fmt == "robustbench":
        if not (_WRN.match(arch) or arch in ("preact-resnet18", "preact-resnet18-rb")):
            _robustbench_names(arch, [], file)  # raises, naming the allowed archs
    elif fmt in ("torchvision", "robustness") and arch not in TORCHVISION_RESNETS:
        raise ModelError(f"arch={arch!r} is not a {fmt} architecture; choose one of: {', '.join(TORCHVISION_RESNETS)}")
    elif fmt == "keymap":
        try:
            check_arch(arch)
        except ConfigError as e:
            raise ModelError(str(e)) from None
    size = input_size or (km or {}).get("input_size") or default_input_size(fmt)
    obj = read_tensors(file)
    if fmt == "torchvision":
        model = _torchvision_model(arch, _unwrap(obj, ("state_dict",), f"file={str(file)!r}"), file, fmt, size,
                                   IMAGENET_MEAN, IMAGENET_STD)
    elif fmt == "robustness":
        model = _robustness(obj, file, arch, size)
    elif fmt == "robustbench":
        model = _robustbench(obj, file, arch, size)
    else:
        model = _keymap(obj, file, arch, km, size)
    if num_classes is not None and num_classes != model.num_classes:
        raise ModelError(f"num_classes={num_classes} was given but file={str(file)!r} has a head for "
                         f"{model.num_classes} classes")
    meta = {"lineage": {"strategy": "import", "format": fmt, "file": file.name, "sha256": file_sha256(file)}}
    return model.eval(), meta


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise one_of("format", fmt, FORMATS)
    return fmt


SCRATCH_PREFIX = "rtl-import-"   # the conversion's temporary folder, in the system's temporary directory


def _staging_prefix(final: Path) -> str:
    return f".{final.name}.{SCRATCH_PREFIX}"


def import_and_register(cfg) -> dict:
    """`cfg` (a config.ImportConfig): convert the file, save our checkpoint, log it in one tracked run and
    register it as a new version of `cfg.register_as`. Nothing is registered if anything fails.

    What a `kill -9` can leave is named after its process (processes.scratch_dir) and removed by the next
    import: the temporary folder (`<tmp>/rtl-import-*`) and, with `checkpoint_dir`, the checkpoint staged
    beside it (`.<name>.rtl-import-*`), which is moved into `checkpoint_dir` only once the model is
    registered — so no complete checkpoint of a model that was never registered is ever left there."""
    import shutil
    import tempfile
    from dataclasses import asdict

    from .checkpoints import check_checkpoint_target, model_metadata, save_checkpoint
    from .io import atomic_dir_write
    from .processes import remove_stale, scratch_dir
    from .tracking import log_checkpoint_model, mlflow_client, register_checkpoint_model, tracked_run
    from .tracking.registry import version_card, version_tags

    final = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if final is not None:
        check_checkpoint_target(final)   # the user's directory is refused before anything is done
        remove_stale(final.parent, _staging_prefix(final))
    remove_stale(tempfile.gettempdir(), SCRATCH_PREFIX)
    params = {k: v for k, v in asdict(cfg).items() if v is not None}
    tags = {"rtl.import_format": cfg.format, "rtl.arch": cfg.arch}
    scratch: list[Path] = []
    with tracked_run("import", params, tags, experiment=cfg.experiment) as log:
        try:
            scratch.append(scratch_dir(tempfile.gettempdir(), SCRATCH_PREFIX))
            model, meta = convert(cfg.file, cfg.format, cfg.arch, num_classes=cfg.num_classes,
                                  input_size=cfg.input_size, key_map=cfg.key_map)
            if cfg.epsilon is not None:
                meta["threat_model"] = {"norm": cfg.norm, "epsilon": cfg.epsilon, "as_given": True}
            meta["lineage"]["run_id"] = log.run_id
            if final is None:
                checkpoint = scratch[0] / "checkpoint"
            else:   # staged beside checkpoint_dir under its name (the logged model's folder is named after it)
                final.parent.mkdir(parents=True, exist_ok=True)
                scratch.append(scratch_dir(final.parent, _staging_prefix(final)))
                checkpoint = scratch[-1] / final.name
            save_checkpoint(checkpoint, model, meta)
            model_uri = log_checkpoint_model(checkpoint, name=f"import-{cfg.format}")
            full = model_metadata(model, **meta)
            vtags = version_tags(full, {})
            mv = register_checkpoint_model(model_uri, cfg.register_as, vtags)
            mlflow_client().update_model_version(cfg.register_as, mv.version,
                                                 description=version_card(cfg.register_as, mv.version, vtags))
            if final is not None:   # registered: now the checkpoint may appear (moved, same file system)
                check_checkpoint_target(final)
                atomic_dir_write(final, lambda d: [os.replace(f, d / f.name) for f in sorted(checkpoint.iterdir())])
            log.set_tags({"rtl.registered_model": f"{cfg.register_as}/{mv.version}",
                          "rtl.source_sha256": meta["lineage"]["sha256"]})
            return {"run_id": log.run_id, "model_uri": f"models:/{cfg.register_as}/{mv.version}",
                    "registered_model": cfg.register_as, "version": mv.version, "meta": full}
        finally:
            for d in scratch:
                shutil.rmtree(d, ignore_errors=True)


def import_model(file, format: str, arch: str, register_as: str, **kwargs) -> dict:
    """Python API of `rtl import` (config.ImportConfig's fields as keyword arguments)."""
    from .config.import_model import ImportConfig

    return import_and_register(ImportConfig(file=str(file), format=format, arch=arch, register_as=register_as, **kwargs))
