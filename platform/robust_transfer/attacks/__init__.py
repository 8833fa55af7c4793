"""ℓ∞ attack algorithms on pixels in [0,1] (docs/architecture.md `attacks/`): PGD for training and for
evaluation (pgd.py), FGSM/FGSM-RS and input gradients (fgsm.py), the threat model (threat.py), BatchNorm
folding (fold.py), the attack-name grammar (specs.py) and budget (budget.py), and one batch of one
attack by implementation (dispatch.py → impl_ours.py, impl_pyautoattack.py, impl_art.py).

Running a suite of attacks over a dataset (cascade, resume store, diagnostics, the reference AutoAttack)
is `robust_transfer.evaluation`.
"""
from .budget import BUDGET_KNOBS, AttackBudget
from .fgsm import fgsm, input_gradients
from .pgd import LOSSES, AttackOutput, cw_margin_loss, pgd, pgd_attack, pgd_train
from .specs import AttackSpec, parse_attack, parse_attack_spec, parse_attacks
from .threat import ThreatModel

__all__ = ["ThreatModel", "pgd", "pgd_train", "pgd_attack", "AttackOutput", "fgsm", "cw_margin_loss", "input_gradients",
           "LOSSES", "AttackSpec", "parse_attack", "parse_attack_spec", "parse_attacks", "AttackBudget", "BUDGET_KNOBS"]
