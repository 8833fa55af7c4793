"""`promote`: move the champion alias of a registered model if a stated policy says so (promotion.py)."""
from __future__ import annotations

import sys

from ..config import PromoteConfig
from .registry import entry_point


@entry_point(PromoteConfig, help="Move the champion alias of a registered model if a policy says so; records the "
                                 "decision and a model card.")
def run_promote(cfg: PromoteConfig) -> dict:
    from ..expr import choosing_on_test_warning
    from ..promotion import Policy, find_candidate, promote
    from ..tracking import mlflow_client, tracked_run

    policy = Policy.parse(cfg.policy)
    test_warning = choosing_on_test_warning(f"policy {policy.text!r}", policy.metric_names)
    if test_warning:   # it still runs (issue 13): one line
        print(test_warning, file=sys.stderr, flush=True)
    client = mlflow_client(fluent=True)
    mv, trial = find_candidate(client, cfg, policy)
    tags = {"rtl.registered_model": cfg.name, "rtl.policy": policy.text}
    if cfg.dry_run:   # decides and reports; no run, no tag, no alias (find_candidate refused study= already)
        record = promote(client, cfg, policy, mv, trial, None)
        print(f"promote {cfg.name}: version {record['version']} {record['decision'].upper()} (dry run) — "
              f"{record['reason']} [policy: {policy.text}]; nothing was recorded")
        return {"run_id": None, **record}
    with tracked_run("promote", cfg.to_params(), tags, experiment=cfg.experiment, run_name=f"promote-{cfg.name}") as log:
        record = promote(client, cfg, policy, mv, trial, log)
        decision, version, champion = record["decision"], record["version"], record["champion_before"]
        verb = {"promoted": f"champion → version {version}", "kept": f"champion stays version {champion or '—'}",
                "rejected": "champion unchanged"}[decision]
        print(f"promote {cfg.name}: version {version} {decision.upper()} — "
              f"{record['reason']}; {verb} [policy: {policy.text}] — run {log.run_id}")
        return {"run_id": log.run_id, **record}
