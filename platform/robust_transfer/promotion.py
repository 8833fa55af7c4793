"""Promotion: policies over a registered version's evaluation metrics, and the decision (commands/promote.py runs it).
Over 400 lines because the policy, the refusals and the model card are one decision record (read together).

A policy is a stated rule over a version's evaluation metrics (version tags `metric.<name>`):

    max (val_clean_acc + val_pgd10_acc) / 2                 (the default: validation metrics)
    max val_pgd10_acc subject to val_clean_acc >= 0.7
    max pgd20_acc subject to clean_acc >= 0.7               (test metrics: runs, with a one-line warning)

Choices read the validation split's metrics (`val_*`, which every training entry point logs and tags on
the versions it registers); a policy over test-set metrics still runs, with a one-line warning that
choosing on test data biases what is reported.

`promote` compares a candidate (the `challenger` alias, a given version, or the best trial of a study)
with the current `champion` under the policy and moves the `champion` alias only if the policy says so.
Every decision is recorded: version tags `promotion.*`, a Markdown model card (the version's description
and an artifact of the promote run). It refuses (RegistryError, exit 6) a candidate whose evaluation is
missing or older than its weights, or that carries gradient-masking flags (`rtl.masking_flags`; for a policy
over ℓ2 metrics, `*_l2`, the ℓ2 evaluation's `rtl.masking_flags_l2` and `eval_l2.*` tags) unless
`allow_flagged=true`, and any decision whose score is not a finite number (NaN or infinite: an overflowing
policy, a metric tagged `nan`), naming the policy and the value.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .evaluation.diagnostics import MASKING_TAG  # the tag `evaluate` writes; promote refuses what it flags
from .errors import ConfigError, RegistryError, SearchError
from .expr import MAX_EXPR_CHARS, Constraint, Expr, ExprError
from .tracking.registry import eval_tag_prefix, masking_tag

CHAMPION = "champion"
CARD_METRICS = ("clean_acc", "pgd20_acc", "cw20_acc", "aa_acc")   # on every model card (ℓ2: with _l2, but clean)
# A metric logged per epoch by every training strategy: its last timestamp is when the weights last changed.
TRAINING_PROGRESS_METRICS = ("train_loss", "train_clean_acc")


@dataclass(frozen=True)
class Policy:
    text: str
    direction: str          # maximize | minimize
    score: Expr
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Policy":
        if len(str(text)) > 4 * MAX_EXPR_CHARS:
            raise ConfigError(f"policy={str(text)[:40]!r}... is {len(str(text))} characters long; at most "
                              f"{4 * MAX_EXPR_CHARS}")
        m = re.match(r"^\s*(max|maximize|min|minimize)\s+(.+?)(?:\s+subject\s+to\s+(.+))?\s*$", str(text), re.I | re.S)
        if not m:
            raise ConfigError(f"policy={text!r} must read `max <metric expression> [subject to <constraint> "
                              "[and ...]]`, e.g. \"max pgd20_acc subject to clean_acc >= 0.7\"")
        try:
            score = Expr.parse(m.group(2))
            cons = tuple(Constraint.parse(c) for c in re.split(r"\s+and\s+|\s*,\s*", m.group(3) or "") if c.strip())
        except ExprError as e:
            raise ConfigError(f"policy={text!r}: {e}") from None
        return cls(" ".join(str(text).split()), "maximize" if m.group(1).lower().startswith("max") else "minimize",
                   score, cons)

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = list(self.score.names)
        for c in self.constraints:
            names += [n for n in c.expr.names if n not in names]
        return tuple(names)

    def better(self, a: float, b: float, min_delta: float = 0.0) -> bool:
        return a > b + min_delta if self.direction == "maximize" else a < b - min_delta


@dataclass
class Judged:
    """A version as the policy sees it."""

    version: str
    metrics: dict[str, float]
    score: float | None = None
    violated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def version_metrics(mv) -> dict[str, float]:
    out = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith("metric."):
            try:
                out[k[len("metric."):]] = float(v)
            except ValueError:
                pass
    return out


def judge(policy: Policy, version: str, metrics: dict[str, float]) -> Judged:
    j = Judged(version, metrics)
    j.missing = [n for n in policy.metric_names if n not in metrics]
    if j.missing:
        return j
    try:
        j.score = policy.score(metrics)
    except ZeroDivisionError:  # e.g. `max clean_acc / (pgd20_acc - pgd10_acc)` on equal metrics
        raise RegistryError(f"policy {policy.text!r} divides by zero on version {version}'s metrics "
                            f"({', '.join(f'{n}={metrics[n]:.4f}' for n in policy.score.names)})") from None
    if not math.isfinite(j.score):  # overflow (1e308*1e308 - 1e308*1e308 is nan) or a metric tagged nan/inf
        raise RegistryError(f"policy {policy.text!r} scores version {version} {j.score} (not a finite number) from "
                            f"its metrics ({', '.join(f'{n}={metrics[n]:g}' for n in policy.score.names)}); "
                            f"a non-finite score never promotes: state the policy so that it stays finite")
    for c in policy.constraints:
        try:
            value = c.expr(metrics)
        except ZeroDivisionError:
            raise RegistryError(f"policy {policy.text!r}: constraint {c.text!r} divides by zero on version "
                                f"{version}'s metrics ({', '.join(f'{n}={metrics[n]:.4f}' for n in c.expr.names)})") from None
        if not math.isfinite(value):
            raise RegistryError(f"policy {policy.text!r}: constraint {c.text!r} is {value} (not a finite number) on "
                                f"version {version}'s metrics ({', '.join(f'{n}={metrics[n]:g}' for n in c.expr.names)}); "
                                "a non-finite value never promotes")
        if not c.holds(metrics):
            j.violated.append(f"{c.text} ({', '.join(f'{n}={metrics[n]:.4f}' for n in c.expr.names)})")
    return j


def decide(policy: Policy, cand: Judged, champ: Judged | None, min_delta: float = 0.0) -> tuple[str, str]:
    """(decision, reason): promoted | kept | rejected."""
    if cand.violated:
        return "rejected", "the candidate violates " + "; ".join(cand.violated)
    if champ is None:
        return "promoted", "there is no champion yet"
    if champ.version == cand.version:
        return "kept", f"version {cand.version} already is the champion"
    if champ.missing:
        return "promoted", (f"the champion (version {champ.version}) has no evaluation of "
                            f"{', '.join(champ.missing)}, so it cannot meet the policy")
    if champ.violated:
        return "promoted", f"the champion (version {champ.version}) violates " + "; ".join(champ.violated)
    if policy.better(cand.score, champ.score, min_delta):
        return "promoted", (f"score {cand.score:.4f} beats the champion's {champ.score:.4f} (version {champ.version})"
                            + (f" by more than {min_delta:g}" if min_delta else ""))
    return "kept", (f"score {cand.score:.4f} does not beat the champion's {champ.score:.4f} "
                    f"(version {champ.version})" + (f" by more than {min_delta:g}" if min_delta else ""))


# ------------------------------------------------------------------------------------------ registry access
def _mlflow_error_code(e) -> str:
    return getattr(e, "error_code", "") or ""


def get_registered(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in _mlflow_error_code(e) or "not found" in str(e).lower():
            known = [m.name for m in client.search_registered_models(max_results=20)]
            raise RegistryError(f"registered model {name!r} does not exist"
                                + (f"; registered models: {', '.join(known)}" if known else
                                   "; register one with register_as=<name> (or promote study=...)")) from None
        raise RegistryError(f"registry: {str(e).splitlines()[0]}") from None


def get_version(client, name: str, version: str, aliases: dict):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"{name!r} has no version {version}; versions with aliases: "
                            f"{', '.join(f'{a}→{v}' for a, v in aliases.items()) or 'none'}") from None


def _metric_time(client, run_id: str, names) -> int | None:
    ts = []
    for n in names:
        try:
            hist = client.get_metric_history(run_id, n)
        except Exception:
            continue
        if hist:
            ts.append(max(m.timestamp for m in hist))
    return max(ts) if ts else None


def policy_norms(metric_names) -> list[str]:
    """The norms a policy's metrics were measured under: l2 for `*_l2` names, else linf (clean: no threat)."""
    norms = {"l2" if n.endswith("_l2") else "linf" for n in metric_names if n not in ("clean_acc", "val_clean_acc")}
    return sorted(norms) or ["linf"]


