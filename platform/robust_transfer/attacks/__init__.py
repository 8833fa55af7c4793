"""ℓ∞ attack algorithms on pixels in [0,1] (docs/architecture.md `attacks/`): PGD for training and for
evaluation (pgd.py), FGSM/FGSM-RS and input gradients (fgsm.py), the threat model (threat.py), BatchNorm
folding (fold.py), the attack-name grammar (specs.py) and budget (budget.py), and one batch of one
attack by implementation (dispatch.py → impl_ours.py, impl_pyautoattack.py, impl_art.py).

Running a suite of attacks over a dataset (cascade, resume store, diagnostics, the reference AutoAttack)
is `robust_transfer.evaluation`.

The names below are imported on first use (PEP 562), so that `config/` can read the torch-free grammar and
budget (specs.py, budget.py) without importing torch: `rtl --help` stays under a second (issue 27).
`pgd` and `fgsm` are both a submodule and a function; the package attribute is always the function (as
it was when this file imported everything): `_Package` keeps the import system from overwriting it with
the submodule when someone imports `robust_transfer.attacks.pgd` directly.
"""
from __future__ import annotations

import importlib
import sys
import types

_EXPORTS = {  # name → the submodule that defines it
    "BUDGET_KNOBS": "budget", "AttackBudget": "budget",
    "fgsm": "fgsm", "input_gradients": "fgsm",
    "LOSSES": "pgd", "AttackOutput": "pgd", "cw_margin_loss": "pgd", "pgd": "pgd", "pgd_attack": "pgd",
    "pgd_train": "pgd",
    "AttackSpec": "specs", "parse_attack": "specs", "parse_attack_spec": "specs", "parse_attacks": "specs",
    "ThreatModel": "threat",
}
_FUNCTIONS_NAMED_LIKE_MODULES = {"pgd", "fgsm"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _FUNCTIONS_NAMED_LIKE_MODULES and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules; `attacks.pgd` is the function (see above)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["ThreatModel", "pgd", "pgd_train", "pgd_attack", "AttackOutput", "fgsm", "cw_margin_loss", "input_gradients",
           "LOSSES", "AttackSpec", "parse_attack", "parse_attack_spec", "parse_attacks", "AttackBudget", "BUDGET_KNOBS"]
