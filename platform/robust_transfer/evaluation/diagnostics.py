"""Gradient-masking diagnostics (Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial
robustness"): signs that a robust accuracy is an artefact of gradients that mislead the attack.

Each check that fires adds a flag (name → one-line details):

    pgd_steps                accuracy under PGD does not fall as steps grow (PGD-20 → PGD-100, or, when
                             no PGD-100 runs, → APGD-CE: more, adaptive steps on the same loss) while a
                             stronger attack finds more (PGD is stuck, not converged); or it rises with steps
    pgd_epsilon              accuracy under PGD-20 at a huge ε (ℓ∞: 64/255; ℓ2: 16) is not near 0
    blackbox_beats_whitebox  the score-based black-box attack (Square) beats every white-box attack
    cw_below_ce              PGD on the CW margin is far below PGD on cross-entropy (saturated softmax)
    zero_gradients           ∇ₓ CE is zero or not finite for a share of the correctly classified examples
    randomised_output        two forward passes in eval mode disagree (stochastic model: use EOT)

With the reference AutoAttack (`autoattack`), its own checks add theirs (reference.py):
randomised_output, zero_gradients, blackbox_beats_whitebox under the same names, and

    output_probabilities     the model outputs probabilities, not logits
    dynamic_model            the forward pass computes gradients (a dynamic defense)
    n_classes                too few classes for the targeted attacks of AutoAttack standard

In a cascade (engine.py) the comparisons between attacks use what each attack broke that every
earlier attack had left correct (see `_cascade_checks`).

A genuinely robust model passes all of them; thresholds are `MaskingThresholds`. The flags go to
MLflow as tags: `rtl.masking_flags` (comma list, empty when clean) and `rtl.masking.<flag>` (details),
also on the registered model version, where `promote` refuses a flagged version unless told otherwise.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..attacks import AttackSpec, ThreatModel, input_gradients
from ..models.modes import eval_mode

MASKING_TAG = "rtl.masking_flags"
FLAG_TAG_PREFIX = "rtl.masking."
FLAGS = ("pgd_steps", "pgd_epsilon", "blackbox_beats_whitebox", "cw_below_ce", "zero_gradients",
         "randomised_output", "output_probabilities", "dynamic_model", "n_classes")


@dataclass(frozen=True)
class MaskingThresholds:
    steps_gap: float = 0.05        # pgd_steps: PGD-20 above the worst case by more than this, yet PGD-100 no lower
    steps_rise: float = 0.02       # pgd_steps: PGD-100 above PGD-20 by more than this (accuracy rising with steps)
    large_epsilon: float = 64.0    # pgd_epsilon: ε (0–255 scale) where any model should be broken ...
    large_epsilon_l2: float = 16.0  # the same under ℓ2 (ℓ2 norm in [0,1] pixels: 32× CIFAR's 0.5, > 5× ImageNet's 3)
    large_eps_acc: float = 0.10    # ... flag when its PGD-20 accuracy there is above this
    blackbox_margin: float = 0.01  # blackbox_beats_whitebox: Square below the best white-box attack by more than this
    cw_gap: float = 0.10           # cw_below_ce: PGD-k(CE) − CW-k above this
    zero_grad_share: float = 0.10  # zero_gradients: share of correctly classified examples with ∇ₓ = 0 or NaN
    output_rtol: float = 1e-4      # randomised_output: max |logits₁ − logits₂| relative to max |logits₁|
    min_examples: int = 2          # a gap between two accuracies must also span at least this many examples

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Diagnostics:
    flags: dict[str, str] = field(default_factory=dict)           # flag → details (empty: no sign of masking)
    measurements: dict[str, float] = field(default_factory=dict)  # logged as metrics (diag_*)
    skipped: dict[str, str] = field(default_factory=dict)         # check → why it could not run

    @property
    def flag_names(self) -> list[str]:
        return [f for f in FLAGS if f in self.flags] + [f for f in self.flags if f not in FLAGS]

    def tags(self) -> dict[str, str]:
        tags = {MASKING_TAG: ",".join(self.flag_names)}
        tags.update({FLAG_TAG_PREFIX + k: v[:4000] for k, v in self.flags.items()})
        return tags

    def warning(self) -> str:
        """One line for the output ('' when nothing was flagged)."""
        if not self.flags:
            return ""
        return (f"warning: possible gradient masking ({', '.join(self.flag_names)}): robust accuracy under "
                "PGD may be inflated; " + "; ".join(f"{k}: {self.flags[k]}" for k in self.flag_names))


def _acc(correct: torch.Tensor) -> float:
    return correct.float().mean().item() if correct.numel() else float("nan")


def first_broken(correct: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cascade results (in run order) → per attack, bool [n]: the examples it broke that every earlier attack
    left correct."""
    out, alive = {}, None
    for name, ok in correct.items():
        out[name] = (~ok if alive is None else alive & ~ok)
        alive = ok if alive is None else alive & ok
    return out


