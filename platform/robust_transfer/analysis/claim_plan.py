"""What a suite's PLANNED runs could detect, per claim (issue 29): `rtl suite --dry-run` prints it under the plan, so
a claim the engine would call `uninformative` at the planned sample sizes is re-planned before it is registered.

From the plan alone (no run is read), each `<step>.<metric>` of a comparison gets the sample its run will measure:
- a test accuracy: the step's `n_examples` (its config: the entry point's default when the suite leaves it out);
  `<step>[k=..]` children as their step; a `choose:` name or a select step: its candidates' (the largest SE);
- `val_*`: VAL_EXAMPLES (256) validation images, the engine's cap (fewer when a validation split is smaller: the
  figure is then optimistic);
- `train_*`: the training split, whose size the plan does not know: left out of SE(D) (the largest sample a run
  has; the line says so);
- a seeded step: its seeds averaged with no extra credit, i.e. the binomial SE of its n examples (the seeds'
  spread is unknown before running; at run time the engine adds it when the seeds share their examples);
- a hypervolume, an analysis metric, anything the engine does not read as an accuracy (`is_accuracy`): no
  standard error before running.
Each accuracy's SE is claim_stats.binomial_se(p, n) at p = 0.5 (its largest) unless a prior is known
(`load_priors`: the published tables' CSVs). SE(D) is the engine's UNPAIRED rule (claim_stats.unpaired_interval:
different runs in quadrature, one run's numbers linearly); the planned smallest detectable difference (SDD) is
2·SE(D), the interval's half-width. When every number of a comparison will log its per-example correctness
(`evaluation/per_example.json`: the training-like entry points below) on the same examples (the same `n_examples`
and `eval_seed`, on test splits of one size), the engine pairs them at run time, usually tighter: the SDD is then
marked `paired at run time (bound)`.

Flags of one comparison (θ = claim_stats.threshold: max(δ, 2 points) directional, τ tolerance):
- `decides`: SDD ≤ θ, so its verdict cannot end `uninformative` for lack of examples;
- `may be uninformative`: SDD > θ: it decides only if the effect clears θ by SDD − θ;
- `cannot fail`: claim_stats.range_depth ≤ 0 (it holds for every value its metrics could take, e.g.
  `x.pgd20_acc >= 0`), or it could fail only by less than its SDD;
- `no standard error`: a number has none before running (above);
- `not planned`: a step it reads is not in the plan at this scale (the report would say `not run`).
A claim's flag: for a list (`all`) the first of not planned, cannot fail, no standard error, may be uninformative
that a part has, else decides; for `any`: cannot fail if a part can't, decides if every part does, else the
parts' common flag, else may be uninformative.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from . import claim_stats as st
from .claim_verdicts import is_accuracy, metric_split
from .claims import ref_text

DECIDES, MAY_BE, CANNOT_FAIL, NO_SE, NOT_PLANNED = (
    "decides", "may be uninformative", "cannot fail", "no standard error", "not planned")
FLAGS = (DECIDES, MAY_BE, CANNOT_FAIL, NO_SE, NOT_PLANNED)
WORST_P = 0.5          # binomial_se is largest at p = 0.5: the planned SE when no prior is known
# Entry points whose runs log `evaluation/per_example.json`: the training ones (strategies/engine.finish) and
# `evaluate` (its `seed` is the training entry points' `eval_seed`: the same seeded examples).
PER_EXAMPLE_ENTRIES = {"train", "transfer", "lwf", "finetune_adv", "retrain_blocks", "evaluate"}
_MAX_SELECT_DEPTH = 10   # a select step among select steps: followed this deep


@dataclass(frozen=True)
class PlannedNumber:
    """One `<step>.<metric>` of a comparison as the plan sizes it."""

    text: str
    metric: str
    run: str                    # which run: numbers of one run add linearly in SE(D)
    se: float | None            # None: no standard error before running
    how: str                    # how its sample was found, e.g. `n=500`, `val n=256`, `n=500, 3 seeds (no credit)`
    paired_key: tuple | None    # (dataset, n_examples, eval seed) when its run logs per-example correctness; else None
    planned: bool = True        # False: its step is not in the plan at this scale


@dataclass(frozen=True)
class PlannedComparison:
    text: str
    threshold: float
    detectable: float | None    # the planned SDD (None: not computable)
    flag: str
    why: str
    paired: bool                # every number logs per-example correctness on the same examples
    numbers: tuple[PlannedNumber, ...]


@dataclass(frozen=True)
class PlannedClaim:
    name: str
    kind: str
    flag: str
    comparisons: tuple[PlannedComparison, ...]


# ------------------------------------------------------------------------------------------- priors
def load_priors(path: str | Path) -> dict[tuple[str, str], float]:
    """{(step, metric): accuracy} from a report's CSVs (a file, or every *.csv of a folder, e.g.
    docs/results/cpu): those with `step`, `metric` and `ours` (tables) or `y` (figures) columns; other CSVs (claims,
    timing, fronts) are skipped. A (step, metric) given two different values (a figure's points per k) is dropped."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"priors={str(path)!r} does not exist; give a report's CSV or its folder, e.g. "
                          "docs/results/cpu")
    out: dict[tuple[str, str], float] = {}
    dropped: set[tuple[str, str]] = set()
    for f in sorted(p.glob("*.csv")) if p.is_dir() else [p]:
        with f.open(encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(fh)
            cols = set(rows.fieldnames or ())
            value = "ours" if "ours" in cols else "y" if "y" in cols else None
            if value is None or not {"step", "metric"} <= cols:
                continue
            for row in rows:
                try:
                    v = float(row[value])
                except (TypeError, ValueError):
                    continue
                key = (row["step"], row["metric"])
                if not math.isfinite(v) or not 0.0 <= v <= 1.0 or key in dropped:
                    continue
                if key in out and out[key] != v:
                    dropped.add(key)
                    del out[key]
                    continue
                out[key] = v
    return out


# ------------------------------------------------------------------------------------------- one number
def _candidates(step: str, by_name: dict, choose: dict | None, depth: int = 0) -> list[str] | None:
    """The plan steps whose run a reference reads (several: a choose name or a select step); None: not planned."""
    if choose and step == choose["as"]:
        found = [_candidates(s, by_name, None, depth + 1) for s in choose["among"]]
    elif step not in by_name:
        return None
    elif by_name[step][0].select and depth < _MAX_SELECT_DEPTH:
        found = [_candidates(s, by_name, None, depth + 1) for s in by_name[step][0].select["among"]]
    else:
        return [step]
    if any(f is None for f in found):
        return None
    return list(dict.fromkeys(s for f in found for s in f))


def _accuracy_se(step: str, metric: str, n: int, priors: dict) -> tuple[float, str]:
    """binomial_se at the prior accuracy (p = 0.5 without one); `mean` = (clean + PGD-20)/2: the mean of the two SEs,
    as the engine takes it."""
    parts = ("clean_acc", "pgd20_acc") if metric == "mean" and (step, "mean") not in priors else (metric,)
    ps = [priors.get((step, m)) for m in parts]
    se = sum(st.binomial_se(WORST_P if p is None else p, n) for p in ps) / len(ps)
    known = [p for p in ps if p is not None]
    return se, (f", prior p={'/'.join(f'{p:.2f}' for p in known)}" if known else "")


def _one_step(step: str, metric: str, runs: list, priors: dict) -> tuple[float | None, str, tuple | None]:
    """(SE, how, paired key) of `metric` read from the planned runs of one step (one per seed)."""
    cfg, entry = runs[0].config, runs[0].entry
    split = metric_split(metric)
    if not is_accuracy(metric):
        if entry == "analyze":   # its per-image CSV gives the engine an SE (analysis/per_example.py), not the plan
            return None, f"{metric}: per-image SE at run time only (the analysis CSV)", None
        return None, f"{metric}: no standard error before running", None
    if split == "train":
        return 0.0, "training split (size unknown before running: left out)", None
    if split == "val":
        from ..strategies.validate import VAL_EXAMPLES   # the engine's cap on validation images per check

        n, how = VAL_EXAMPLES, f"val n≤{VAL_EXAMPLES}"
    else:
        n = getattr(cfg, "n_examples", None)
        if not isinstance(n, int) or n < 1:
            return None, f"{entry} plans no n_examples", None
        how = f"n={n}"
    se, prior = _accuracy_se(step, metric, n, priors)
    seeds = f", {len(runs)} seeds (no credit)" if len(runs) > 1 else ""
    seed = getattr(cfg, "seed" if entry == "evaluate" else "eval_seed", None)
    # the dataset too (its spec; "" = the model's own, unknown before running): equal indices into two datasets are
    # different images, which the engine does not pair (claim_verdicts.example_id)
    data = getattr(cfg, "target", "") or getattr(cfg, "dataset", "")
    key = (data, n, seed) if split == "test" and entry in PER_EXAMPLE_ENTRIES and seed is not None else None
    return se, how + seeds + prior, key


def planned_number(ref: tuple, by_name: dict, choose: dict | None, sets: dict, priors: dict) -> PlannedNumber:
    step, param, value, metric = ref
    text = ref_text(ref)
    run = f"{step}[{param}={value}]" if param else step
    if step in sets:
        return PlannedNumber(text, metric, run, None, "a hypervolume: no standard error", None)
    steps = _candidates(step, by_name, choose)
    if steps is None:
        return PlannedNumber(text, metric, run, None, f"step {step!r} is not planned at this scale", None, planned=False)
    sized = [(s, *_one_step(s, metric, by_name[s], priors)) for s in steps]
    if any(se is None for _, se, _, _ in sized):
        return PlannedNumber(text, metric, run, None, next(h for _, se, h, _ in sized if se is None), None)
    keys = {k for _, _, _, k in sized}
    s, se, how, _ = max(sized, key=lambda t: t[1])
    if len(steps) > 1:
        how += f" (largest SE of {len(steps)} candidates: {s})"
    return PlannedNumber(text, metric, run, se, how, keys.pop() if len(keys) == 1 else None)


# ------------------------------------------------------------------------------------------- one comparison
def plan_comparison(comp: dict, numbers: dict[tuple, PlannedNumber]) -> PlannedComparison:
    size = f" {comp['given']} {comp['size']:g}" if comp["given"] else ""
    text = f"{comp['a']['text']} {comp['op']} {comp['b']['text']}{size}"
    theta = st.threshold(strict=comp["directional"], size=comp["size"])
    used = tuple(numbers[r] for r in comp["refs"])
    measured = [(w, numbers[r]) for r, w in comp["terms"].items() if w != 0]
    keys = {n.paired_key for _, n in measured}
    paired = bool(measured) and len(keys) == 1 and None not in keys

    def out(flag: str, why: str, sdd: float | None = None) -> PlannedComparison:
        return PlannedComparison(text, theta, sdd, flag, why, paired, used)

    if not all(n.planned for n in used):
        return out(NOT_PLANNED, "; ".join(n.how for n in used if not n.planned))
    depth = st.range_depth([(w, n.metric) for w, n in measured], comp["const"], strict=comp["directional"],
                           size=comp["size"])
    if depth <= 0:
        return out(CANNOT_FAIL, "holds for every value its metrics could take")
    lacking = [n for _, n in measured if n.se is None]
    if lacking:
        return out(NO_SE, "; ".join(f"{n.text}: {n.how}" for n in lacking))
    groups: dict[str, list[tuple[float, float]]] = {}
    for w, n in measured:
        groups.setdefault(n.run, []).append((w, n.se))
    sdd = st.unpaired_interval(0.0, list(groups.values()), "planned").detectable
    if depth < sdd:
        return out(CANNOT_FAIL, f"could fail only by {depth:.3f}, less than its SDD", sdd)
    if sdd <= theta:
        return out(DECIDES, "", sdd)
    return out(MAY_BE, f"decides only if the effect clears θ by SDD−θ = {sdd - theta:.3f}", sdd)


def _tree_flag(tree: dict, flags: list[str], counter: list[int]) -> str:
    """A compare tree's flag from its comparisons' (in order; module doc)."""
    if "how" not in tree:
        counter[0] += 1
        return flags[counter[0] - 1]
    parts = [_tree_flag(p, flags, counter) for p in tree["parts"]]
    if tree["how"] == "all":
        return next((f for f in (NOT_PLANNED, CANNOT_FAIL, NO_SE, MAY_BE) if f in parts), DECIDES)
    if CANNOT_FAIL in parts:
        return CANNOT_FAIL
    return parts[0] if len(set(parts)) == 1 else MAY_BE


# ------------------------------------------------------------------------------------------- a suite
def claims_at(spec: dict, scale: str) -> list[dict]:
    """The claims of a report spec (analysis/report_spec.load_report_spec) that run at `scale`."""
    return [e for e in spec["report"] if e["type"] == "claim" and (e.get("scales") is None or scale in e["scales"])]


def plan_claims(steps: list, claims: list[dict], priors: dict[tuple[str, str], float] | None = None
                ) -> list[PlannedClaim]:
    """Each claim's planned comparisons and flags. `steps`: a suite plan's steps (suites/plan.Step: name, entry,
    config, select; one per seed), `claims`: claim entries (analysis/claims.claim_entry), `priors`: load_priors."""
    from .claims import comparisons

    by_name: dict[str, list] = {}
    for s in steps:
        by_name.setdefault(s.name, []).append(s)
    out = []
    for c in claims:
        sets = (c.get("hypervolume") or {}).get("sets", {})
        comps = comparisons(c["compare"])
        refs = dict.fromkeys(r for comp in comps for r in comp["refs"])
        numbers = {r: planned_number(r, by_name, c.get("choose"), sets, priors or {}) for r in refs}
        planned = [plan_comparison(comp, numbers) for comp in comps]
        flag = _tree_flag(c["compare"], [p.flag for p in planned], [0])
        out.append(PlannedClaim(c["name"], c.get("kind", "paper"), flag, tuple(planned)))
    return out


def render(planned: list[PlannedClaim], scale: str, *, priors: bool = False) -> list[str]:
    """The dry run's lines: a head, per claim its flag and each comparison's θ, planned SDD and flag, a count."""
    p = "priors where known, else p = 0.5" if priors else "p = 0.5"
    lines = [f"claims at scale {scale}: the smallest difference the planned runs could detect (SDD = 2·SE(D), the "
             f"engine's unpaired rule at {p}; analysis/claim_plan.py)"]
    for c in planned:
        lines.append(f"  {c.name} [{c.kind}]: {c.flag}")
        for comp in c.comparisons:
            sdd = "SDD ?" if comp.detectable is None else f"SDD {comp.detectable:.3f}"
            samples = " | ".join(dict.fromkeys(f"{n.run}: {n.how}" for n in comp.numbers
                                                 if n.planned and n.se is not None))
            how = "; ".join(x for x in (samples, "paired at run time (bound)" if comp.paired else "") if x)
            lines.append(f"    {comp.text}: θ {comp.threshold:.3f}, {sdd}{f' ({how})' if how else ''}: {comp.flag}"
                         + (f": {comp.why}" if comp.why else ""))
    lines.append(count_line(planned))
    return lines


def count_line(planned: list[PlannedClaim]) -> str:
    """`claims: N decide, M may be uninformative, K cannot fail, L no standard error` (`, J not planned` if any)."""
    n = {f: sum(c.flag == f for c in planned) for f in FLAGS}
    line = (f"claims: {n[DECIDES]} decide, {n[MAY_BE]} may be uninformative, {n[CANNOT_FAIL]} cannot fail, "
            f"{n[NO_SE]} no standard error")
    return line + (f", {n[NOT_PLANNED]} not planned" if n[NOT_PLANNED] else "")