def _norm_eval_time(client, mv, metric_names, norm: str) -> int | None:
    tags, prefix = mv.tags or {}, eval_tag_prefix(norm)
    stamp = tags.get(f"{prefix}timestamp")
    if stamp:
        return int(float(stamp)) if re.fullmatch(r"\d+(\.\d*)?", stamp) else None
    if tags.get(f"{prefix}run_id"):
        try:
            info = client.get_run(tags[f"{prefix}run_id"]).info
            return info.end_time or info.start_time
        except Exception:
            return None
    return _metric_time(client, mv.run_id, metric_names) if mv.run_id else None


def evaluation_times(client, mv, metric_names) -> tuple[int | None, int | None]:
    """(when the policy's metrics were evaluated, when the weights last changed), in ms since the epoch.

    Evaluation, per threat norm the metrics name (`policy_norms`; the oldest counts): tag `eval.timestamp`
    (ℓ2: `eval_l2.timestamp`), else the end of the run named by `eval.run_id` (`eval_l2.run_id`), else the
    timestamps of those metrics in the version's source run. Weights: tag `model.timestamp`, else the last
    per-epoch training metric (`train_loss`) of the source run."""
    tags, times = mv.tags or {}, [_norm_eval_time(client, mv, metric_names, n) for n in policy_norms(metric_names)]
    eval_t = None if None in times else min(times)
    model_t = None
    if tags.get("model.timestamp"):
        try:
            model_t = int(float(tags["model.timestamp"]))
        except ValueError:
            model_t = None
    elif mv.run_id:
        model_t = _metric_time(client, mv.run_id, TRAINING_PROGRESS_METRICS)
    return eval_t, model_t


