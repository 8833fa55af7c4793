"""The paper's claims as checks over runs: a verdict is computed from logged metrics, never typed in.

A suite's `report:` may hold `claim:` entries:

    - claim: robustness-transfers
      text: "Robustness transfers through frozen features"
      paper: "Table 2: 17.70% PGD-20 from the robust source vs 0.00% from the natural one"
      check: "tr-large-robust-c10.pgd20_acc >= tr-large-natural-c10.pgd20_acc + 0.05"

`<step>.<metric>` reads the newest FINISHED run of that step at the report's scale (as tables do);
`<step>[k=5].<metric>` reads its child run whose param k is 5 (e.g. one k of retrain_blocks).
The check is arithmetic (+ - * /, min, max, numbers) with one comparison, or several joined by
`and` / `or` (evaluated by expr.evaluate, the one safe evaluator). Verdicts: supported, not supported, or not run (a run or metric is missing).

"For the best λ_d" is chosen on VALIDATION metrics and reported on test (issue 13): `choose` names one of
several steps, the one whose validation expression is largest, and the check reads its test metrics:

    - claim: t5-lwf-improves-generalisation
      choose: {as: best-lwf, among: [table5-lwf-0p001, table5-lwf-0p01], by: "(val_clean_acc + val_pgd10_acc) / 2"}
      check: "best-lwf.clean_acc > src-large-robust.clean_acc + 0.02"

`by` may name only validation metrics (`val_*`): choosing on test data would bias the verdict.

Seeds (issue 18): `<step>.<metric>` of a seeded step is the MEAN over its seeds; `<step>.<metric>_se` is its
standard error (analysis/report_runs.metric_stats: std/sqrt(n) over n ≥ 2 seeds; for one run the binomial
sqrt(p(1-p)/n_examples) of an accuracy, 0 when n_examples is unknown). `margin(se_a, se_b)` =
max(0.02, 2·sqrt(se_a² + se_b²)) (expr.margin), so a check reads

    check: "a.pgd20_acc > b.pgd20_acc + margin(a.pgd20_acc_se, b.pgd20_acc_se)"

and the report prints the margin it used: `... + margin(0.012, 0.010)=0.031`.

`kind` says whose claim it is, so results.md counts them apart: `paper` (the default: one of the paper's claims),
`premise` (a condition the paper's claims rest on, e.g. "the robust source is robust": checked first, issue 18),
`reason` (why a claim is missed, stated so a run can test it) or `added` (ours, beyond the paper: AutoAttack
agreement, the searched front). A miss gets a run that tests its reason, not a sentence: a `reason` claim names the
claim it would explain in `explains` (required for, and only allowed on, kind reason; a claim of the same suite at
an overlapping scale, checked at load time by `check_explains`) and is an ordinary check over runs:

    - claim: t2-weak-source-caps-clean
      kind: reason
      explains: t2-natural-source-more-accurate
      text: "The transfer's clean accuracy is capped by the weak large source: a stronger source's features gain"
      check: "tr-strong-c10.clean_acc > tr-large-natural-c10.clean_acc + 0.02"

Its verdict reads like any other: supported = the reason holds in our runs.

Sets of runs compared as fronts (analysis/front.py): `hypervolume` names point sets, and the check reads
`<set>.hypervolume`, the 2-D hypervolume of the set's points on `axes` (both maximised) above `reference`:

    - claim: t4-searched-front-dominates-grid
      hypervolume:
        axes: [clean_acc, pgd20_acc]          # test metrics: where each run's point lies
        reference: [0.0, 0.0]
        sets:
          front: {step: table4-front, trials: true, pareto_on: [val_clean_acc, val_pgd10_acc]}   # chosen on validation
          grid: {steps: [table4-lwf-0p001, table4-lwf-0p01]}
          both: {union: [front, grid]}
      check: "front.hypervolume > grid.hypervolume"
"""
from __future__ import annotations

import ast
import itertools
import re

from ..errors import ConfigError
from ..expr import BINOPS, CHECK_FUNCS, COMPARISONS, evaluate

REF = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9-]*)(?:\[([A-Za-z_]\w*)=([\w.+-]+)\])?\.([A-Za-z_]\w*)")
SUPPORTED, NOT_SUPPORTED, NOT_RUN = "supported", "not supported", "not run"
CLAIM_KINDS = ("premise", "paper", "reason", "added")   # results.md's order


