"""`report`: a suite's tables, figures and claim verdicts from its runs (analysis/report.py)."""
from __future__ import annotations

from ..config import ReportConfig
from .registry import entry_point


@entry_point(ReportConfig, help="Write a suite's tables, figures and claim verdicts (projects/*.yaml `report:`) from "
                                "its newest FINISHED step runs to <out>/<scale>/.")
def run_report(cfg: ReportConfig) -> dict:
    """`rtl report`: validate the suite and scale first, then write the report inside its own MLflow run
    (its files logged as artifacts under report/<scale>/) and print the tables."""
    from ..analysis.report import check_scale, experiment_ids_for, load_report_spec, write_report
    from ..tracking import tracked_run
    from ..analysis.report_claims import claim_line, count_line

    spec = load_report_spec(cfg.project)
    check_scale(spec, cfg.scale)
    experiment_ids = experiment_ids_for(cfg.experiment)
    tags = {"rtl.report_suite": spec["name"], "rtl.report_scale": cfg.scale}
    with tracked_run("report", cfg.to_params(), tags, experiment=cfg.experiment or "robust-transfer") as log:
        result = write_report(spec, cfg.scale, cfg.out, experiment_ids=experiment_ids)
        for path in result["files"]:
            log.log_artifact(path, f"report/{cfg.scale}")
        n_missing = sum(int((t["ours"].isna()).sum()) for t in result["tables"].values())
        log.log_metrics({"report_missing_cells": n_missing, "report_warnings": len(result["warnings"])})
        # claims registered after their runs are counted apart (claims_after_*), never among the supported
        for prefix, registered in (("claims_", True), ("claims_after_", False)):
            verdicts = [c["verdict"] for c in result["claims"] if (c["registered"] == "before") == registered]
            log.log_metrics({f"{prefix}{v.replace(' ', '_')}": verdicts.count(v) for v in set(verdicts)})
        for md in result["markdown"].values():
            print("\n" + md)
        for c in result["claims"]:
            print(claim_line(c))
        if result["claims"]:
            print(count_line(result["claims"]))
        written = ", ".join(p.name for p in result["files"])
        print(f"report {spec['name']} at scale {cfg.scale}: {result['dir']}/ ({written}) — run {log.run_id}")
        result["run_id"] = log.run_id
        return result
