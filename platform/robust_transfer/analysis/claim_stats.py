"""The margin rule, applied by the engine (issue 24): how far a measured difference must clear a claim's threshold.

A comparison states `a op b` (analysis/claims.py); its difference is D = a − b written so that the claim asks for
D to be large: a *directional* comparison (`>` / `<`, `by: δ ≥ 0`) asks D > δ, a *tolerance* (`>=` / `<=`,
`within: τ ≥ 0`) asks D ≥ −τ. The engine puts an interval [low, high] around D of ±2 standard errors:

- **unpaired**: SE(D) = sqrt(Σ_runs (Σ_{metrics of the run} |w|·se)²). Each number's se is the seeds' std/√n over
  n ≥ 2 seeds, or the binomial SE of an accuracy on its n examples (Agresti–Coull: p̃ = (k+2)/(n+4), so that 0 of
  500 is not an SE of 0). Numbers of different runs add in quadrature (independent samples, or positively
  correlated ones on the same examples: then this over-states SE(D), the safe side); numbers of ONE run add
  linearly (their correlation unknown: the worst case).
- **paired bootstrap**, when every number of the comparison was evaluated on the same examples and logged its
  per-example values (`evaluation/per_example.json`): resample the examples (shared by both sides, so what the
  two sides have in common cancels) and, per run, its seeds; low/high are the 2.275% and 97.725% quantiles of D
  (the one-sided tails of ±2 SE). Chosen over McNemar's exact test because the claims need more than "a ≠ b" on
  two 0/1 vectors: thresholds (`by`, `within`), linear combinations (`mean` = (clean + PGD-20)/2, 0.75 × a
  source), and per-example scores averaged over seeds; McNemar tests only equality of two 0/1 vectors.

The verdict of one comparison (`judge`), threshold θ = max(δ, 2 points) for a directional claim, τ for a tolerance:
supported when low clears the claim (low > δ and D > θ; low ≥ −τ), else `uninformative` when the smallest
difference this sample can call, (high − low)/2, is larger than θ and the interval still admits the claim, else
`not supported`. Before that (`range_depth`): a comparison that holds for every value its metrics could take
(accuracies in [0, 1], ...), or could fail only by less than its smallest detectable difference, is
`uninformative` whatever the numbers.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

FLOOR = 0.02              # a directional claim asks at least 2 points (in the metric's units) ...
Z = 2.0                   # ... and its difference must clear 2 standard errors
TAIL = 0.5 * math.erfc(Z / math.sqrt(2))   # 0.02275: the one-sided tail of ±2 SE, for the bootstrap's quantiles
BOOTSTRAP_REPLICATES = 10_000
BOOTSTRAP_SEED = 0        # fixed: a report computes the same verdict every time
SUPPORTED, NOT_SUPPORTED, NOT_RUN, UNINFORMATIVE = "supported", "not supported", "not run", "uninformative"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, UNINFORMATIVE, NOT_RUN)

# The values a metric can take: what "holds for every value" is evaluated over (other metrics: unbounded).
_RANGES = [(re.compile(r"^(val_|train_)?([a-z0-9_]+_acc(_l2)?|mean)$"), (0.0, 1.0)),   # ℓ2 accuracies end in _l2
           (re.compile(r"^hypervolume$"), (0.0, 1.0)),
           (re.compile(r"^grad_edge_corr_"), (-1.0, 1.0)),
           (re.compile(r"^(feature_distance|feature_norm|grad_l2)"), (0.0, math.inf))]


def metric_range(metric: str) -> tuple[float, float]:
    """(low, high) of the values `metric` can take: accuracies (and `mean`, a hypervolume of accuracies) in [0, 1]."""
    for pattern, bounds in _RANGES:
        if pattern.match(metric):
            return bounds
    return (-math.inf, math.inf)


def binomial_se(p: float, n: int) -> float:
    """The standard error of an accuracy p measured on n examples, Agresti–Coull: sqrt(p̃(1−p̃)/(n+4)) with
    p̃ = (p·n + 2)/(n + 4) (never 0 at p = 0 or 1, where the plain sqrt(p(1−p)/n) would claim certainty)."""
    q = (p * n + 2.0) / (n + 4.0)
    return math.sqrt(q * (1.0 - q) / (n + 4.0))


@dataclass(frozen=True)
class Interval:
    """The difference D and its ±2-SE interval; `rule` says how it was computed."""

    diff: float
    low: float
    high: float
    rule: str

    @property
    def detectable(self) -> float:
        """The smallest difference this sample can call: the interval's half-width (2 SE)."""
        return (self.high - self.low) / 2


