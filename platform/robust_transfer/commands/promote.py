"""`promote`: move the champion alias of a registered model if a stated policy says so (promotion.py)."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..errors import RegistryError
from ..promotion import (CHAMPION, Policy, best_study_trial, check_candidate, decide, evaluation_times, get_registered,
                         get_version, judge, model_card, register_trial, version_metrics)
from ..tracking import mlflow_client


def run_promote(cfg) -> dict:
    from ..tracking import tracked_run

    policy = Policy.parse(cfg.policy)
    client = mlflow_client(fluent=True)
    trial = None
    if cfg.study:
        if cfg.dry_run:
            raise RegistryError("dry_run with study=... would have to register the trial's model; "
                                "run without dry_run, or register it first and give version=")
        trial = best_study_trial(cfg.storage, cfg.study, policy)
        rm = None
    else:
        rm = get_registered(client, cfg.name)
    aliases = dict(getattr(rm, "aliases", {}) or {}) if rm is not None else {}
    if trial is None:
        if cfg.version is not None:
            mv = get_version(client, cfg.name, str(cfg.version), aliases)
        elif cfg.alias in aliases:
            mv = get_version(client, cfg.name, aliases[cfg.alias], aliases)
        else:
            raise RegistryError(f"{cfg.name!r} has no alias {cfg.alias!r} (aliases: "
                                f"{', '.join(f'{a}→{v}' for a, v in aliases.items()) or 'none'}); give version=N")
        check_candidate(client, cfg.name, mv, policy, cfg.allow_flagged)  # refuse before anything is written
    params = cfg.to_params()
    tags = {"rtl.registered_model": cfg.name, "rtl.policy": policy.text}
    with tracked_run("promote", params, tags, experiment=cfg.experiment, run_name=f"promote-{cfg.name}") as log:
        if trial is not None:
            mv = register_trial(client, cfg.name, trial, cfg.study)
            rm = client.get_registered_model(cfg.name)
            aliases = dict(rm.aliases or {})
            check_candidate(client, cfg.name, mv, policy, cfg.allow_flagged)
        metrics = version_metrics(mv)
        cand = judge(policy, str(mv.version), metrics)
        champ = None
        if CHAMPION in aliases:
            cmv = client.get_model_version(cfg.name, aliases[CHAMPION])
            champ = judge(policy, str(cmv.version), version_metrics(cmv))
        decision, reason = decide(policy, cand, champ, cfg.min_delta)
        eval_t, model_t = evaluation_times(client, mv, policy.metric_names)
        card = model_card(cfg.name, mv, policy, cand, champ, decision, reason, log.run_id, eval_t, model_t)
        record = {"name": cfg.name, "version": str(mv.version), "decision": decision, "reason": reason,
                  "policy": policy.text, "score": cand.score, "champion_before": champ.version if champ else None,
                  "champion_score_before": champ.score if champ else None, "dry_run": cfg.dry_run,
                  "study": cfg.study or None, "trial": trial.number if trial is not None else None}
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
        verb = {"promoted": f"champion → version {mv.version}", "kept":
                f"champion stays version {champ.version if champ else '—'}", "rejected": "champion unchanged"}[decision]
        print(f"promote {cfg.name}: version {mv.version} {decision.upper()}{' (dry run)' if cfg.dry_run else ''} — "
              f"{reason}; {verb} [policy: {policy.text}] — run {log.run_id}")
        return {"run_id": log.run_id, **record}
