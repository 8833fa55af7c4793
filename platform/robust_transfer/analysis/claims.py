"""The paper's claims as comparisons the engine judges: a verdict is computed from logged metrics, never typed in.

A suite's `report:` may hold `claim:` entries. A claim states what it compares; the engine (analysis/claim_verdicts.py,
analysis/claim_stats.py) applies the margin rule itself, from each number's seeds or example count, paired when both
sides were evaluated on the same examples:

    - claim: t2-robustness-transfers
      text: "Robustness transfers through frozen features"
      paper: "Table 2: 17.70% PGD-20 from the robust source vs 0.00% from the natural one"
      compare: {a: tr-large-robust-c10.pgd20_acc, op: ">", b: tr-large-natural-c10.pgd20_acc, by: 0.05}

- `op: ">"` / `"<"`: a directional claim, a above (below) b by more than `by` (≥ 0, default 0: then at least the
  2-point floor). `op: ">="` / `"<="`: a tolerance, a not below (above) b by more than `within` (≥ 0, default 0).
- `a`, `b`: `<step>.<metric>` (the newest FINISHED run of the step at the report's scale; a seeded step's mean over
  its seeds), `<step>[k=5].<metric>` (its child run whose param k is 5), a number, or a linear form of those
  (`0.75 * src.pgd20_acc`, `(x.val_clean_acc + x.val_pgd10_acc) / 2`): + −, and * or / by a number.
- Several comparisons: a list (all must hold), `{all: [...]}` or `{any: [...]}`, nested as needed.

Verdicts: supported, not supported, uninformative (the comparison cannot fail over its metrics' ranges, or its sample
cannot detect the effect it asks for), not run (a run or a metric is missing or not finite). A free-form `check:`
(arithmetic and comparisons of measured numbers with a hand-written margin) is refused when the suite is loaded.

"For the best λ_d" is chosen on VALIDATION metrics and reported on test (issue 13): `choose` names one of several
steps, the one whose validation expression is largest, and the comparison reads its test metrics:

    - claim: t5-lwf-improves-generalisation
      choose: {as: best-lwf, among: [table5-lwf-0p001, table5-lwf-0p01], by: "(val_clean_acc + val_pgd10_acc) / 2"}
      compare: {a: best-lwf.clean_acc, op: ">", b: src-large-robust.clean_acc}

`kind` says whose claim it is, so results.md counts them apart: `paper` (the default), `premise` (a condition the
paper's claims rest on), `reason` (why a claim is missed, stated so a run can test it: `explains` names the claim,
a claim of the same suite at an overlapping scale) or `added` (ours, beyond the paper).

`written_after: "<the evidence seen>"` says the claim was written after evidence it is about was seen (a re-plan
of a claim whose miss a run showed): it is reported `registered: after` whatever the records say, because a new
store would otherwise record it before its own re-run and count it. It is hashed only where given.

Sets of runs compared as fronts (analysis/front.py): `hypervolume` names point sets, and a comparison reads
`<set>.hypervolume`, the 2-D hypervolume of the set's points on `axes` (both maximised) above `reference`.

Every claim is hashed field by field (`claim_fingerprint`): a suite run records the hashes when it starts
(suites/registration.py), and the report marks a claim edited after its runs began as registered `after`.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import re

from ..errors import ConfigError, SuiteError
from ..expr import ExprError, linear_form

REF = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9-]*)(?:\[([A-Za-z_]\w*)=([\w.+-]+)\])?\.([A-Za-z_]\w*)")
CLAIM_KINDS = ("premise", "paper", "reason", "added")   # results.md's order
CLAIM_KEYS = ("claim", "text", "paper", "compare", "scales", "choose", "hypervolume", "kind", "explains",
              "written_after")
HASHED = ("text", "kind", "explains", "compare", "choose", "hypervolume", "scales")   # what registration covers
OPS = {">": (True, 1.0), "<": (True, -1.0), ">=": (False, 1.0), "<=": (False, -1.0)}   # op → (directional, sign)
_MAX_PARTS = 50        # comparisons in one claim
_SIDE_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Mult, ast.Div,
               ast.Constant, ast.Name, ast.Load)
HOW_TO = ('state it as compare: {a: <step>.<metric>, op: ">", b: <step>.<metric> or a number, by: <points>} '
          "(projects/README.md, Claims)")


def ref_text(ref: tuple) -> str:
    step, param, value, metric = ref
    return f"{step}[{param}={value}].{metric}" if param else f"{step}.{metric}"


def parse_side(value, where: str) -> dict:
    """One side of a comparison: {"text", "refs": [ref, ...], "terms": {ref: coefficient}, "const"}."""
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        raise SuiteError(f"{where}: {value!r} is not a side of a comparison; give <step>.<metric>, a number, or a "
                         "linear form such as 0.5 * <step>.<metric>")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SuiteError(f"{where}: {value!r} is not a finite number")
        return {"text": f"{value:g}", "refs": [], "terms": {}, "const": float(value)}
    text = " ".join(value.split())
    refs: list[tuple] = []

    def name(m):
        refs.append((m.group(1), m.group(2), m.group(3), m.group(4)))
        return f"r{len(refs) - 1}"

    try:
        tree = ast.parse(REF.sub(name, text), mode="eval")
    except SyntaxError:
        raise SuiteError(f"{where}: {text!r} is not a <step>.<metric>, a number or a linear form of them") from None
    for node in ast.walk(tree):
        if not isinstance(node, _SIDE_NODES) or (isinstance(node, ast.Constant) and type(node.value) not in (int, float)):
            raise SuiteError(f"{where}: {text!r} may use only <step>.<metric>, numbers, + - and * or / by a number")
        if isinstance(node, ast.Name) and not re.fullmatch(r"r\d+", node.id):
            raise SuiteError(f"{where}: {text!r}: {node.id!r} is not a `<step>.<metric>` reference")
    try:
        coefs, const = linear_form(tree)
    except ExprError as e:
        raise SuiteError(f"{where}: {text!r} {e}") from None
    terms: dict[tuple, float] = {}
    for key, c in coefs.items():
        ref = refs[int(key[1:])]
        terms[ref] = terms.get(ref, 0.0) + c
    return {"text": text, "refs": list(dict.fromkeys(refs)), "terms": terms, "const": const}


def comparison_entry(raw: dict, where: str) -> dict:
    """`{a, op, b, by | within}` → the difference D the claim asks to be large: {"terms": {ref: w}, "const",
    "directional", "size" (δ or τ), "refs", "a", "b", "op"}."""
    unknown = set(raw) - {"a", "op", "b", "by", "within"}
    if unknown or not {"a", "op", "b"} <= set(raw):
        raise SuiteError(f"{where}: a comparison is {{a: ..., op: '>', b: ..., by: <points>}} (or op '>=' with "
                         f"within: <points>); got keys {sorted(raw)}")
    op = raw["op"]
    if op not in OPS:
        raise SuiteError(f"{where}: op={op!r} is not allowed; use one of {', '.join(OPS)}")
    directional, sign = OPS[op]
    given = "by" if "by" in raw else "within" if "within" in raw else None
    if given == ("within" if directional else "by"):
        raise SuiteError(f"{where}: {given} goes with op {'>= or <=' if given == 'within' else '> or <'}: `by` is the "
                         "size of a difference, `within` a tolerance")
    size = raw.get(given, 0.0) if given else 0.0
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) or size < 0:
        raise SuiteError(f"{where}: {given}={size!r} must be a number >= 0 (a fraction for accuracies: 0.02 = 2 points)")
    a, b = parse_side(raw["a"], f"{where}, a"), parse_side(raw["b"], f"{where}, b")
    if not a["refs"] and not b["refs"]:
        raise SuiteError(f"{where}: the comparison reads no measured number; a and b are both constants")
    terms: dict[tuple, float] = {}
    for side, s in ((a, sign), (b, -sign)):
        for ref, c in side["terms"].items():
            terms[ref] = terms.get(ref, 0.0) + s * c
    return {"a": a, "b": b, "op": op, "directional": directional, "size": float(size), "given": given,
            "terms": terms, "const": sign * (a["const"] - b["const"]), "refs": list(dict.fromkeys(a["refs"] + b["refs"]))}


def compare_entry(raw, where: str, depth: int = 0) -> dict:
    """A comparison, or {"how": "all" | "any", "parts": [...]} (a list is `all`)."""
    if depth > 5:
        raise SuiteError(f"{where}: all/any nest deeper than 5 levels")
    if isinstance(raw, list) or (isinstance(raw, dict) and set(raw) in ({"all"}, {"any"})):
        how, parts = ("all", raw) if isinstance(raw, list) else next(iter(raw.items()))
        if not isinstance(parts, list) or not parts or len(parts) > _MAX_PARTS:
            raise SuiteError(f"{where}: {how} takes a list of 1 to {_MAX_PARTS} comparisons")
        return {"how": how, "parts": [compare_entry(p, f"{where}, {how}[{i}]", depth + 1) for i, p in enumerate(parts)]}
    if isinstance(raw, dict):
        return comparison_entry(raw, where)
    raise SuiteError(f"{where}: compare is {{a, op, b, by}}, a list of them (all must hold), {{all: [...]}} or "
                     "{any: [...]}")


def comparisons(tree: dict) -> list[dict]:
    """The comparisons of a compare tree, in order."""
    return [c for p in tree["parts"] for c in comparisons(p)] if "how" in tree else [tree]


def describe(tree: dict, top: bool = True) -> str:
    """The compare tree as one line: `a > b by 0.05 and (c >= d within 0.02 or e < 0.05)`."""
    if "how" in tree:
        text = f" {'and' if tree['how'] == 'all' else 'or'} ".join(describe(p, False) for p in tree["parts"])
        return text if top or len(tree["parts"]) == 1 else f"({text})"
    size = f" {tree['given']} {tree['size']:g}" if tree["given"] else ""
    return f"{tree['a']['text']} {tree['op']} {tree['b']['text']}{size}"


def claim_fingerprint(raw: dict) -> tuple[str, dict[str, str]]:
    """(hash of the claim, {field: hash}) over HASHED: what a suite run records when it starts."""
    # `written_after` only where given, so every claim without it keeps the hash its suite runs recorded
    keys = HASHED + (("written_after",) if raw.get("written_after") is not None else ())
    fields = {k: hashlib.sha256(json.dumps(raw.get(k), sort_keys=True, ensure_ascii=False, default=str).encode())
              .hexdigest()[:16] for k in keys}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16], fields


def claim_entry(raw: dict, where: str) -> dict:
    """Validate one `claim:` entry of a suite's report (SuiteError, exit 7, one line naming the claim)."""
    name = str(raw.get("claim", "")).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        raise SuiteError(f"{where}: claim={raw.get('claim')!r} needs a name (letters, digits, '.', '_', '-')")
    at = f"{where}, claim {name!r}"
    if "check" in raw:
        raise SuiteError(f"{at}: a free-form `check:` compares measured numbers outside the engine's margin rule; "
                         + HOW_TO)
    for key in ("text", "compare"):
        if key not in raw or (key == "text" and not str(raw.get(key) or "").strip()):
            raise SuiteError(f"{at}: needs `{key}`" + (f"; {HOW_TO}" if key == "compare" else ""))
    unknown = set(raw) - set(CLAIM_KEYS)
    if unknown:
        raise SuiteError(f"{at}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(CLAIM_KEYS[1:])}")
    written_after = raw.get("written_after")
    if written_after is not None and not (isinstance(written_after, str) and written_after.strip()):
        raise SuiteError(f"{at}: written_after={written_after!r} must say which evidence was seen before the claim "
                         "was written (e.g. \"the run of 2026-12-07: f5-... uninformative on 8 images\")")
    kind = raw.get("kind", "paper")
    if kind not in CLAIM_KINDS:
        raise SuiteError(f"{at}: kind={kind!r} is not allowed; use one of {', '.join(CLAIM_KINDS)}")
    try:
        explains = _explains_entry(raw.get("explains"), kind, at)
        choose = _choose_entry(raw.get("choose"), at)
        hv = _hypervolume_entry(raw.get("hypervolume"), at)
    except ConfigError as e:   # a suite file problem: exit 7 like the rest of the claim
        raise SuiteError(str(e)) from None
    tree = compare_entry(raw["compare"], f"{at}, compare")
    sets = hv["sets"] if hv else {}
    refs = [r for c in comparisons(tree) for r in c["refs"]]
    for step, param, _, metric in refs:
        if (step in sets) != (metric == "hypervolume") or (step in sets and param):
            raise SuiteError(f"{at}: {step}.{metric}: `.hypervolume` is read from a set of runs of `hypervolume:`, "
                             f"and a set of runs has only `.hypervolume`; sets: {', '.join(sets) or '(none)'}")
    steps = [r[0] for r in refs if not (choose and r[0] == choose["as"]) and r[0] not in sets] \
        + (choose["among"] if choose else []) + [s for p in sets.values() for s in p["steps"]]
    digest, fields = claim_fingerprint(raw)
    return {"type": "claim", "name": name, "text": str(raw["text"]), "paper": str(raw.get("paper", "")),
            "compare": tree, "compare_text": describe(tree), "steps": list(dict.fromkeys(steps)),
            "scales": raw.get("scales"), "choose": choose, "hypervolume": hv, "kind": kind, "explains": explains,
            "written_after": written_after.strip() if written_after else None, "hash": digest, "fields": fields}