def diagnose(runner, correct: dict[str, torch.Tensor], specs, threat: ThreatModel,
             thresholds: MaskingThresholds = MaskingThresholds(), *, cascade: bool = False,
             reference_flags: dict[str, str] | None = None) -> Diagnostics:
    """Run every check on what the evaluation measured (`correct`: attack name → bool [n], in run order;
    `specs`: their AttackSpecs), plus the few extra measurements the checks need (through `runner`, an
    AttackRunner). With `cascade`, per-attack results are cascade results: the comparisons between
    attacks use what each attack broke that every earlier one had not (`first_broken`). The reference
    AutoAttack's own checks (`reference_flags`) are added as they are."""
    d = Diagnostics()
    d.flags.update(reference_flags or {})
    if cascade:
        _cascade_checks(runner, d, correct, specs, threat, thresholds)
        return d
    t = thresholds
    by_name = {s.name: s for s in specs}
    acc = {name: _acc(c) for name, c in correct.items()}
    attacked = [n for n in correct if by_name[n].kind != "clean"]
    worst = _acc(torch.stack(list(correct.values())).all(0))
    n = next(iter(correct.values())).numel()
    tiny = (t.min_examples - 0.5) / max(n, 1)      # the smallest gap that spans min_examples examples

    _check_randomness(runner, d, t)
    _check_gradients(runner, d, t)

    # CW far below CE-PGD at the same number of steps.
    pairs = [(p, f"cw{by_name[p].steps}") for p in correct if by_name[p].kind == "pgd" and by_name[p].restarts == 1]
    pairs = [(p, c) for p, c in pairs if c in correct]
    if pairs:
        p, c = pairs[0]
        gap = acc[p] - acc[c]
        if gap > max(t.cw_gap, tiny):
            d.flags["cw_below_ce"] = (f"{c}_acc={acc[c]:.3f} is {100 * gap:.1f} points below {p}_acc={acc[p]:.3f} "
                                      f"(threshold {100 * t.cw_gap:.0f}): cross-entropy gradients vanish, a "
                                      "saturated softmax hides the margin")
    else:
        d.skipped["cw_below_ce"] = "needs pgd<k> and cw<k> with the same k"

    # Accuracy must fall (or have converged at the worst case) as PGD gets more steps.
    few, many = _steps_pair(list(correct), by_name)
    if few:
        rise, stuck_gap = acc[many] - acc[few], acc[few] - worst
        if rise > max(t.steps_rise, tiny):
            d.flags["pgd_steps"] = (f"accuracy rises with steps: {few}_acc={acc[few]:.3f} → {many}_acc={acc[many]:.3f}"
                                    " (a sound attack with more steps cannot do worse)")
        elif rise >= 0 and stuck_gap > max(t.steps_gap, tiny):
            d.flags["pgd_steps"] = (f"accuracy does not fall with steps ({few}_acc={acc[few]:.3f} → {many}_acc="
                                    f"{acc[many]:.3f}) although other attacks reach {worst:.3f}: PGD is stuck")
    else:
        d.skipped["pgd_steps"] = "needs pgd<k> and pgd<K> with K >= 100 and K >= 5k, or pgd<k> and apgd-ce"

    # Accuracy must go to ~0 as ε grows.
    _epsilon_check(runner, d, t, threat)

    # A black-box attack beating every white-box one means the gradients mislead.
    white = [n for n in attacked if by_name[n].whitebox]
    sq = _square(correct, by_name)
    if sq and white:
        best = min(white, key=lambda n: acc[n])
        if acc[sq] < acc[best] - max(t.blackbox_margin, tiny):
            only = (~correct[sq] & torch.stack([correct[n] for n in white]).all(0)).sum().item()
            d.flags["blackbox_beats_whitebox"] = (
                f"{sq}_acc={acc[sq]:.3f} is below the best white-box attack ({best}_acc={acc[best]:.3f}); "
                f"{only} examples fall only to the black box")
    else:
        d.skipped["blackbox_beats_whitebox"] = "needs square and a white-box attack"
    return d


