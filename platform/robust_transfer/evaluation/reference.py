"""The reference AutoAttack: Croce & Hein's own code (PyPI `pyautoattack`, MIT, github.com/fra31/auto-attack).

`AutoAttack(model, norm='Linf', eps=ε, version='standard')` runs APGD-CE, APGD-T (9 target
classes), FAB-T (9 targets) and Square (5000 queries) as a cascade: each attack only on the
examples that every earlier one left correctly classified. `run_standard_evaluation(x, y,
batch_size=, state_path=)` returns a tuple (x_adv, y_adv) and keeps its progress in a JSON state
file (per-example robust flags, finished attacks): with the same `state_path` an interrupted run
continues, re-running only the unfinished attack on the examples still standing. pyautoattack 0.2.0
cannot read its own state files back (`_load_state` fixes that) and a restored run fails at its very
end (`y_adv` unbound) after writing the state in full (`run_autoattack` reads the result from the file).

Our model takes pixels in [0,1] and normalises inside, as AutoAttack expects; it runs in eval
mode (per-module flags restored afterwards) and unmodified (no BatchNorm folding: the reference
attacks exactly the model as given). The seed is ours, so a rerun repeats.

Per example, "correct" is the final robust flag of the state file: after a resumed run the
returned x_adv holds only the current call's adversarial examples, the flags hold all of them.
Per-attack numbers are read from the state file each time AutoAttack reports an attack finished
(cascade numbers: correct after this attack and every earlier one).

AutoAttack's own checks (`pyautoattack.checks`), logged as warnings, become masking flags:
randomised_output, output_probabilities, dynamic_model, n_classes, zero_gradients and
blackbox_beats_whitebox (Square lowered the accuracy after the white-box attacks).
"""
from __future__ import annotations

import ast
import logging
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..attacks.specs import package_version
from ..models.modes import eval_mode

VERSION = "standard"
SUBATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")       # version 'standard', in its order
LABEL = "AutoAttack (standard), comparable with RobustBench"
CHECK_FLAGS = (("randomized defense", "randomised_output"), ("probability distribution", "output_probabilities"),
               ("dynamic defense", "dynamic_model"), ("target classes", "n_classes"),
               ("not possible to use the", "n_classes"), ("zero gradient", "zero_gradients"),
               ("Square Attack has decreased", "blackbox_beats_whitebox"))
_AFTER = re.compile(r"robust accuracy after ([A-Z\-]+): ([0-9.]+)% \(total time ([0-9.]+) s\)")


def reference_version() -> str:
    """The installed pyautoattack's version ('missing' when it is not installed)."""
    return package_version("pyautoattack")


@dataclass
class ReferenceResult:
    correct: torch.Tensor                                        # bool [n]: survives the whole AutoAttack
    cascade: dict[str, torch.Tensor] = field(default_factory=dict)  # sub-attack → bool [n] after it (cascade)
    seconds: dict[str, float] = field(default_factory=dict)     # sub-attack → seconds of this call
    flags: dict[str, str] = field(default_factory=dict)         # AutoAttack's checks that fired
    resumed: list[str] = field(default_factory=list)            # sub-attacks finished by an earlier call
    deviation: str = ""                                          # '' when version 'standard' ran as published


def configure(adversary, num_classes: int) -> tuple[str, str]:
    """Fit 'standard' to the model's class count: (deviation from the published version, flag details).

    Standard attacks 9 target classes: with C < 10 classes there are only C−1, so APGD-T and FAB-T
    get C−1 (AutoAttack would index past the last class). APGD-T's targeted DLR loss needs C ≥ 4:
    below that the run is APGD-CE, FAB-T and Square (AutoAttack's `custom` version, standard's
    settings) and flagged `n_classes`, as AutoAttack's own check would."""
    if num_classes >= 10:
        return "", ""
    k = max(1, num_classes - 1)
    adversary.apgd_targeted.n_target_classes = k
    adversary.fab.n_target_classes = k
    if num_classes >= 4:
        return f"APGD-T and FAB-T with {k} target classes (the model has {num_classes})", ""
    adversary.version = "custom"
    adversary.attacks_to_run = ["apgd-ce", "fab-t", "square"]
    deviation = (f"APGD-CE, FAB-T ({k} targets), Square: APGD-T needs >= 4 classes and the model has "
                 f"{num_classes}")
    return deviation, f"AutoAttack standard is not possible with {num_classes} classes; ran {deviation}"


