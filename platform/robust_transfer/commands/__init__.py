"""The entry points: one module per `rtl` subcommand / MLproject entry point, each the same shape (a config
in, one tracked MLflow run, the library call, a printed table, a dict out). The library layers below never
import this package; `COMMANDS` is the table `cli.py`, `mlproject.py` and the demo read."""
from __future__ import annotations

from ..config import CONFIGS, canonical_entry_point
from . import analyze, evaluate, finetune_adv, lwf, promote, report, retrain_blocks, search, suite, train, transfer
from .common import print_table

run_train = train.run_train
run_evaluate = evaluate.run_evaluate
run_retrain_blocks = retrain_blocks.run_retrain_blocks
run_transfer = transfer.run_transfer
run_finetune_adv = finetune_adv.run_finetune_adv
run_lwf = lwf.run_lwf
run_promote = promote.run_promote
run_analyze = analyze.run_analyze
run_report = report.run_report
run_suite = suite.run_suite


def run_entry_point(entry_point: str, cfg) -> dict:
    """Run the command of `entry_point` (either spelling) on its config: what search trials run."""
    return COMMANDS[canonical_entry_point(entry_point)][1](cfg)


def run_search(cfg, callbacks=()) -> dict:
    """The `search` entry point, handed the commands its trials run."""
    return search.run_search(cfg, run_entry_point, callbacks)


_HELP = {
    "train": "Train a source model: natural, pgd, free or fgsm-rs (Table 1).",
    "evaluate": "Robust accuracy per attack and worst case per example: suite=quick (PGD-20, CW-20), standard "
                "(+ APGD-CE/DLR, Square; masking diagnostics) or full (AutoAttack-style).",
    "retrain-blocks": "Re-initialise and re-train the k deepest blocks on natural examples (Fig. 1).",
    "transfer": "Frozen source features + a new linear/MLP head (Eq. 2, Tables 2-3, Fig. 3-4).",
    "finetune-adv": "End-to-end fine-tuning of the source on PGD-k examples of the target (Fig. 3 baseline).",
    "lwf": "Fine-tuning without forgetting: CE + lambda_d * d(z, z0) (Sec. 6, Tables 4-7).",
    "search": "Search a space (search_spaces/*.yaml) with Optuna or Ray Tune; one MLflow child run per trial.",
    "promote": "Move the champion alias of a registered model if a policy says so; records the decision and a "
               "model card.",
    "analyze": "Input-gradient images of models (what=gradients, Fig. 5) or feature distances between images and "
               "their augmented copies (what=feature-distance, Fig. 7).",
    "report": "Write a suite's tables, figures and claim verdicts (projects/*.yaml `report:`) from its newest "
              "FINISHED step runs to <out>/<scale>/.",
    "suite": "Run a paper table/figure (projects/*.yaml) as child runs, reusing finished steps, passing models by "
             "registry alias, ending with report.",
}
_RUN = {"train": run_train, "evaluate": run_evaluate, "retrain-blocks": run_retrain_blocks, "transfer": run_transfer,
        "finetune-adv": run_finetune_adv, "lwf": run_lwf, "search": run_search, "promote": run_promote,
        "analyze": run_analyze, "report": run_report, "suite": run_suite}

# name (rtl spelling) → (config class, function, help), in CONFIGS' order (MLproject's)
COMMANDS = {name: (cls, _RUN[name], _HELP[name]) for name, cls in CONFIGS.items()}

__all__ = ["COMMANDS", "run_entry_point", "print_table", *(f.__name__ for f in _RUN.values())]