def check_candidate(client, name: str, mv, policy: Policy, allow_flagged: bool) -> dict[str, float]:
    """The candidate's metrics; RegistryError if it must be refused (flags, missing or stale evaluation)."""
    tags = mv.tags or {}
    for norm in policy_norms(policy.metric_names):     # the flags of the evaluation(s) the policy reads
        flag_tag = masking_tag(MASKING_TAG, norm)
        flags = str(tags.get(flag_tag, "")).strip()
        if flags and not allow_flagged:
            raise RegistryError(f"refusing {name} version {mv.version}: it carries gradient-masking flags "
                                f"({flag_tag}={flags}); its robustness numbers may be inflated. Re-evaluate with "
                                "a stronger suite, or pass allow_flagged=true to promote it anyway")
    metrics = version_metrics(mv)
    missing = [n for n in policy.metric_names if n not in metrics]
    if missing:
        raise RegistryError(f"refusing {name} version {mv.version}: its evaluation is missing "
                            f"{', '.join(missing)} (version tags metric.*); evaluate it and tag the version first")
    eval_t, model_t = evaluation_times(client, mv, policy.metric_names)
    if eval_t is None:
        raise RegistryError(f"refusing {name} version {mv.version}: its evaluation has no time (no eval.timestamp "
                            "tag and no metric history in its source run)")
    if model_t is not None and eval_t < model_t:
        raise RegistryError(f"refusing {name} version {mv.version}: its evaluation ({_iso(eval_t)}) is older than "
                            f"its weights ({_iso(model_t)}); re-evaluate it first")
    return metrics


