"""One grammar for attack names, one attack spec: what every evaluation in this library runs.

The grammar lives with the attacks (it names the algorithms and their parameters) and imports nothing
above them, so `config/` checks `attacks=` with it at the boundary. `parse_attack_spec` is the one
parser (one regex, one MAX_STEPS); `parse_attacks` reads a list, `parse_attack` the short form that
training-time evaluation takes (our own attacks, one restart).

    clean                    no attack
    fgsm                     one signed-gradient step (ours)
    pgd<k>[r<m>]             k-step PGD on cross-entropy, m random restarts (ours; pgd100r5 → pgd100r5_acc)
    cw<k>[r<m>]              k-step PGD on the CW margin (ours)
    apgd-ce                  APGD on cross-entropy (Croce & Hein 2020)
    apgd-dlr                 APGD on the DLR loss, untargeted, then targeted towards the `apgd_targets`
                             classes the model ranks highest on what is left (AutoAttack's APGD-T)
    apgd-t                   AutoAttack's APGD-T alone: APGD on the targeted DLR loss towards each of the
                             `apgd_targets` classes the model ranks highest (no untargeted DLR run); that
                             loss needs 4 classes, so with 3 it runs as the untargeted APGD-DLR
    square                   Square Attack (Andriushchenko et al. 2020), score-based black box
    deepfool                 ART's DeepFool projected onto the ε-ball (ART's AutoAttack runs it where
                             AutoAttack has FAB; ART 1.20 has no FAB)
    autoattack               Croce & Hein's own AutoAttack, version 'standard' (APGD-CE, APGD-T with 9
                             targets, FAB-T, Square with 5000 queries), from the `pyautoattack` package:
                             the number RobustBench reports (attacks/reference.py)

APGD and Square run Croce & Hein's own implementations (`pyautoattack`'s APGDAttack, APGDAttack_targeted
and SquareAttack, driven one batch at a time by attacks/impl_pyautoattack.py with per-example random starts);
`<name>@art` runs ART 1.20's instead (`apgd-ce@art`, `apgd-dlr@art`, `square@art`: slower, kept for
comparisons). DeepFool is ART's only.

An `AttackSpec` names what runs: name, kind, loss, steps, restarts, targets, queries, implementation.
Budget-driven fields (APGD iterations, targets, Square queries) are filled by `resolve(budget)` (budget.py).
Metric: the name with '-' → '_' and `_acc` appended (`apgd-ce` → `apgd_ce_acc`; `autoattack` → `aa_acc`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from ..errors import ConfigError

OURS_KINDS = ("clean", "fgsm", "pgd", "cw")
ART_KINDS = ("apgd-ce", "apgd-dlr", "apgd-t", "square", "deepfool")      # the kinds ART can run
REFERENCE_KINDS = ("autoattack",)
# Which code runs a kind by default (`<name>@art` picks ART where ART has the attack too).
DEFAULT_IMPL = {"apgd-ce": "pyautoattack", "apgd-dlr": "pyautoattack", "apgd-t": "pyautoattack",
                "square": "pyautoattack", "deepfool": "art", "autoattack": "pyautoattack"}
IMPLS = {"apgd-ce": ("pyautoattack", "art"), "apgd-dlr": ("pyautoattack", "art"), "apgd-t": ("pyautoattack", "art"),
         "square": ("pyautoattack", "art")}
MAX_STEPS, MAX_RESTARTS = 10_000, 100
_STEPPED = re.compile(r"^(pgd|cw)(\d+)(?:r(\d+))?$")
ATTACK_FORMS = ("clean, fgsm, pgd<steps>[r<restarts>], cw<steps>[r<restarts>], apgd-ce, apgd-dlr, apgd-t, square, "
                "deepfool, "
                "autoattack (e.g. pgd20, cw20, pgd100r5; apgd-ce@art, apgd-dlr@art, square@art for ART's)")
LOSSES = {"clean": "", "fgsm": "ce", "pgd": "ce", "cw": "cw-margin", "apgd-ce": "ce", "apgd-dlr": "dlr",
          "apgd-t": "dlr-targeted",
          "square": "margin", "deepfool": "", "autoattack": "ce,dlr-targeted,fab-targeted,margin"}


L2_REFUSED = ("fgsm",)     # ℓ∞ by construction (the gradient's sign); ART's attacks are run with norm=inf here


def check_attack_norm(spec: "AttackSpec", norm: str) -> None:
    """One line when an attack has no `norm` version here: FGSM and ART's attacks are ℓ∞ only."""
    if norm != "linf" and (spec.kind in L2_REFUSED or spec.impl == "art"):
        raise ConfigError(f"attack {spec.name} runs under l-inf only; with norm={norm} use clean, pgd<k>, cw<k>, "
                          "apgd-ce, apgd-dlr, apgd-t, square or autoattack (suite quick, standard or autoattack)")


