"""The model registry: the name a model is registered under, the tags and model card a version carries,
publishing a trained model (log + register), putting an evaluation on the registered version it came from,
and linking an evaluation to the LoggedModel it measured."""
from __future__ import annotations

import re
import time

import mlflow

from .lineage import log_dataset
from .models import checkpoint_summary, log_checkpoint_model, register_checkpoint_model
from .runs import mlflow_client

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


def registered_name(register_as: str | None, dataset: str, arch: str, strategy: str, suffix: str = "") -> str | None:
    """docs/architecture.md: `<dataset>-<arch>-<strategy>` unless given; `register_as=auto` asks for that default;
    `suffix` (e.g. `-k2`) tells apart the models of one run. None: do not register."""
    if not register_as:
        return None
    name = register_as if register_as != "auto" else \
        re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}-{arch}-{strategy}").strip("-")
    if suffix:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name + suffix)[:128]
    return name


def version_tags(meta: dict, metrics: dict, arch: str = "") -> dict[str, str]:
    """A new version's tags: `metric.*` (test metrics and the last epoch's `val_*`), `threat.*` (the training
    threat), `eval_threat.*` (the one every `metric.<attack>_acc` was measured at), `data_spec`, `arch`,
    `classes` (the class names, comma-separated, in the order of the logits), `num_classes`, `lineage.*`,
    `validation.*` (the validation split: sizes, seed, SHA-256 of its indices)."""
    tags = {f"metric.{k}": f"{v:.4f}" for k, v in metrics.items()}
    threat = meta.get("threat_model", {})
    tags.update({f"threat.{k}": str(v) for k, v in threat.items()})
    tags.update({f"eval_threat.{k}": str(v) for k, v in (meta.get("eval_threat") or {}).items()})
    tags.update({f"validation.{k}": str(v) for k, v in (meta.get("validation") or {}).items()})
    tags["data_spec"] = str(meta.get("data_spec", ""))
    tags["arch"] = str(meta.get("arch") or arch)
    if meta.get("classes"):
        tags["classes"] = ",".join(map(str, meta["classes"]))[:_TAG_LIMIT]
        tags["num_classes"] = str(len(meta["classes"]))
    lineage = meta.get("lineage", {})
    tags.update({f"lineage.{k}": str(v) for k, v in lineage.items() if v is not None and k != "source_meta"})
    return tags


_TAG_LIMIT = 5000   # MLflow's limit on a model version tag's value


def metric_split(name: str) -> str:
    """Which split a registered metric was measured on: `val_*` on the validation split carved from train, the
    rest on the test split (the run's final evaluation, or `evaluate`'s with `eval.split`)."""
    return "validation" if name.startswith("val_") else "test"


def version_card(name: str, version: str, tags: dict[str, str]) -> str:
    """The Markdown model card a registered version's description starts as (`promote` replaces it with its
    decision card): arch, classes, data, threat models, lineage, and every number with the split it is from."""
    def group(prefix: str) -> str:
        items = sorted((k[len(prefix):], v) for k, v in tags.items() if k.startswith(prefix))
        return ", ".join(f"{k}={v}" for k, v in items) or "—"
    metrics = sorted((k[len("metric."):], v) for k, v in tags.items() if k.startswith("metric."))
    rows = ["| metric | split | value |", "|---|---|---:|",
            *(f"| {m} | {metric_split(m)} | {v} |" for m, v in metrics)]
    return "\n".join([
        f"# {name} version {version}", "",
        f"- **arch**: {tags.get('arch') or '—'}",
        f"- **classes** ({tags.get('num_classes', '?')}): {tags.get('classes') or '—'}",
        f"- **data**: {tags.get('data_spec') or '—'}",
        f"- **threat model** (training): {group('threat.')}",
        f"- **evaluation threat model**: {group('eval_threat.')}",
        f"- **validation split**: {group('validation.')}",
        f"- **lineage**: {group('lineage.')}", "",
        "## Metrics", "", *rows, ""])


def publish_model(log, result, strategy: str, register_as: str | None, dataset: str, arch: str,
                  suffix: str = "") -> str:
    """Log a strategy's checkpoint to the active run as an MLflow model named after the strategy (and `suffix`:
    `retrain_blocks-k2`); register it
    when `register_as` asks (tagging the run `rtl.registered_model=<name>/<version>`, the version's description
    its model card). Returns the model URI."""
    if result.meta.get("data_spec") and result.meta.get("data_sha256"):   # the UI's Dataset column
        log_dataset(result.meta["data_spec"], "train", result.meta["data_sha256"], "training")
    model_uri = log_checkpoint_model(result.checkpoint_dir, result.metrics, name=strategy + suffix)  # metrics linked
    name = registered_name(register_as, dataset, arch, strategy, suffix)
    if name:
        meta = {**result.meta, **checkpoint_summary(result.checkpoint_dir)}   # the saved meta.json holds `arch`
        tags = version_tags(meta, result.metrics, arch)
        mv = register_checkpoint_model(model_uri, name, tags)
        mlflow_client().update_model_version(name, mv.version, description=version_card(name, mv.version, tags))
        log.set_tags({"rtl.registered_model": f"{name}/{mv.version}"})
    return model_uri


