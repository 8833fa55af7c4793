"""The evaluation library: robustness of a model (object, checkpoint path or MLflow URI) on a dataset split.

Suites (`suite=`), each a list of attacks (attacks/specs.py) with an attack budget, one preset per suite
in `config.evaluate.SUITES`; docs/evaluation.md says what each is comparable with:

    quick       clean, PGD-20 (CE), CW-20 (margin); the worst case per example (`worst_acc`)
    standard    quick + APGD-CE + APGD-T (targeted DLR towards the 3 top classes) + Square (300 queries,
                score-based black box): AutoAttack's pipeline without FAB-T at a CPU budget, with Croce &
                Hein's own APGD and Square code (pyautoattack); `standard_worst_acc` (= `worst_acc`): an
                AutoAttack-style number, NOT the reference's; gradient-masking diagnostics
    full        APGD-CE, APGD-DLR (+ targeted on 9 classes), DeepFool in FAB's place (ART), Square at
                AutoAttack's budget, plus PGD-100 with 5 restarts; `full_worst_acc`; diagnostics
    autoattack  the reference: Croce & Hein's AutoAttack (standard) from `pyautoattack` (reference.py);
                `aa_acc` — only ever this suite's number — is the one RobustBench reports; its own checks
                are masking flags

The cascade (`cascade=True`, the default; engine.py): each attack runs only on the examples every
earlier attack failed to break; the worst case per example is the same, per-attack numbers are cascade
numbers (`rtl.eval_per_attack=cascade`). `cascade=False` runs every attack on every example.

`attacks=` replaces a suite's attack list (the suite still sets the budget and whether diagnostics
run). Evaluated examples are a seeded subset (`inputs.select_examples`, hashed in `indices_sha256`), so
numbers are comparable across runs; results are stored per attack and batch under `cache_dir()/eval/`
(store.py) and an interrupted evaluation resumes.

    front.py        the front doors: evaluate_config (an EvaluateConfig), evaluate (keywords), evaluate_tensors
    inputs.py       the one input check, the seeded subset of examples
    suites.py       suite name → specs, budget, diagnostics; what its AutoAttack number means
    engine.py       the attacks over the examples, batch by batch: cascade, store, progress
    store.py        the resume store
    diagnostics.py  gradient-masking checks
    reference.py    the reference AutoAttack (pyautoattack)
    splits.py       which images: a dataset split for a model, its validation split
    result.py       EvalResult, Evaluation, MaskingWarning

The `evaluate` entry point is commands/evaluate.py; registry tagging is tracking/registry.py.
"""
from .diagnostics import FLAG_TAG_PREFIX, FLAGS, MASKING_TAG, Diagnostics, MaskingThresholds
from .front import evaluate, evaluate_config, evaluate_tensors, load_any_model
from .inputs import select_examples
from .result import EvalResult, Evaluation, MaskingWarning
from .splits import VAL_DEFAULTS, data_for_model, validation_split
from .suites import SUITES, aa_impl, suite_attacks, suite_budget, suite_preset

__all__ = ["evaluate", "evaluate_config", "evaluate_tensors", "load_any_model", "Evaluation", "EvalResult",
           "MaskingWarning", "MaskingThresholds", "Diagnostics", "MASKING_TAG", "FLAG_TAG_PREFIX", "FLAGS",
           "SUITES", "suite_preset", "suite_attacks", "suite_budget", "aa_impl", "select_examples",
           "validation_split", "data_for_model", "VAL_DEFAULTS"]