def _iso(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------ study candidates
def best_study_trial(storage_url: str, study_name: str, policy: Policy):
    """The complete trial of a study that the policy likes best (feasible under its constraints)."""
    import optuna

    from .search.storage import open_storage

    storage = open_storage(storage_url, create=False)   # only reads the study: never creates a file
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SearchError(f"study {study_name!r} does not exist in the storage; studies: {', '.join(names) or 'none'}") from None
    scored = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        metrics = t.user_attrs.get("metrics") or {}
        if not t.user_attrs.get("model_uri") or not t.user_attrs.get("mlflow_run_id"):
            continue
        j = judge(policy, f"trial {t.number}", metrics)
        if j.missing or j.violated:
            continue
        scored.append((j.score, t))
    if not scored:
        raise RegistryError(f"study {study_name!r} has no complete trial with a logged model that meets "
                            f"{policy.text!r}")
    sign = 1 if policy.direction == "maximize" else -1
    return max(scored, key=lambda st: sign * st[0])[1]


def register_trial(client, name: str, trial, study_name: str):
    """The trial's model as a version of `name` (reused if that run is already registered under it)."""
    import mlflow

    run_id = trial.user_attrs["mlflow_run_id"]
    for mv in client.search_model_versions(f"name='{name}'"):
        if mv.run_id == run_id:
            return client.get_model_version(name, mv.version)
    mv = mlflow.register_model(trial.user_attrs["model_uri"], name, await_registration_for=60)
    tags = {f"metric.{k}": f"{v:.4f}" for k, v in (trial.user_attrs.get("metrics") or {}).items()}
    tags |= {"lineage.run_id": run_id, "rtl.study": study_name, "rtl.trial_number": str(trial.number)}
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    return client.get_model_version(name, mv.version)


# ------------------------------------------------------------------------------------------ model card
def model_card(name: str, mv, policy: Policy, cand: Judged, champ: Judged | None, decision: str, reason: str,
               run_id: str | None, eval_t, model_t) -> str:
    from .tracking.registry import metric_split   # (tracking imports MLflow: only when a card is written)

    tags = mv.tags or {}
    names = list(dict.fromkeys(list(policy.metric_names) + [f"{a}{s}" for s in ("", "_l2") for a in CARD_METRICS]))
    names = [n for n in names if n in cand.metrics or (champ and n in champ.metrics)]
    header = f"| | split | candidate v{cand.version} |" + (f" champion v{champ.version} |" if champ else "")
    sep = "|---|---|---:|" + ("---:|" if champ else "")
    rows = [header, sep]

    def cell(j, n):
        return f"{j.metrics[n]:.4f}" if j and n in j.metrics else "—"
    for n in names:
        rows.append(f"| {n} | {metric_split(n)} | {cell(cand, n)} |" + (f" {cell(champ, n)} |" if champ else ""))
    sc = lambda j: f"{j.score:.4f}" if j and j.score is not None else "—"  # noqa: E731
    rows.append(f"| **score** | | **{sc(cand)}** |" + (f" {sc(champ)} |" if champ else ""))
    threat = {k[len("threat."):]: v for k, v in tags.items() if k.startswith("threat.")}
    lineage = {k[len("lineage."):]: v for k, v in tags.items() if k.startswith("lineage.")}
    lines = [f"# {name} version {mv.version}: {decision.upper()}", "",
             f"- **policy**: `{policy.text}`",
             f"- **decision**: {decision} — {reason}",
             f"- **decided**: {_iso(int(time.time() * 1000))}" + (f" by promote run `{run_id}`" if run_id else ""),
             f"- **source run**: `{mv.run_id}`" if mv.run_id else "- **source run**: —",
             f"- **data**: {tags.get('data_spec', '—')}, **arch**: {tags.get('arch') or '—'}",
             f"- **classes**: {tags.get('classes') or '—'}",
             "- **threat model**: " + (", ".join(f"{k}={v}" for k, v in sorted(threat.items())) or "—"),
             "- **lineage**: " + (", ".join(f"{k}={v}" for k, v in sorted(lineage.items())) or "—"),
             f"- **evaluated**: {_iso(eval_t)} (weights last changed {_iso(model_t)})",
             f"- **gradient-masking flags**: {tags.get(MASKING_TAG) or 'none'}",
             "", "## Metrics", "", *rows, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ a decision
def find_candidate(client, cfg, policy: Policy):
    """(candidate version or None, the study's best trial or None) for a `PromoteConfig`; everything that can be
    refused before a run starts is refused here (a study's trial is registered later, inside the run)."""
    if cfg.study:
        if cfg.dry_run:
            raise RegistryError("dry_run with study=... would have to register the trial's model; "
                                "run without dry_run, or register it first and give version=")
        return None, best_study_trial(cfg.storage, cfg.study, policy)
    rm = get_registered(client, cfg.name)
    aliases = dict(getattr(rm, "aliases", {}) or {})
    if cfg.version is not None:
        mv = get_version(client, cfg.name, str(cfg.version), aliases)
    elif cfg.alias in aliases:
        mv = get_version(client, cfg.name, aliases[cfg.alias], aliases)
    else:
        raise RegistryError(f"{cfg.name!r} has no alias {cfg.alias!r} (aliases: "
                            f"{', '.join(f'{a}→{v}' for a, v in aliases.items()) or 'none'}); give version=N")
    check_candidate(client, cfg.name, mv, policy, cfg.allow_flagged)  # refuse before anything is written
    return mv, None


def promote(client, cfg, policy: Policy, mv, trial, log) -> dict:
    """Judge the candidate against the champion under the policy inside the promote run `log`; record the
    decision (run tags, metrics, model card and decision.json artifacts) and, unless `dry_run`, on the
    registry (version tags, description, the champion alias). A dry run has no run (`log=None`): it decides
    and reports, and writes nothing anywhere. Returns the decision record."""
    if trial is not None:
        mv = register_trial(client, cfg.name, trial, cfg.study)
        check_candidate(client, cfg.name, mv, policy, cfg.allow_flagged)
    aliases = dict(client.get_registered_model(cfg.name).aliases or {})
    cand = judge(policy, str(mv.version), version_metrics(mv))
    champ = None
    if CHAMPION in aliases:
        cmv = client.get_model_version(cfg.name, aliases[CHAMPION])
        champ = judge(policy, str(cmv.version), version_metrics(cmv))
    decision, reason = decide(policy, cand, champ, cfg.min_delta)
    eval_t, model_t = evaluation_times(client, mv, policy.metric_names)
    card = model_card(cfg.name, mv, policy, cand, champ, decision, reason, log.run_id if log else None, eval_t,
                      model_t)
    record = {"name": cfg.name, "version": str(mv.version), "decision": decision, "reason": reason,
              "policy": policy.text, "score": cand.score, "champion_before": champ.version if champ else None,
              "champion_score_before": champ.score if champ else None, "dry_run": cfg.dry_run,
              "study": cfg.study or None, "trial": trial.number if trial is not None else None}
    if log is None:
        return record
    log.set_tags({"rtl.decision": decision, "rtl.candidate_version": str(mv.version),
                  "rtl.champion_before": str(champ.version) if champ else ""})
    if cand.score is not None:
        log.log_metrics({"candidate_score": cand.score} | ({"champion_score": champ.score}
                                                           if champ and champ.score is not None else {}))
    with tempfile.TemporaryDirectory(prefix="rtl-promote-") as tmp:
        Path(tmp, "model_card.md").write_text(card)
        Path(tmp, "decision.json").write_text(json.dumps(record, indent=2))
        log.log_artifact(tmp, "promotion")
    if not cfg.dry_run:
        now = str(int(time.time() * 1000))
        for k, v in {"promotion.decision": decision, "promotion.reason": reason, "promotion.policy": policy.text,
                     "promotion.score": "" if cand.score is None else f"{cand.score:.4f}",
                     "promotion.run_id": log.run_id, "promotion.time": now,
                     "promotion.compared_to": champ.version if champ else ""}.items():
            client.set_model_version_tag(cfg.name, mv.version, k, v)
        client.update_model_version(cfg.name, mv.version, description=card)
        if decision == "promoted":
            client.set_registered_model_alias(cfg.name, CHAMPION, mv.version)
            client.set_registered_model_tag(cfg.name, "rtl.champion_policy", policy.text)
            if champ:
                client.set_registered_model_tag(cfg.name, "rtl.previous_champion", champ.version)
    return record