def parse_check(text: str, where: str) -> tuple[ast.Expression, list[tuple[str, str | None, str | None, str]]]:
    """The check's syntax tree (references replaced by names r0, r1, ...) and its references."""
    refs: list[tuple] = []

    def name(m):
        refs.append((m.group(1), m.group(2), m.group(3), m.group(4)))
        return f"r{len(refs) - 1}"

    body = REF.sub(name, str(text))
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError:
        raise ConfigError(f"{where}: check={text!r} is not an expression like `step.pgd20_acc >= other.pgd20_acc`") from None
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.BinOp, ast.UnaryOp, ast.USub,
               ast.Constant, ast.Name, ast.Load, ast.Call, *COMPARISONS, *BINOPS)
    for node in ast.walk(tree):
        number = isinstance(node, ast.Constant) and type(node.value) in (int, float)
        if not isinstance(node, allowed) or (isinstance(node, ast.Constant) and not number):
            raise ConfigError(f"{where}: check={text!r} may use only step.metric references, numbers, + - * /, "
                              "min, max, comparisons, and/or")
        if isinstance(node, ast.Name) and not (re.fullmatch(r"r\d+", node.id) or node.id in CHECK_FUNCS):
            raise ConfigError(f"{where}: check={text!r}: {node.id!r} is not a `<step>.<metric>` reference")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in CHECK_FUNCS):
            raise ConfigError(f"{where}: check={text!r}: only min(...) and max(...) may be called (and margin(...) of standard errors)")
        if isinstance(node, ast.Call) and (node.keywords or len(node.args) < (1 if node.func.id == "margin" else 2)):
            raise ConfigError(f"{where}: check={text!r}: {node.func.id}(...) takes "
                              + ("standard errors, e.g. margin(a.pgd20_acc_se, b.pgd20_acc_se)"
                                 if node.func.id == "margin" else "two or more values"))
    if not refs or not _comparisons(tree.body):
        raise ConfigError(f"{where}: check={text!r} must compare metrics of steps, e.g. a.pgd20_acc > b.pgd20_acc")
    return tree, refs


def _comparisons(node) -> bool:
    """True when `node` is a comparison, or comparisons joined (and nested) by and/or."""
    if isinstance(node, ast.BoolOp):
        return all(_comparisons(v) for v in node.values)
    return isinstance(node, ast.Compare)


def claim_entry(raw: dict, where: str) -> dict:
    """Validate one `claim:` entry of a suite's report."""
    name = str(raw.get("claim", "")).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        raise ConfigError(f"{where}: claim={raw.get('claim')!r} needs a name (letters, digits, '.', '_', '-')")
    for key in ("text", "check"):
        if not str(raw.get(key, "")).strip():
            raise ConfigError(f"{where}: claim {name!r} needs `{key}`")
    unknown = set(raw) - {"claim", "text", "paper", "check", "scales", "choose", "hypervolume", "kind", "explains"}
    if unknown:
        raise ConfigError(f"{where}: claim {name!r}: unknown key {sorted(unknown)[0]!r}; allowed: text, paper, check, "
                          "scales, choose, hypervolume, kind, explains")
    kind = raw.get("kind", "paper")
    if kind not in CLAIM_KINDS:
        raise ConfigError(f"{where}: claim {name!r}: kind={kind!r} is not allowed; use one of {', '.join(CLAIM_KINDS)}")
    explains = _explains_entry(raw.get("explains"), kind, f"{where}: claim {name!r}")
    _, refs = parse_check(raw["check"], f"{where}, claim {name!r}")
    choose = _choose_entry(raw.get("choose"), f"{where}, claim {name!r}")
    hv = _hypervolume_entry(raw.get("hypervolume"), f"{where}, claim {name!r}")
    sets = hv["sets"] if hv else {}
    for step, _, _, metric in refs:
        if step in sets and metric != "hypervolume":
            raise ConfigError(f"{where}, claim {name!r}: {step}.{metric}: a set of runs has `.hypervolume`")
    steps = [r[0] for r in refs if not (choose and r[0] == choose["as"]) and r[0] not in sets] \
        + (choose["among"] if choose else []) + [s for p in sets.values() for s in p["steps"]]
    return {"type": "claim", "name": name, "text": str(raw["text"]), "paper": str(raw.get("paper", "")),
            "check": str(raw["check"]), "steps": list(dict.fromkeys(steps)), "scales": raw.get("scales"),
            "choose": choose, "hypervolume": hv, "kind": kind, "explains": explains}