def package_version(name: str) -> str:
    """An installed distribution's version ('missing' when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def implementation(kind: str, impl: str = "") -> str:
    """Which code runs an attack of this kind (and `impl`, default: the kind's): ours, ART's, or
    Croce & Hein's (pyautoattack), with its version."""
    impl = impl or DEFAULT_IMPL.get(kind, "ours")
    if impl == "art":
        return f"art {package_version('adversarial-robustness-toolbox')}"
    if impl == "pyautoattack":
        return f"pyautoattack {package_version('pyautoattack')}"
    return "robust_transfer"


@dataclass(frozen=True)
class AttackSpec:
    name: str            # canonical spelling, e.g. 'pgd100r5', 'apgd-ce'
    kind: str            # clean | fgsm | pgd | cw | apgd-ce | apgd-dlr | square | deepfool | autoattack
    steps: int = 0       # iterations (PGD/CW: from the name; APGD/DeepFool: from the budget)
    restarts: int = 1
    targets: int = 0     # target classes (APGD-T; the reference: 9)
    queries: int = 0     # Square Attack queries
    loss: str = ""       # derived from the kind when not given
    impl: str = ""       # ours | pyautoattack | art; derived from the kind when not given (DEFAULT_IMPL)

    def __post_init__(self):
        if not self.loss:
            object.__setattr__(self, "loss", LOSSES.get(self.kind, ""))
        if not self.impl:
            object.__setattr__(self, "impl", DEFAULT_IMPL.get(self.kind, "ours"))

    @property
    def metric(self) -> str:
        return "aa_acc" if self.kind == "autoattack" else self.name.replace("-", "_").replace("@", "_") + "_acc"

    @property
    def whitebox(self) -> bool:
        """Uses gradients (Square only queries scores; clean is no attack)."""
        return self.kind not in ("clean", "square")

    @property
    def implementation(self) -> str:
        return implementation(self.kind, self.impl)

    def resolve(self, budget) -> "AttackSpec":
        """This spec with the budget's iterations, targets and queries filled in (what actually runs)."""
        if self.kind in ("apgd-ce", "apgd-dlr", "apgd-t"):
            return replace(self, steps=budget.apgd_iters, restarts=1 if self.kind == "apgd-t" else budget.apgd_restarts,
                           targets=budget.apgd_targets if self.kind != "apgd-ce" else 0)
        if self.kind == "square":
            return replace(self, queries=budget.square_queries, restarts=budget.square_restarts)
        if self.kind == "deepfool":
            return replace(self, steps=budget.deepfool_iters)
        if self.kind == "autoattack":
            return replace(self, steps=100, targets=9, queries=5000)
        return self

    def describe(self) -> dict:
        return {**asdict(self), "implementation": self.implementation}


def parse_attack_spec(name) -> AttackSpec:
    """'pgd20' → AttackSpec('pgd20', 'pgd', 20); 'apgd_ce' → AttackSpec('apgd-ce', 'apgd-ce'); ..."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else ""
    if "@" in key:
        kind, _, impl = key.partition("@")
        if impl not in IMPLS.get(kind, ()):
            raise ConfigError(f"attack={name!r} is not allowed; <attack>@<implementation> exists for "
                              + ", ".join(f"{k}@{i}" for k, impls in IMPLS.items() for i in impls))
        if impl == DEFAULT_IMPL[kind]:
            return AttackSpec(kind, kind)
        return AttackSpec(key, kind, impl=impl)
    if key in ("clean", "fgsm", *ART_KINDS, *REFERENCE_KINDS):
        return AttackSpec(key, key, steps=1 if key == "fgsm" else 0)
    m = _STEPPED.match(key)
    if m:
        steps, restarts = int(m.group(2)), int(m.group(3) or 1)
        if 1 <= steps <= MAX_STEPS and 1 <= restarts <= MAX_RESTARTS:
            canon = f"{m.group(1)}{steps}" + (f"r{restarts}" if m.group(3) else "")
            return AttackSpec(canon, m.group(1), steps, restarts)
    if key in ("fab", "fab-t", "aa"):
        hint = {"fab": "ART 1.20 has no FAB; its AutoAttack runs DeepFool in that slot: use deepfool, or "
                       "autoattack for the reference AutoAttack (FAB-T included)",
                "aa": "the reference AutoAttack is spelled autoattack"}
        hint["fab-t"] = hint["fab"]
        raise ConfigError(f"attack={name!r} is not allowed; " + hint[key])
    raise ConfigError(f"attack={name!r} is not allowed; use {ATTACK_FORMS}, with 1 <= steps <= {MAX_STEPS} "
                      f"and 1 <= restarts <= {MAX_RESTARTS}")


def parse_attacks(attacks) -> list[AttackSpec]:
    """The one parser of `attacks=`: a comma string or a sequence of names → specs, canonical,
    de-duplicated, in the order given (the cascade order), clean first."""
    if isinstance(attacks, str):
        attacks = [a for a in attacks.split(",") if a.strip()]
    specs = list(dict.fromkeys(parse_attack_spec(a) for a in attacks))
    if not specs:
        raise ConfigError(f"attacks is empty; give at least one of {ATTACK_FORMS}")
    clean = [s for s in specs if s.kind == "clean"] or [AttackSpec("clean", "clean")]
    return clean + [s for s in specs if s.kind != "clean"]


SHORT_FORMS = "clean, fgsm, pgd<steps> or cw<steps> (e.g. pgd20, cw20)"


def parse_attack(name) -> tuple[str, int]:
    """'clean'→('clean', 0), 'fgsm'→('fgsm', 1), 'pgd20'→('pgd', 20), 'cw20'→('cw', 20).

    The short form of the one grammar (`parse_attack_spec`) for our own attacks with one restart, as
    training and transfer runs use them; every other name is a ConfigError naming what is allowed."""
    try:
        spec = parse_attack_spec(name)
    except ConfigError:
        spec = None
    if spec is None or spec.kind not in OURS_KINDS or spec.name != (f"{spec.kind}{spec.steps}"
                                                                    if spec.kind in ("pgd", "cw") else spec.kind):
        raise ConfigError(f"attack={name!r} is not allowed; use {SHORT_FORMS}, with 1 <= steps <= {MAX_STEPS}")
    return spec.kind, spec.steps