def _explains_entry(raw, kind: str, where: str) -> str | None:
    """`explains` belongs to kind reason only, and a reason must say which miss it would explain: a reason
    without its claim could not be shown beside that claim in results.md."""
    if kind != "reason":
        if raw is not None:
            raise SuiteError(f"{where}: explains={raw!r} is allowed only with kind: reason (kind is {kind!r})")
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise SuiteError(f"{where}: kind reason needs `explains: <claim name>` (the claim whose miss it would "
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
        if c["explains"] == c["name"]:
            raise SuiteError(f"{where}: claim {c['name']!r}: explains={c['explains']!r} names the reason itself; a "
                             "reason explains the miss of another claim of this suite")
        allowed = [o["name"] for _, o in claims
                   if o["kind"] != "reason" and _scales_overlap(c["scales"], o["scales"])]
        if c["explains"] not in allowed:
            raise SuiteError(f"{where}: claim {c['name']!r}: explains={c['explains']!r} is not a claim of this suite "
                             f"at its scales; use one of: {', '.join(allowed) or '(none)'}")


def _hypervolume_entry(raw, where: str) -> dict | None:
    """`hypervolume: {axes: [x, y], reference: [rx, ry], sets: {name: point set}}` (analysis/front.py)."""
    from .front import point_set_entry

    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"axes", "reference", "sets"} or "axes" not in raw or "sets" not in raw:
        raise SuiteError(f"{where}: hypervolume is {{axes: [x_metric, y_metric], reference: [0, 0], sets: {{name: "
                         "{steps: [...]} | {step: S, trials: true, pareto_on: [...]} | {union: [...]}}}}")
    axes = raw["axes"]
    if not isinstance(axes, list) or len(axes) != 2 or not all(isinstance(a, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", a)
                                                                 for a in axes):
        raise SuiteError(f"{where}: hypervolume.axes={axes!r} must name two metrics, e.g. [clean_acc, pgd20_acc]")
    ref = raw.get("reference", [0.0, 0.0])
    if not isinstance(ref, list) or len(ref) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in ref):
        raise SuiteError(f"{where}: hypervolume.reference={ref!r} must be two numbers, e.g. [0.0, 0.0]")
    sets_raw = raw["sets"]
    if not isinstance(sets_raw, dict) or not sets_raw:
        raise SuiteError(f"{where}: hypervolume.sets maps names to sets of runs")
    sets = {}
    for n, s in sets_raw.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", str(n)):
            raise SuiteError(f"{where}: set name {n!r}: letters, digits and '-', starting with a letter")
        sets[str(n)] = point_set_entry(s, f"{where}, set {n!r}", names=set(map(str, sets_raw)) - {str(n)})
    return {"axes": list(axes), "reference": [float(v) for v in ref], "sets": sets}


def _choose_entry(raw, where: str) -> dict | None:
    """`choose: {as, among, by}`: validated; `by` over validation metrics only."""
    from ..expr import Expr

    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"as", "among", "by"}:
        raise SuiteError(f"{where}: choose must be {{as: NAME, among: [step, ...], by: \"<val_* expression>\"}}")
    among = raw["among"]
    if not isinstance(among, list) or len(among) < 2 or not all(isinstance(a, str) and a for a in among):
        raise SuiteError(f"{where}: choose.among must list at least two steps")
    try:
        by = Expr.parse(str(raw["by"]))
    except ExprError as e:
        raise SuiteError(f"{where}: choose.by: {e}") from None
    test = [n for n in by.names if not n.startswith("val_")]
    if test:
        raise SuiteError(f"{where}: choose.by={raw['by']!r} names {', '.join(test)}; choose on validation metrics "
                         "(val_clean_acc, val_pgd10_acc): choosing on test data would bias the verdict")
    return {"as": str(raw["as"]), "among": list(among), "by": str(raw["by"])}
