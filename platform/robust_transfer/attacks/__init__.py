"""ℓ∞ attacks (PGD, CW-margin PGD, FGSM, FGSM-RS) and robustness evaluation (docs/architecture.md `attacks/`)."""
from .evaluate import (ATTACKS, EvalResult, attack_name, evaluate_robustness, indices_sha256, parse_attack,
                       select_examples)
from .madry import pgd_train
from .pgd import LOSSES, AttackOutput, cw_margin_loss, eval_mode, fgsm, input_gradients, pgd, pgd_attack
from .threat import ThreatModel

__all__ = ["ThreatModel", "pgd", "pgd_train", "pgd_attack", "AttackOutput", "fgsm", "cw_margin_loss", "input_gradients",
           "eval_mode", "LOSSES", "ATTACKS", "parse_attack", "attack_name", "select_examples", "indices_sha256",
           "EvalResult", "evaluate_robustness"]