class _Listener(logging.Handler):
    """Collects AutoAttack's log: check warnings and 'robust accuracy after X' (then reads the state file)."""

    def __init__(self, state_path: Path):
        super().__init__(logging.DEBUG)
        self.state_path = state_path
        self.flags: dict[str, str] = {}
        self.cascade: dict[str, torch.Tensor] = {}
        self.seconds: dict[str, float] = {}
        self._last_total = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            for needle, flag in CHECK_FLAGS:
                if needle in msg:
                    self.flags.setdefault(flag, "AutoAttack check: " + " ".join(msg.split())[:400])
                    break
            return
        m = _AFTER.search(msg)
        if m:
            attack, total = m.group(1).lower(), float(m.group(3))
            self.seconds[attack] = round(total - self._last_total, 3)
            self._last_total = total
            flags = _read_flags(self.state_path)
            if flags is not None:
                self.cascade[attack] = flags


def _load_state(path: Path):
    """pyautoattack 0.2.0's `EvaluationState.from_disk`, fixed: `to_disk` writes the set of attacks to run
    as its str() (json's default=str), so its own loader returns a string, and `run_standard_evaluation`
    then refuses every state file ("created with a different set of attacks"). We parse it back
    (ast.literal_eval: literals only) into the set it was."""
    from pyautoattack.state import EvaluationState

    state = EvaluationState.from_disk(path)
    attacks = state._attacks_to_run
    if isinstance(attacks, str):
        attacks = ast.literal_eval(attacks) if attacks not in ("set()", "") else set()
    state._attacks_to_run = set(attacks)
    return state


@contextmanager
def _resumable_states():
    """Make AutoAttack load its state files with `_load_state` for the duration of a call."""
    import pyautoattack.autoattack as aa_module
    from pyautoattack.state import EvaluationState

    class FixedState(EvaluationState):
        @classmethod
        def from_disk(cls, path):
            return _load_state(path)

    saved = aa_module.EvaluationState
    aa_module.EvaluationState = FixedState
    try:
        yield
    finally:
        aa_module.EvaluationState = saved


def _read_flags(path: Path) -> torch.Tensor | None:
    try:
        state = _load_state(path)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):
        return None
    return None if state.robust_flags is None else state.robust_flags.bool().cpu()


AA_NORMS = {"linf": "Linf", "l2": "L2"}     # our norm names → AutoAttack's


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int, batch_size: int,
                   device: torch.device, state_path: Path | None = None, norm: str = "linf") -> ReferenceResult:
    """The reference AutoAttack (version 'standard', norm 'Linf' or 'L2' for `norm` linf or l2, radius `eps` on
    [0,1] pixels) on (x, y).

    `x`: float pixels [n, C, H, W] in [0,1]; `y`: int64 labels [n]. With `state_path` the run is
    resumable (AutoAttack's own state file); without one a temporary file is used and removed.
    """
    from pyautoattack import AutoAttack

    with tempfile.TemporaryDirectory(prefix="rtl-aa-") as tmp:
        path = Path(state_path) if state_path is not None else Path(tmp) / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        resumed: list[str] = []
        if path.is_file():
            try:
                resumed = sorted(_load_state(path).run_attacks)
            except (OSError, ValueError, KeyError, TypeError, SyntaxError):
                path.unlink()                      # a torn state file: start again
        logger = logging.getLogger("auto-attack")
        listener = _Listener(path)
        saved = (logger.level, logger.propagate)
        logger.addHandler(listener)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False                  # its lines are ours to report, not the root logger's
        try:
            with eval_mode(model), _resumable_states():
                adversary = AutoAttack(model, norm=AA_NORMS[norm], eps=float(eps), version=VERSION, seed=int(seed),
                                       device=device)
                with torch.no_grad():
                    num_classes = int(model(x[:1].to(device)).shape[1])
                deviation, flag = configure(adversary, num_classes)
                if flag:
                    listener.flags["n_classes"] = flag
                try:
                    adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=int(batch_size),
                                                      state_path=path)
                except UnboundLocalError as e:
                    # pyautoattack 0.2.0, restored state: `y_adv` is only bound on a fresh run, so its
                    # `return x_adv, y_adv` fails; the state file was written in full just before it.
                    if not resumed or "y_adv" not in str(e):
                        raise
        finally:
            logger.removeHandler(listener)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
        final = _read_flags(path)
        if final is None:
            raise RuntimeError(f"AutoAttack left no readable state in {path}")
    return ReferenceResult(correct=final, cascade=listener.cascade, seconds=listener.seconds,
                           flags=listener.flags, resumed=resumed, deviation=deviation)
