"""The verdict of a claim (analysis/claims.py) from the runs a report reads: numbers, their standard errors, the
margin rule (analysis/claim_stats.py) and, where both sides logged per-example correctness on the same examples,
a paired bootstrap (analysis/per_example.py).

Each number's unpaired standard error (`standard_error`):
- a seeded step (n ≥ 2 seeds): std/√n over its seeds. When the seeds share one evaluation subset (equal
  `rtl.eval_indices_sha256`, or `rtl.val_indices_sha256` for a `val_*` metric) the seeds' spread holds no
  test-sampling error, so the subset's binomial SE is added; when each seed saw its own examples, the binomial SE
  of all n·N examples pooled is the floor (three seeds' std can be near 0 by chance);
- one run: the binomial SE of an accuracy on its examples (as measured: `example_count`; `val_*`: the
  validation images checked, at most 256; `train_*`: the training split); `mean` = (clean + PGD-20)/2: the mean of
  the two SEs (their worst-case correlation); any other metric: std/√n of its per-image values (analysis runs'
  CSVs: analysis/per_example.py), or a logged `<metric>_se`, else none — and a comparison without a standard error
  is `uninformative` (the engine cannot tell its difference from noise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.validation import VAL_TAG
from ..evaluation.inputs import EVAL_EXAMPLES_TAG, EVAL_INDICES_TAG
from . import claim_stats as st
from .claims import REF, comparisons, ref_text
from .report_runs import is_accuracy, metric_value

_SUBSET_TAG = {"test": EVAL_INDICES_TAG, "val": VAL_TAG}


def example_id(run: dict, indices_sha: str | None) -> str | None:
    """Which examples a run measured on: its dataset (the `rtl.data` spec) and the indices into that dataset's split.
    The indices alone are not enough: a seeded prefix of 1,000 is the same index list on two 50-class halves of
    equal size, yet they are different images (Table 2's same-classes vs other-classes targets), which must not be
    paired. A run without an `rtl.data` tag (a hand-made record) is known by its indices only."""
    if indices_sha is None:
        return None
    data = run["tags"].get("rtl.data")
    return f"{data}|{indices_sha}" if data else indices_sha


def metric_split(metric: str) -> str:
    """Which split a metric was measured on: `val_*` validation, `train_*` training, any other test."""
    return "val" if metric.startswith("val_") else "train" if metric.startswith("train_") else "test"


def example_count(run: dict, metric: str, per_example=None) -> int | None:
    """How many examples one run measured `metric` on (None: unknown). A test metric: the count the evaluation
    recorded (`rtl.eval_examples`), else the length of its per-example file, else the `n_examples` parameter — which
    is what was asked for, and more than was measured when the split is smaller (a source evaluated on its whole
    split asks for 10,000; a 100-class half holds 5,000)."""
    split = metric_split(metric)
    if split == "val":
        from ..strategies.validate import VAL_EXAMPLES   # the per-epoch check's cap on validation images

        size = _int(run["params"].get("val_size"))
        return min(size, VAL_EXAMPLES) if size else None
    if split == "train":
        return _int(run["params"].get("train_size"))
    measured = _int(run["tags"].get(EVAL_EXAMPLES_TAG))
    if measured is None and per_example is not None:
        got = per_example.of(run)
        measured = got["n"] if got else None
    return measured or _int(run["params"].get("n_examples"))


def _int(v) -> int | None:
    try:
        n = int(float(v))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def _binomial(record: dict, metric: str, n: int) -> float | None:
    if metric == "mean":
        parts = [metric_value(record, m) for m in ("clean_acc", "pgd20_acc")]
        return None if None in parts else sum(st.binomial_se(p, n) for p in parts) / 2
    v = metric_value(record, metric)
    return None if v is None else st.binomial_se(v, n)


def standard_error(record: dict, metric: str, per_example=None) -> tuple[float | None, str]:
    """(unpaired standard error of the record's `metric`, how it was obtained) — see the module doc."""
    runs = record.get("seed_runs") or [record]
    values = [v for v in (metric_value(r, metric) for r in runs) if v is not None]
    counts = [example_count(r, "clean_acc" if metric == "mean" else metric, per_example) for r in runs]
    n = min(counts) if counts and None not in counts else None
    if len(values) >= 2:
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        se, rule = sd / math.sqrt(len(values)), f"seeds n={len(values)}"
        if not is_accuracy(metric) or n is None:
            return se, rule
        tag = _SUBSET_TAG.get(metric_split(metric))
        subsets = {r["tags"].get(tag) for r in runs} if tag else {None}
        if len(subsets) == 1 and None not in subsets:     # one subset for every seed: its own sampling error
            return math.sqrt(se ** 2 + _binomial(record, metric, n) ** 2), rule + f" + subset binomial n={n}"
        return max(se, _binomial(record, metric, n * len(values))), rule
    if is_accuracy(metric) and n is not None:
        return _binomial(record, metric, n), f"binomial n={n}"
    got = per_example.values(runs[0], metric) if per_example is not None and not is_accuracy(metric) else None
    if got is not None and len(got[1]) >= 2:
        return float(np.std(got[1], ddof=1) / math.sqrt(len(got[1]))), f"per-image n={len(got[1])}"
    logged = record["metrics"].get(f"{metric}_se")
    if logged is not None and math.isfinite(float(logged)):
        return float(logged), "logged se"
    return None, "no standard error"


@dataclass
class Atom:
    """One `<step>.<metric>` of a claim, read: its value and what its standard error needs."""

    text: str
    metric: str
    value: float | None
    missing: str = ""                 # why there is no value (not run)
    record: dict | None = None
    se: float | None = None
    se_rule: str = ""
    n_seeds: int | None = None
    examples: str | None = None       # which examples: `example_id` (dataset + indices), "mixed" across seeds, None unknown
    group: str = ""                   # the run(s): numbers of one run are correlated


def _child(sel, run: dict, param: str, value: str) -> dict | None:
    for child in sel.children(run):
        got = child["params"].get(param)
        try:
            if got is not None and float(got) == float(value):
                return child
        except ValueError:
            if str(got) == value:
                return child
    return None


def _examples(record: dict, metric: str, per_example) -> str | None:
    runs = record.get("seed_runs") or [record]
    ids = set()
    for r in runs:
        got = per_example.values(r, metric) if per_example is not None else None
        tag = _SUBSET_TAG.get(metric_split(metric))
        ids.add(example_id(r, got[0] if got else (r["tags"].get(tag) if tag else None)))
    if None in ids:
        return None
    return ids.pop() if len(ids) == 1 else "mixed"


def _absent(run: dict, metric: str, text: str) -> str:
    """Why a run's metric has no value: a logged NaN reads as absent in a search, so ask the run itself."""
    from ..tracking.runs import mlflow_client

    for r in run.get("seed_runs") or [run]:
        try:
            logged = mlflow_client().get_run(r["run_id"]).data.metrics.get(metric)
        except Exception:   # MlflowException: a child record or a run gone since the search; nothing more to say
            logged = None
        if logged is not None and not math.isfinite(logged):
            return f"{text} = {logged} in run {r['run_id']} (not finite)"
    return f"run {run['run_id']} has no metric {metric!r}"


def read_atom(ref: tuple, sel, *, chosen: dict, volumes: dict, per_example=None) -> Atom:
    step, param, value, metric = ref
    text = ref_text(ref)
    if step in volumes:
        v = volumes[step]
        return Atom(text, "hypervolume", v, "" if v is not None else f"set {step!r} has no FINISHED run",
                    se_rule="no standard error for a hypervolume")
    if step in chosen:
        if chosen[step] is None:
            return Atom(text, metric, None, "no candidate of choose has the validation metrics")
        step = chosen[step]
    run = sel.run(step)
    if run is None:
        return Atom(text, metric, None, f"step {step!r} has no FINISHED run")
    if param:
        run = _child(sel, run, param, value)
        if run is None:
            return Atom(text, metric, None, f"step {step!r} has no child run with {param}={value}")
    v = metric_value(run, metric)
    if v is None:
        return Atom(text, metric, None, _absent(run, metric, text))
    if not math.isfinite(v):
        return Atom(text, metric, None, f"{text} = {v} (not finite)")
    lo, hi = st.metric_range(metric)
    if not lo <= v <= hi:   # e.g. an infinity the store kept as the largest float
        return Atom(text, metric, None, f"{text} = {v:g} is outside [{lo:g}, {hi:g}], the values {metric} can take")
    se, rule = standard_error(run, metric, per_example)
    seeds = len(run["seed_runs"]) if run.get("seed_runs") else None
    return Atom(text, metric, v, record=run, se=se, se_rule=rule, n_seeds=seeds,
                examples=_examples(run, metric, per_example), group=",".join(run.get("run_ids") or [run["run_id"]]))


def _per_example_matrix(atom: Atom, per_example) -> tuple[str, np.ndarray] | None:
    """(`example_id`, seeds × examples) when every seed run of the atom logged the metric per example."""
    if per_example is None or atom.record is None:
        return None
    rows, shas = [], set()
    for r in atom.record.get("seed_runs") or [atom.record]:
        got = per_example.values(r, atom.metric)
        if got is None:
            return None
        shas.add(example_id(r, got[0]))
        rows.append(got[1])
    if len(shas) != 1 or len({len(x) for x in rows}) != 1:
        return None
    return shas.pop(), np.vstack(rows)


def _same_examples(atoms: list[Atom]) -> str:
    measured = [a for a in atoms if a.record is not None]
    if len(measured) < 2:
        return ""
    ids = [a.examples for a in measured]
    if None in ids:
        return "examples unknown"
    return "same examples" if len(set(ids)) == 1 and ids[0] != "mixed" else "different examples"


def judge_comparison(comp: dict, atoms: dict[tuple, Atom], per_example=None) -> dict:
    """{outcome, why, interval, threshold, rule, same, cannot_fail} of one comparison."""
    used = [atoms[r] for r in comp["refs"]]
    missing = [a for a in used if a.value is None]
    out = {"interval": None, "threshold": None, "rule": "", "same": _same_examples(used), "cannot_fail": False}
    if missing:
        return out | {"outcome": st.NOT_RUN, "why": "; ".join(a.missing for a in missing)}
    measured = [(w, atoms[r]) for r, w in comp["terms"].items() if w != 0]
    diff = comp["const"] + sum(w * a.value for w, a in measured)
    depth = st.range_depth([(w, a.metric) for w, a in measured], comp["const"], strict=comp["directional"],
                           size=comp["size"])
    if depth <= 0:
        j = st.judge(st.Interval(diff, diff, diff, ""), strict=comp["directional"], size=comp["size"], depth=depth)
        return out | {"outcome": j.outcome, "why": j.why, "threshold": j.threshold, "cannot_fail": True,
                      "interval": st.Interval(diff, diff, diff, "")}
    iv = _interval(diff, comp["const"], measured, per_example)
    if iv is None:
        lacking = [a.text for _, a in measured if a.se is None]
        return out | {"outcome": st.UNINFORMATIVE, "why": f"no standard error for {', '.join(lacking)}",
                      "rule": "no standard error"}
    j = st.judge(iv, strict=comp["directional"], size=comp["size"], depth=depth)
    return out | {"outcome": j.outcome, "why": j.why, "interval": iv, "threshold": j.threshold, "rule": iv.rule,
                  "cannot_fail": depth < iv.detectable}


def _interval(diff: float, const: float, measured: list[tuple[float, Atom]], per_example) -> st.Interval | None:
    if not measured:
        return st.Interval(diff, diff, diff, "constants")
    mats = [_per_example_matrix(a, per_example) for _, a in measured]
    if all(m is not None for m in mats) and len({m[0] for m in mats}) == 1:
        n = mats[0][1].shape[1]
        seeds = max(m[1].shape[0] for m in mats)
        rule = f"paired bootstrap over {n} shared examples" + (", seeds resampled" if seeds > 1 else "")
        return st.paired_bootstrap([(w, m[1], a.group) for (w, a), m in zip(measured, mats)], const, rule)
    if any(a.se is None for _, a in measured):
        return None
    groups: dict[str, list[tuple[float, float]]] = {}
    for w, a in measured:
        groups.setdefault(a.group, []).append((w, a.se))
    rules = list(dict.fromkeys(a.se_rule for _, a in measured))
    return st.unpaired_interval(diff, list(groups.values()), "unpaired: " + " | ".join(rules))


def _fmt(v: float | None, digits: int = 3) -> str:
    return "?" if v is None else f"{v:.{digits}f}"


def _side(side: dict, atoms: dict[tuple, Atom]) -> str:
    """A side's text with every reference replaced by its value (`(n=3)` after a mean over seeds)."""
    def value(m):
        a = atoms[(m.group(1), m.group(2), m.group(3), m.group(4))]
        digits = 4 if a.metric == "hypervolume" else 3
        return _fmt(a.value, digits) + (f" (n={a.n_seeds})" if a.n_seeds else "")

    return REF.sub(value, side["text"])


def shown_comparison(comp: dict, res: dict, atoms: dict[tuple, Atom]) -> str:
    size = f" {comp['given']} {comp['size']:g}" if comp["given"] else ""
    head = f"{_side(comp['a'], atoms)} {comp['op']} {_side(comp['b'], atoms)}{size}"
    iv = res["interval"]
    if res["outcome"] == st.NOT_RUN:
        return f"{head}: not run ({res['why']})"
    if iv is None or res["cannot_fail"] and iv.low == iv.high:
        return f"{head}: {res['why']}"
    how = "; ".join(x for x in (res["rule"], res["same"]) if x)
    return (f"{head}: diff {iv.diff:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}], detectable {iv.detectable:.3f}"
            f"{f' ({how})' if how else ''}: {res['why']}")


def _walk(tree: dict, results: list[dict], shown: list[str], counter: list[int]) -> tuple[str, bool, str]:
    """(verdict, cannot fail, text) of a compare tree over the per-comparison results (in order)."""
    if "how" not in tree:
        i = counter[0]
        counter[0] += 1
        return results[i]["outcome"], results[i]["cannot_fail"], shown[i]
    parts = [_walk(p, results, shown, counter) for p in tree["parts"]]
    verdict = st.combine([p[0] for p in parts], tree["how"], cannot_fail=[p[1] for p in parts])
    cannot = all(p[1] for p in parts) if tree["how"] == "all" else any(p[1] for p in parts)
    joined = f" {'and' if tree['how'] == 'all' else 'or'} ".join(
        p[2] if "how" not in sub else f"({p[2]})" for p, sub in zip(parts, tree["parts"]))
    return verdict, cannot, joined


def choose_step(choose: dict, sel) -> tuple[str | None, dict]:
    """(the step of `choose.among` whose `by` is largest on its run's metrics, {step: score or None}); a score that
    cannot be computed (a missing metric, a division by zero, a non-finite value) is None."""
    from ..expr import Expr

    by, scores = Expr.parse(choose["by"]), {}
    for step in choose["among"]:
        run = sel.run(step)
        try:
            score = by({k: float(v) for k, v in run["metrics"].items()}) if run is not None else None
        except (KeyError, ZeroDivisionError, OverflowError):
            score = None
        scores[step] = score if score is not None and math.isfinite(score) else None
    known = {k: v for k, v in scores.items() if v is not None}
    return (max(known, key=known.get) if known else None), scores


def hypervolumes(hv: dict, sel) -> tuple[dict, dict]:
    """({set name: hypervolume or None (not run)}, {set name: [(step, run_id, x, y), ...]})."""
    from .front import hypervolume, set_points, set_runs

    points, detail = {}, {}
    for name, pset in hv["sets"].items():
        if pset["union"]:
            continue
        runs, _ = set_runs(pset, sel)
        pts = set_points(runs, hv["axes"]) if runs is not None else None
        points[name] = pts
        detail[name] = [(s, r["run_id"], *p) for (s, r), p in zip(runs, pts)] if pts is not None else []
    for name, pset in hv["sets"].items():
        if pset["union"]:
            parts = [points.get(n) for n in pset["union"]]
            points[name] = None if any(p is None for p in parts) else [q for p in parts for q in p]
            detail[name] = [d for n in pset["union"] for d in detail.get(n, [])]
    values = {n: (hypervolume(p, hv["reference"]) if p is not None else None) for n, p in points.items()}
    return values, detail


def read_runs(entry: dict, sel, chosen_step: str | None) -> list[tuple[str, dict]]:
    """(step, run) of every step-level run the claim read (each seed's run; a child's or trial's parent step run):
    what its registration is checked against (analysis/claim_registration.py)."""
    steps = [r[0] for c in comparisons(entry["compare"]) for r in c["refs"]]
    if entry.get("choose"):
        steps = [chosen_step if s == entry["choose"]["as"] else s for s in steps] + entry["choose"]["among"]
    sets = (entry.get("hypervolume") or {}).get("sets", {})
    steps = [s for s in steps if s and s not in sets] + [s for p in sets.values() for s in p["steps"]]
    out, seen = [], set()
    for step in dict.fromkeys(steps):
        run = sel.run(step)
        for r in (run.get("seed_runs") or [run]) if run else []:
            if r["run_id"] not in seen:
                seen.add(r["run_id"])
                out.append((step, r))
    return out


def evaluate_claim(entry: dict, sel, per_example=None) -> dict:
    """{verdict, values (reference → value or None), shown (the comparisons with our numbers, each with its
    interval, rule and outcome), comparisons, smallest_detectable, threshold, rule, same_examples, read_runs,
    chosen, choice_scores, points}."""
    choose = entry.get("choose")
    chosen_step, scores = choose_step(choose, sel) if choose else (None, {})
    hv = entry.get("hypervolume")
    volumes, detail = hypervolumes(hv, sel) if hv else ({}, {})
    chosen = {choose["as"]: chosen_step} if choose else {}
    comps = comparisons(entry["compare"])
    refs = list(dict.fromkeys(r for c in comps for r in c["refs"]))
    atoms = {r: read_atom(r, sel, chosen=chosen, volumes=volumes, per_example=per_example) for r in refs}
    results = [judge_comparison(c, atoms, per_example) for c in comps]
    shown = [shown_comparison(c, r, atoms) for c, r in zip(comps, results)]
    verdict, _, text = _walk(entry["compare"], results, shown, [0])
    if choose:
        text = f"{choose['as']} = {chosen_step or '?'} (chosen on validation: max {choose['by']}); " + text
    if hv:
        text = (f"hypervolume of ({', '.join(hv['axes'])}) above ({', '.join(f'{v:g}' for v in hv['reference'])}); "
                + "; ".join(f"{n}: {len(d)} run(s)" for n, d in detail.items()) + "; " + text)
    judged = [(r["interval"].detectable, r["threshold"]) for r in results
              if r["interval"] is not None and not (r["cannot_fail"] and r["interval"].low == r["interval"].high)]
    worst = max(judged, key=lambda t: t[0] / max(t[1], 1e-12)) if judged else (None, None)
    rules = {("paired" if r["rule"].startswith("paired") else "unpaired") for r in results if r["rule"]}
    sames = {r["same"] for r in results if r["same"]}
    return {"verdict": verdict, "values": {a.text: a.value for a in atoms.values()}, "shown": text,
            "comparisons": results, "smallest_detectable": worst[0], "threshold": worst[1],
            "rule": "/".join(sorted(rules)), "same_examples": "; ".join(sorted(sames)),
            "read_runs": read_runs(entry, sel, chosen_step), "chosen": chosen_step, "choice_scores": scores,
            "points": detail}