def unpaired_interval(diff: float, groups: list[list[tuple[float, float]]], rule: str) -> Interval:
    """D ± 2·SE(D), SE(D) = sqrt(Σ_groups (Σ |w|·se)²): `groups` holds one list of (weight, se) per run."""
    se = math.sqrt(sum(sum(abs(w) * s for w, s in g) ** 2 for g in groups))
    return Interval(diff, diff - Z * se, diff + Z * se, rule)


def paired_bootstrap(terms: list[tuple[float, np.ndarray, str]], const: float, rule: str, *,
                     replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """D = const + Σ w·mean(X) over `terms` (weight, X: seeds × examples of per-example values, run key), and its
    bootstrap interval: each replicate draws the examples once (the same for every term: paired) and, per run
    key, its seeds (the same for every metric of that run). Quantiles TAIL and 1 − TAIL of the replicates."""
    n = terms[0][1].shape[1]
    if any(x.shape[1] != n for _, x, _ in terms):
        raise ValueError("paired terms need the same examples")
    diff = const + sum(w * float(x.mean()) for w, x, _ in terms)
    rng = np.random.default_rng(seed)
    seeds_of = {key: x.shape[0] for _, x, key in terms}
    out = np.empty(replicates)
    chunk = max(50, min(1000, 5_000_000 // max(n, 1)))
    for start in range(0, replicates, chunk):
        b = min(chunk, replicates - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(float)      # b × n: the examples drawn
        draws = {key: rng.integers(0, s, size=(b, s)) for key, s in seeds_of.items()}  # b × seeds, per run
        total = np.full(b, const)
        for w, x, key in terms:
            per_seed = (x @ counts.T) / n                                             # seeds × b
            total += w * np.take_along_axis(per_seed.T, draws[key], axis=1).mean(axis=1)
        out[start:start + b] = total
    low, high = np.quantile(out, [TAIL, 1.0 - TAIL])
    return Interval(diff, float(low), float(high), rule)


def range_depth(terms: list[tuple[float, str]], const: float, *, strict: bool, size: float) -> float:
    """How far below the claim's boundary D can go over its metrics' ranges: (boundary − min D), where D =
    const + Σ w·metric (`terms`: (weight, metric name)) and the boundary is δ (`strict`, directional) or −τ.
    ≤ 0: the comparison holds for every value its metrics could take (it cannot fail)."""
    low = const
    for w, metric in terms:
        lo, hi = metric_range(metric)
        low += w * (lo if w > 0 else hi)
    boundary = size if strict else -size
    return boundary - low


@dataclass(frozen=True)
class Judgement:
    outcome: str          # SUPPORTED, NOT_SUPPORTED or UNINFORMATIVE
    threshold: float      # θ: the effect the claim asks for
    why: str              # one phrase: what decided it


def threshold(*, strict: bool, size: float) -> float:
    """θ, the effect a comparison asks for: max(δ, FLOOR) for a directional one (`strict`), τ for a tolerance."""
    return max(size, FLOOR) if strict else size


def judge(iv: Interval, *, strict: bool, size: float, depth: float | None = None) -> Judgement:
    """The verdict of one comparison from its interval (module doc). `size`: δ (strict) or τ; `depth`: range_depth."""
    theta = threshold(strict=strict, size=size)
    if depth is not None and depth <= 0:
        return Judgement(UNINFORMATIVE, theta, "holds for every value its metrics could take")
    if depth is not None and depth < iv.detectable:
        return Judgement(UNINFORMATIVE, theta, f"could fail only by {depth:.3f}, less than the smallest difference "
                                               f"this sample can call ({iv.detectable:.3f})")
    if strict and iv.low > size and iv.diff > theta:
        return Judgement(SUPPORTED, theta, "holds")
    if not strict and iv.low >= -size:
        return Judgement(SUPPORTED, theta, "holds")
    admits = iv.high > theta if strict else iv.high >= -size
    if iv.detectable > theta and admits:
        return Judgement(UNINFORMATIVE, theta, f"smallest detectable difference {iv.detectable:.3f} > the claim's "
                                               f"threshold {theta:.3f}")
    return Judgement(NOT_SUPPORTED, theta, "fails")


def combine(outcomes: list[str], how: str, *, cannot_fail: list[bool] | None = None) -> str:
    """A claim's verdict from its comparisons' (`how`: all / any). all: not run, else not supported, else
    uninformative, else supported. any: a part that cannot fail makes the whole uninformative; else supported if one
    is, else not run, else uninformative, else not supported."""
    if how == "all":
        for v in (NOT_RUN, NOT_SUPPORTED, UNINFORMATIVE):
            if v in outcomes:
                return v
        return SUPPORTED
    if cannot_fail and any(cannot_fail):
        return UNINFORMATIVE
    for v in (SUPPORTED, NOT_RUN, UNINFORMATIVE):
        if v in outcomes:
            return v
    return NOT_SUPPORTED
