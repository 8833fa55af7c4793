"""`evaluate`: robustness of a model, logged to MLflow and put on its registered version (evaluation/); per-example
correctness of every logged accuracy is the run's artifact `evaluation/per_example.json` (evaluation/result.py)."""
from __future__ import annotations

import json
import sys
import warnings

from ..config import EvaluateConfig
from .common import print_table
from .registry import entry_point


def threat_text(params: dict) -> str:
    """'ℓ∞ ε=8/255' or 'ℓ2 ε=0.5' for an evaluation's recorded threat."""
    if params.get("norm", "linf") == "linf":
        return f"ℓ∞ ε={params['epsilon']:g}/255"
    return f"ℓ2 ε={params['epsilon']:g}"


@entry_point(EvaluateConfig, help="Robust accuracy per attack and worst case per example: suite=quick (PGD-20, "
                                  "CW-20), standard (+ APGD-CE/DLR, Square; masking diagnostics) or full "
                                  "(AutoAttack-style); under the model's own threat (norm=linf|l2) unless given.")
def run_evaluate(cfg: EvaluateConfig) -> dict:
    """`rtl evaluate` / the `evaluate` entry point: evaluate, log to MLflow, tag a registered version."""
    from ..evaluation import MaskingWarning, evaluate_config
    from ..evaluation.inputs import evaluation_tags
    from ..expr import CASCADE_MARK, CASCADE_NOTE, is_per_attack_metric
    from ..strategies.validate import log_per_example
    from ..tracking import tracked_run
    from ..tracking.lineage import log_dataset
    from ..tracking.registry import link_evaluation, tag_model_version
    from ..tracking.naming import model_label, name_run

    tags = {"rtl.model": cfg.model, "rtl.suite": cfg.suite}
    with tracked_run("evaluate", cfg.to_params(), tags, experiment=cfg.experiment) as log:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskingWarning)   # reported below, as one line
            ev = evaluate_config(cfg)
        res = ev.result
        name_run(log.run_id, f"evaluate-{model_label(cfg.model)}-{cfg.suite}")
        given = cfg.to_params()           # the threat the evaluation resolved (the model's own by default)
        log.log_params({k: res.params[k] for k in ("norm", "epsilon", "step_size") if k not in given})
        log.log_metrics(res.metrics)
        # every accuracy's 0/1 per example (evaluation/result.py): what lets a claim pair this run's numbers with
        # each other and with a training run's evaluated on the same examples (analysis/per_example.py)
        log_per_example(log, res.per_example_record(cfg.split))
        dataset = log_dataset(ev.data.spec, cfg.split, ev.data.sha256(), "evaluation", n=len(ev.data))
        model_id = link_evaluation(log.run_id, cfg.model, res.metrics, dataset)
        run_tags = {"rtl.data": ev.data.spec, "rtl.data_sha256": ev.data.sha256(),
                    **evaluation_tags(res.n_examples, res.indices_sha256), "rtl.eval_attacks": ",".join(res.params["attacks"]),
                    "rtl.eval_budget": json.dumps(ev.budget.to_dict(), sort_keys=True),
                    "rtl.eval_per_attack": "cascade" if res.params.get("cascade") else "independent"}
        cascaded = [m for m in res.metrics if res.params.get("cascade") and is_per_attack_metric(m)]
        if cascaded:     # the run's mark: which of its numbers are a cascade's per-attack numbers (issue 24 §4)
            run_tags["rtl.cascade_metrics"] = ",".join(cascaded)
        if res.params.get("aa_impl"):
            run_tags["rtl.aa_impl"] = res.params["aa_impl"]
        if res.params.get("val_split"):     # split=val: which validation split (recorded by training, or defaults)
            run_tags["rtl.eval_val_split"] = res.params["val_split"]
        if ev.diagnostics is not None:
            run_tags.update(ev.diagnostics.tags())
        if model_id:
            run_tags["rtl.model_id"] = model_id
        log.set_tags(run_tags)
        version = tag_model_version(cfg.model, ev, log.run_id)
        if version:
            log.set_tags({"rtl.model_version": f"{version[0]}/{version[1]}"})
        shown = {f"{m} {CASCADE_MARK}" if m in cascaded else m: v for m, v in res.metrics.items()}
        print_table(f"evaluate {cfg.model} on {ev.data.spec}:{cfg.split} (n={res.n_examples}, "
                    f"{threat_text(res.params)}, suite={cfg.suite}) — run {log.run_id}", shown)
        if cascaded:
            print(f"  {CASCADE_NOTE}")
        if ev.diagnostics is not None:
            line = ev.diagnostics.warning()
            print(line or "gradient-masking diagnostics: no flags", file=sys.stderr if line else sys.stdout)
        return {"run_id": log.run_id, "metrics": res.metrics, "masking_flags": ev.masking_flags,
                "model_version": version}