def registered_version(model_uri: str) -> tuple[str, str] | None:
    """(name, version) for models:/name/version or models:/name@alias (alias resolved); None otherwise."""
    from ..errors import RegistryError

    m = _REGISTERED.match(str(model_uri))
    if not m:
        return None
    client = mlflow_client(fluent=True)
    name = m.group("name")
    if m.group("version"):
        return name, m.group("version")
    aliases = client.get_registered_model(name).aliases     # search_model_versions returns no aliases in MLflow 3
    if m.group("alias") not in aliases:
        raise RegistryError(f"registered model {name!r} has no alias {m.group('alias')!r}")
    return name, str(aliases[m.group("alias")])


def eval_tag_prefix(norm: str) -> str:
    """Where a version's evaluation tags live: `eval.` for ℓ∞ (as stored versions have them), `eval_l2.` for ℓ2."""
    return "eval." if norm in (None, "linf") else f"eval_{norm}."


def masking_tag(tag: str, norm: str) -> str:
    """A masking tag's name under `norm`: as stored for ℓ∞; ℓ2: `rtl.masking_flags_l2`, `rtl.masking_l2.<flag>`."""
    from ..evaluation.diagnostics import FLAG_TAG_PREFIX, MASKING_TAG

    if norm in (None, "linf"):
        return tag
    if tag == MASKING_TAG:
        return f"{MASKING_TAG}_{norm}"
    return f"{FLAG_TAG_PREFIX[:-1]}_{norm}.{tag[len(FLAG_TAG_PREFIX):]}"


def tag_model_version(model_uri: str, ev, run_id: str | None) -> tuple[str, str] | None:
    """Put an `evaluation.Evaluation` on the registered version it came from: `metric.<name>` per metric, the
    masking flags (stale per-flag tags removed), and `eval.*` (time, run, suite, examples) for `promote`."""
    from ..evaluation.diagnostics import FLAG_TAG_PREFIX

    found = registered_version(model_uri)
    if found is None or ev.diagnostics is None:
        return None
    client = mlflow_client(fluent=True)
    name, version = found
    res = ev.result
    # ℓ∞ evaluations keep the names stored versions have; an ℓ2 one's metrics end in _l2 (evaluation.front) and
    # its other tags live under `eval_l2.*` and `rtl.masking_l2*`, so neither norm's evaluation overwrites the other's
    norm = res.params.get("norm", "linf")
    ev_prefix, flag_tag_prefix = eval_tag_prefix(norm), masking_tag(FLAG_TAG_PREFIX, norm)
    tags = {f"metric.{k}": f"{v:.4f}" for k, v in res.metrics.items()}
    tags.update({masking_tag(k, norm): v for k, v in ev.diagnostics.tags().items()})
    tags.update({f"{ev_prefix}{k}": v for k, v in {
        "timestamp": str(int(time.time() * 1000)), "suite": ev.suite, "n_examples": str(res.n_examples),
        "indices_sha256": res.indices_sha256, "norm": str(norm), "epsilon": str(res.params.get("epsilon")),
        "split": str(res.params.get("split", "test")),
        "per_attack": "cascade" if res.params.get("cascade") else "independent"}.items()})
    if res.params.get("aa_impl"):     # what aa_acc is: the reference AutoAttack or our substitute (issue 15)
        tags[f"{ev_prefix}aa_impl"] = res.params["aa_impl"]
    if res.params.get("val_split"):   # split=val: the metrics are val_*; which validation split it was
        tags[f"{ev_prefix}val_split"] = res.params["val_split"]
    if ev.data is not None:
        tags.update({f"{ev_prefix}data": ev.data.spec, f"{ev_prefix}data_sha256": ev.data.sha256()})
    if run_id:
        tags[f"{ev_prefix}run_id"] = run_id
    current = client.get_model_version(name, version).tags or {}
    for k in current:
        if (k.startswith(flag_tag_prefix) or k == f"{ev_prefix}val_split") and k not in tags:   # stale
            client.delete_model_version_tag(name, version, k)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    return name, version


_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)/?$")


def logged_model_id(model_uri: str) -> str | None:
    """The LoggedModel behind `model_uri`: a registered version's, `models:/m-<id>` itself, or the one model a
    run logged (`runs:/<id>/...`); None for a checkpoint path or when a run logged several."""
    s = str(model_uri)
    m = _LOGGED_MODEL_URI.match(s)
    if m:
        return m.group(1)
    client = mlflow_client(fluent=True)
    if s.startswith("models:/"):
        found = registered_version(s)
        if found is None:
            return None
        mv = client.get_model_version(*found)
        # (MLflow 3.17's sqlite store returns model_id=None; the version's source is the model's URI)
        m = _LOGGED_MODEL_URI.match(str(mv.source or ""))
        return getattr(mv, "model_id", None) or (m.group(1) if m else None)
    m = re.match(r"^runs:/([0-9a-f]+)/", s)
    if m:
        run = client.get_run(m.group(1))
        models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
        return models[0].model_id if len(models) == 1 else None
    return None


def link_evaluation(run_id: str, model_uri: str, metrics: dict[str, float], dataset) -> str | None:
    """Log `metrics` against the evaluated LoggedModel and the dataset (MLflow 3: the model's page lists them),
    and the model as an input of the run. Returns the model id, None when the model is not a logged one."""
    from mlflow.entities import LoggedModelInput

    model_id = logged_model_id(model_uri)
    if model_id is None:
        return None
    mlflow.log_input(model=LoggedModelInput(model_id))
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, run_id=run_id, model_id=model_id, dataset=dataset)
    return model_id