def _cascade_checks(runner, d: Diagnostics, correct, specs, threat: ThreatModel, t: MaskingThresholds) -> None:
    by_name = {s.name: s for s in specs}
    order = list(correct)
    n = next(iter(correct.values())).numel()
    tiny = (t.min_examples - 0.5) / max(n, 1)
    acc = {name: _acc(c) for name, c in correct.items()}
    new = {name: _acc(b) for name, b in first_broken(correct).items()}
    worst = acc[order[-1]]

    _check_randomness(runner, d, t)
    _check_gradients(runner, d, t)

    pairs = [(p, f"cw{by_name[p].steps}") for p in order if by_name[p].kind == "pgd" and by_name[p].restarts == 1]
    pairs = [(p, c) for p, c in pairs if c in correct and order.index(c) > order.index(p)]
    if pairs:
        p, c = pairs[0]
        if new[c] > max(t.cw_gap, tiny):
            d.flags["cw_below_ce"] = (f"{c} breaks {100 * new[c]:.1f}% of the examples that {p} and every attack "
                                      f"before it left correct (threshold {100 * t.cw_gap:.0f}): cross-entropy "
                                      "gradients vanish, a saturated softmax hides the margin")
    else:
        d.skipped["cw_below_ce"] = "needs pgd<k> and, after it, cw<k> with the same k"

    few, many = _steps_pair(order, by_name)
    if few and order.index(many) > order.index(few):
        stuck_gap = acc[few] - worst
        if new[many] == 0 and stuck_gap > max(t.steps_gap, tiny):
            d.flags["pgd_steps"] = (f"{many} breaks nothing that {few} left ({few}_acc={acc[few]:.3f}) although "
                                    f"the whole suite reaches {worst:.3f}: PGD is stuck")
    else:
        d.skipped["pgd_steps"] = "needs pgd<k> and, after it, pgd<K> with K >= 100 and K >= 5k, or apgd-ce"

    _epsilon_check(runner, d, t, threat)

    sq = _square(correct, by_name)
    if sq and any(by_name[n].whitebox for n in order[:order.index(sq)]):
        if any(by_name[n].whitebox for n in order[order.index(sq) + 1:]):
            d.skipped["blackbox_beats_whitebox"] = "square must come after every white-box attack in the cascade"
        elif new[sq] > max(t.blackbox_margin, tiny):
            only = int(first_broken(correct)[sq].sum())
            d.flags["blackbox_beats_whitebox"] = (
                f"{sq} breaks {100 * new[sq]:.1f}% ({only} examples) that every white-box attack left "
                f"correct (threshold {100 * t.blackbox_margin:g}%)")
    elif "blackbox_beats_whitebox" not in d.flags:
        d.skipped["blackbox_beats_whitebox"] = "needs square after a white-box attack"


def _steps_pair(order, by_name) -> tuple[str | None, str | None]:
    """(few, many) for the pgd_steps check: the PGD with the fewest steps, and the PGD with the most if it
    has >= 100 and >= 5× as many; else APGD-CE (the same loss with more, adaptive steps: what `standard`
    runs since PGD-100 left it, issue 15); (None, None) when the suite has neither."""
    pgds = sorted((by_name[n].steps, n) for n in order if by_name[n].kind == "pgd")
    if not pgds:
        return None, None
    few, many = pgds[0][1], pgds[-1][1]
    if by_name[many].steps >= 5 * by_name[few].steps and by_name[many].steps >= 100:
        return few, many
    apgd = next((n for n in order if by_name[n].kind == "apgd-ce"), None)
    return (few, apgd) if apgd else (None, None)


