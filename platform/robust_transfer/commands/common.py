"""What the commands share: the result table they print, and the shape of a strategy command that starts
from a source model (one tracked run, the strategy, the model published, the table printed, a dict back),
and the run of a training command under torchrun (`rank_run`: rank 0's is the job's one MLflow run)."""
from __future__ import annotations

import contextlib

from ..reporting import NullLogger


def print_table(title: str, rows: dict[str, float]) -> None:
    print(f"\n{title}")
    for k, v in rows.items():
        print(f"  {k:<20} {v:.4f}" if isinstance(v, float) else f"  {k:<20} {v}")


def source_tags(cfg) -> dict[str, str]:
    return {"rtl.source_model": cfg.source_model}


def publish(cfg, log, result, strategy: str, suffix: str = "") -> str:
    """Log a source-based strategy's model; register it when `register_as` asks (named after its data).
    The run is named `<strategy>-<dataset>-<arch>` (unless a suite or search named it)."""
    from ..tracking.naming import name_run, run_name
    from ..tracking.registry import publish_model

    name_run(log.run_id, run_name(strategy, result.meta["data_spec"], result.meta.get("arch", result.model.arch)))
    return publish_model(log, result, strategy, cfg.register_as, result.meta["data_spec"],
                         result.meta.get("arch", result.model.arch), suffix)


def report(title: str, log, result, model_uri: str) -> dict:
    """Print the result table; the command's dict."""
    print_table(f"{title} — run {log.run_id}", result.metrics | {"checkpoint": str(result.checkpoint_dir)})
    return {"run_id": log.run_id, "metrics": result.metrics, "model_uri": model_uri,
            "checkpoint": str(result.checkpoint_dir)}


def resolve_source(uri: str):
    """The source model (trainable, CPU) and its checkpoint metadata, loaded once from `uri` (a config's
    `source_model`) before any run starts (one that cannot be had fails with no run opened, ModelError) and
    handed to the strategy."""
    from ..strategies.source_model import Source
    from ..tracking import models

    model, meta = models.load_model_with_meta(uri)
    return Source.of(model, meta, uri)


class OtherRank(NullLogger):
    """What a training command's body logs to on a torchrun rank other than 0: nothing (rank 0's run is the
    job's; this rank only trains)."""

    run_id = None


@contextlib.contextmanager
def rank_run(strategy: str, params: dict, tags: dict, **kw):
    """`tracked_run(strategy, params, tags, **kw)` on rank 0 — in one process, just that — and `OtherRank` on
    the other ranks of a torchrun job (after `distributed.start`: the training commands join the job first)."""
    from .. import distributed
    from ..tracking import tracked_run

    if not distributed.current().main:
        yield OtherRank()
        return
    with tracked_run(strategy, params, tags, **kw) as log:
        yield log


def other_rank_result() -> dict:
    """What a training command returns on a rank other than 0 (rank 0 prints and returns the results)."""
    from .. import distributed

    return {"rank": distributed.current().rank}


def run_source_strategy(strategy: str, cfg, fn, title: str) -> dict:
    """transfer, finetune_adv, lwf: the torchrun job joined (when launched so), the source resolved, then one
    tracked run around `fn(cfg, log, run_id=..., source=...)`."""
    from .. import distributed

    ranks = distributed.start(cfg.device, cfg.batch_size)
    source = resolve_source(cfg.source_model)
    with rank_run(strategy, cfg.to_params(), source_tags(cfg), experiment=cfg.experiment) as log:
        result = fn(cfg, log, run_id=log.run_id, source=source)
        if not ranks.main:
            return other_rank_result()
        return report(title, log, result, publish(cfg, log, result, strategy))