def _explains_entry(raw, kind: str, where: str) -> str | None:
    """`explains` belongs to kind reason only, and a reason must say which miss it would explain: a reason
    without its claim could not be shown beside that claim in results.md."""
    if kind != "reason":
        if raw is not None:
            raise ConfigError(f"{where}: explains={raw!r} is allowed only with kind: reason (kind is {kind!r})")
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{where}: kind reason needs `explains: <claim name>` (the claim whose miss it would "
                          f"explain); got explains={raw!r}")
    return raw.strip()


def _scales_overlap(a: list | None, b: list | None) -> bool:
    """Claims without `scales` run at every scale; two lists overlap when they share one."""
    return a is None or b is None or bool(set(a) & set(b))


def check_explains(claims: list[tuple[str, dict]]) -> None:
    """Each reason's `explains` names a non-reason claim of the same suite (`claims`: (where, entry) in file order)
    that runs at one of its scales: a reason for a claim the report never checks beside it would explain nothing."""
    for where, c in claims:
        if c["kind"] != "reason":
            continue
        allowed = [o["name"] for _, o in claims
                   if o["kind"] != "reason" and _scales_overlap(c["scales"], o["scales"])]
        if c["explains"] not in allowed:
            raise ConfigError(f"{where}: claim {c['name']!r}: explains={c['explains']!r} is not a claim of this suite "
                              f"at its scales; use one of: {', '.join(allowed) or '(none)'}")


def _hypervolume_entry(raw, where: str) -> dict | None:
    """`hypervolume: {axes: [x, y], reference: [rx, ry], sets: {name: point set}}` (analysis/front.py)."""
    import math

    from .front import point_set_entry

    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"axes", "reference", "sets"} or "axes" not in raw or "sets" not in raw:
        raise ConfigError(f"{where}: hypervolume is {{axes: [x_metric, y_metric], reference: [0, 0], sets: {{name: "
                          "{steps: [...]} | {step: S, trials: true, pareto_on: [...]} | {union: [...]}}}}")
    axes = raw["axes"]
    if not isinstance(axes, list) or len(axes) != 2 or not all(isinstance(a, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", a)
                                                                 for a in axes):
        raise ConfigError(f"{where}: hypervolume.axes={axes!r} must name two metrics, e.g. [clean_acc, pgd20_acc]")
    ref = raw.get("reference", [0.0, 0.0])
    if not isinstance(ref, list) or len(ref) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in ref):
        raise ConfigError(f"{where}: hypervolume.reference={ref!r} must be two numbers, e.g. [0.0, 0.0]")
    sets_raw = raw["sets"]
    if not isinstance(sets_raw, dict) or not sets_raw:
        raise ConfigError(f"{where}: hypervolume.sets maps names to sets of runs")
    sets = {}
    for n, s in sets_raw.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", str(n)):
            raise ConfigError(f"{where}: set name {n!r}: letters, digits and '-', starting with a letter")
        sets[str(n)] = point_set_entry(s, f"{where}, set {n!r}", names=set(map(str, sets_raw)) - {str(n)})
    return {"axes": list(axes), "reference": [float(v) for v in ref], "sets": sets}


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


def _choose_entry(raw, where: str) -> dict | None:
    """`choose: {as, among, by}`: validated; `by` over validation metrics only."""
    from ..expr import Expr, ExprError

    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"as", "among", "by"}:
        raise ConfigError(f"{where}: choose must be {{as: NAME, among: [step, ...], by: \"<val_* expression>\"}}")
    among = raw["among"]
    if not isinstance(among, list) or len(among) < 2 or not all(isinstance(a, str) and a for a in among):
        raise ConfigError(f"{where}: choose.among must list at least two steps")
    try:
        by = Expr.parse(str(raw["by"]))
    except ExprError as e:
        raise ConfigError(f"{where}: choose.by: {e}") from None
    test = [n for n in by.names if not n.startswith("val_")]
    if test:
        raise ConfigError(f"{where}: choose.by={raw['by']!r} names {', '.join(test)}; choose on validation metrics "
                          "(val_clean_acc, val_pgd10_acc): choosing on test data would bias the verdict")
    return {"as": str(raw["as"]), "among": list(among), "by": str(raw["by"])}