def _square(correct, by_name) -> str | None:
    """The name of the Square attack that ran (square, or square@art), if one did."""
    return next((n for n in correct if by_name[n].kind == "square"), None)


def _epsilon_check(runner, d, t, threat) -> None:
    """Accuracy must go to ~0 as ε grows: checked when the large ε (of the threat's norm) is above the evaluated
    one."""
    large = t.large_epsilon if threat.norm == "linf" else t.large_epsilon_l2
    if large > threat.epsilon:
        _check_large_epsilon(runner, d, t, threat.norm, large)
    else:
        d.skipped["pgd_epsilon"] = f"epsilon {threat.epsilon:g} is not below large_epsilon {large:g} ({threat.norm})"


def _check_large_epsilon(runner, d: Diagnostics, t: MaskingThresholds, norm: str = "linf",
                         large: float | None = None) -> None:
    large = t.large_epsilon if large is None else large
    top = 255.0 if norm == "linf" else large
    big = ThreatModel(large, min(top, 2.5 * large / 20), norm)
    suffix = big.suffix                      # ℓ∞: the names stored runs have; ℓ2: _l2
    label = f"pgd20@eps{large:g}{suffix}"
    ok = runner.attack(AttackSpec("pgd20", "pgd", 20), big, label=label)
    big_acc = _acc(ok)
    d.measurements[f"diag_pgd20_eps{large:g}_acc{suffix}"] = big_acc
    if big_acc > t.large_eps_acc:
        where = f"{large:g}/255" if norm == "linf" else f"{large:g} (l2)"
        d.flags["pgd_epsilon"] = (f"PGD-20 at ε={where} leaves accuracy {big_acc:.3f} "
                                  f"(> {t.large_eps_acc:g}): accuracy should go to ~0 as ε grows")


def _check_randomness(runner, d: Diagnostics, t: MaskingThresholds) -> None:
    x = runner.pixels(0)[:64]
    with torch.no_grad(), eval_mode(runner.model):
        a, b = runner.model(x), runner.model(x)
    change = ((a - b).abs().max() / a.abs().max().clamp(min=1e-12)).item()
    if not torch.isfinite(a).all() or not torch.isfinite(b).all():
        change = float("inf")
    flipped = (a.argmax(1) != b.argmax(1)).sum().item()
    d.measurements["diag_output_change"] = change if change == change else float("inf")
    if change > t.output_rtol or flipped:
        d.flags["randomised_output"] = (f"two forward passes in eval mode differ (max relative change {change:.2e}, "
                                        f"{flipped}/{len(x)} predictions flipped): evaluate with EOT")


def _check_gradients(runner, d: Diagnostics, t: MaskingThresholds) -> None:
    clean = runner.clean
    bad = total = 0
    for i in range(len(runner.batches)):
        ok = clean[runner.offsets[i]:runner.offsets[i + 1]]
        if not ok.any():
            continue
        live = ok.nonzero().squeeze(1)
        x, y = runner.pixels(i)[live.to(runner.device)], runner.targets(i)[live.to(runner.device)]
        g = input_gradients(runner.model, x, y).flatten(1)
        bad += ((~torch.isfinite(g).all(1)) | (g.abs().amax(1) == 0)).sum().item()
        total += live.numel()
    if not total:
        d.skipped["zero_gradients"] = "no correctly classified example"
        return
    share = bad / total
    d.measurements["diag_zero_grad_frac"] = share
    if share > t.zero_grad_share:
        d.flags["zero_gradients"] = (f"input gradient of the loss is zero or not finite for {bad}/{total} correctly "
                                     f"classified examples ({100 * share:.0f}% > {100 * t.zero_grad_share:.0f}%)")