def choose_step(choose: dict, sel) -> tuple[str | None, dict]:
    """(the step of `choose.among` whose `by` is largest on its run's metrics, {step: score or None})."""
    from ..expr import Expr

    by, scores = Expr.parse(choose["by"]), {}
    for step in choose["among"]:
        run = sel.run(step)
        try:
            scores[step] = by({k: float(v) for k, v in run["metrics"].items()}) if run is not None else None
        except (KeyError, ZeroDivisionError):
            scores[step] = None
    known = {k: v for k, v in scores.items() if v is not None}
    return (max(known, key=known.get) if known else None), scores


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


def _value(run, metric: str):
    """(value, n of seeds or None): `<metric>_se` is the standard error of <metric> (report_runs.metric_stats)."""
    from .report_runs import metric_stats, metric_value

    if run is not None and metric.endswith("_se") and metric not in run["metrics"]:
        stats = metric_stats(run, metric[:-3])
        return (None if stats is None else stats["se"]), None
    v = metric_value(run, metric)
    stats = metric_stats(run, metric) if run is not None and run.get("seed_runs") and v is not None else None
    return v, (stats["n"] if stats else None)


def evaluate_claim(entry: dict, sel) -> dict:
    """{verdict, values (reference text → value or None), shown (the check with numbers filled in, the seeds'
    count `(n=3)` after a mean over seeds, and `=<value>` after each margin(...))}."""
    tree, refs = parse_check(entry["check"], entry["name"])
    env, values, counts = {}, {}, {}
    choose = entry.get("choose")
    chosen, scores = choose_step(choose, sel) if choose else (None, {})
    hv = entry.get("hypervolume")
    volumes, detail = hypervolumes(hv, sel) if hv else ({}, {})
    for i, (step, param, value, metric) in enumerate(refs):
        text = f"{step}[{param}={value}].{metric}" if param else f"{step}.{metric}"
        if step in volumes:
            values[text] = volumes[step]
            if volumes[step] is not None:
                env[f"r{i}"] = volumes[step]
            continue
        if choose and step == choose["as"]:
            if chosen is None:
                values[text] = None
                continue
            step = chosen
        run = sel.run(step)
        if run is not None and param:
            run = _child(sel, run, param, value)
        v, counts[i] = _value(run, metric)
        values[text] = v
        if v is not None:
            env[f"r{i}"] = v
    if len(env) < len(refs):
        verdict = NOT_RUN
    else:
        verdict = SUPPORTED if evaluate(tree, env) else NOT_SUPPORTED
    shown = _shown(entry["check"], tree, env, counts,
                   digits={i: 4 for i, r in enumerate(refs) if r[3] == "hypervolume"})
    if choose:
        shown = (f"{choose['as']} = {chosen or '?'} (chosen on validation: max {choose['by']}); " + shown)
    if hv:
        shown = (f"hypervolume of ({', '.join(hv['axes'])}) above ({', '.join(f'{v:g}' for v in hv['reference'])}); "
                 + "; ".join(f"{n}: {len(d)} run(s)" for n, d in detail.items()) + "; " + shown)
    return {"verdict": verdict, "values": values, "shown": shown, "chosen": chosen, "choice_scores": scores,
            "points": detail}


def _fmt(v, digits: int = 3) -> str:
    return "?" if v is None else f"{v:.{digits}f}"


def _shown(check: str, tree, env: dict, counts: dict, digits: dict | None = None) -> str:
    """The check with our numbers: each reference's value (`(n=3)` after a mean over seeds), and after each
    margin(...) the margin it came to (`margin(0.012, 0.010)=0.031`)."""
    counter = itertools.count()
    body = REF.sub(lambda m: f"r{next(counter)}", str(check))   # the text parse_check parsed
    # annotate margin(...) calls, right to left so the offsets stay valid (one-line checks)
    if "\n" not in body and body.isascii():   # ast offsets count UTF-8 bytes
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.func.id == "margin"]
        for node in sorted(calls, key=lambda n: n.col_offset, reverse=True):
            try:
                text = f"={_fmt(evaluate(node, env))}"
            except KeyError:
                text = "=?"
            body = body[:node.end_col_offset] + text + body[node.end_col_offset:]

    def value(m):
        i = int(m.group(1))
        v = _fmt(env.get(f"r{i}"), (digits or {}).get(i, 3))
        return v + (f" (n={counts[i]})" if counts.get(i) else "")

    return re.sub(r"\br(\d+)\b", value, body)
