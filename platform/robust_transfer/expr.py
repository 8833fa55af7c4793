"""Metric expressions and constraints: `pgd20_acc`, `(clean_acc + pgd20_acc)/2`, `clean_acc >= 0.7`.

The one safe evaluator over Python's `ast` (numbers, names, + - * /, unary minus, min/max,
parentheses): search spaces and promotion policies share `Expr`/`Constraint`, so a policy and an objective
mean the same thing by the same text; the two sides of a claim's comparison (analysis/claims.py) are linear
forms over metrics (`linear_form`), so the engine can carry each number's standard error into their difference.
Nothing is ever `eval`-ed.
"""
from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass

# Names a metric expression may use (docs/architecture.md metric names; `val_*`: the validation split's; an ℓ2
# evaluation's accuracies end in `_l2`: docs/evaluation.md).
METRIC_NAME = re.compile(r"^(val_)?(clean_acc|(pgd|cw)\d+_acc|aa_acc|worst_acc|train_loss|train_clean_acc|"
                         r"epoch_time_s|images_per_s|[a-z0-9_]+_acc|[a-z0-9_]+_acc_l2)$")
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
FUNCS = {"min": min, "max": max}
_CMPOPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class ExprError(ValueError):
    """An expression that cannot be parsed or uses something other than metrics and arithmetic."""


MAX_EXPR_CHARS = 1000   # an objective or policy is a line, not a program (30,000 chained `+` recursed)
MAX_EXPR_DEPTH = 50     # nesting of the parsed expression (the evaluator recurses over it)


def _check_shape(tree: ast.Expression, text: str) -> None:
    """Bounded nesting; min/max of two or more arguments; no division by a constant zero (issue 17 §4)."""
    todo = [(tree, 0)]
    while todo:   # iterative: the depth is what is being checked
        node, depth = todo.pop()
        if depth > MAX_EXPR_DEPTH:
            raise ExprError(f"{text[:60]!r} nests deeper than {MAX_EXPR_DEPTH} levels (the limit)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCS:
            if len(node.args) < 2 or any(isinstance(a, ast.Starred) for a in node.args):
                raise ExprError(f"{text!r}: {node.func.id}(...) takes two or more metric expressions, "
                                f"e.g. {node.func.id}(clean_acc, pgd20_acc)")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _constant_zero(node.right):
            raise ExprError(f"{text!r} divides by zero")
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _constant_zero(node) -> bool:
    """True when `node` uses no metric and evaluates to 0 (e.g. `0`, `0.0`, `(1 - 1)`)."""
    if any(isinstance(n, (ast.Name, ast.Call)) for n in ast.walk(node)):
        return False
    try:
        return evaluate(node, {}) == 0
    except (ZeroDivisionError, KeyError, TypeError, ExprError, OverflowError):
        return False


@dataclass(frozen=True)
class Expr:
    """A parsed arithmetic expression over metric names."""

    text: str
    tree: ast.Expression
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Expr":
        text = str(text).strip()
        if not text:
            raise ExprError("empty expression")
        if len(text) > MAX_EXPR_CHARS:
            raise ExprError(f"{text[:40]!r}... is {len(text)} characters long; an expression has at most "
                            f"{MAX_EXPR_CHARS}")
        try:
            tree = ast.parse(text, mode="eval")
        except (SyntaxError, RecursionError, MemoryError, ValueError):
            raise ExprError(f"{text!r} is not an arithmetic expression over metric names") from None
        _check_shape(tree, text)
        names: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id in FUNCS:
                    continue
                if not METRIC_NAME.match(node.id):
                    raise ExprError(f"{node.id!r} in {text!r} is not a metric name "
                                    "(e.g. clean_acc, pgd20_acc, cw20_acc, aa_acc, worst_acc)")
                names.append(node.id)
            elif isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCS or node.keywords:
                    raise ExprError(f"{text!r}: only min(...) and max(...) may be called")
            elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Load, ast.USub,
                                       ast.UAdd, *BINOPS)):
                raise ExprError(f"{text!r}: only numbers, metric names, + - * /, min, max and parentheses are allowed")
            if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
                raise ExprError(f"{text!r}: constants must be numbers")
        if not names:
            raise ExprError(f"{text!r} uses no metric")
        return cls(text, tree, tuple(dict.fromkeys(names)))

    def __call__(self, metrics: dict[str, float]) -> float:
        missing = [n for n in self.names if n not in metrics]
        if missing:
            raise KeyError(", ".join(missing))
        return float(evaluate(self.tree.body, metrics))

    def __str__(self) -> str:
        return self.text


def evaluate(node, env):
    """The value of a checked syntax tree (`Expr.parse`) with names read from `env`."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return float(env[node.id])
    if isinstance(node, ast.UnaryOp):
        v = evaluate(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        return BINOPS[type(node.op)](evaluate(node.left, env), evaluate(node.right, env))
    if isinstance(node, ast.Call):   # Expr.parse admits only FUNCS
        return FUNCS[node.func.id](*(evaluate(a, env) for a in node.args))
    raise ExprError(f"unsupported expression node {type(node).__name__}")  # the parsers rule this out


def linear_form(node) -> tuple[dict[str, float], float]:
    """({name: coefficient}, constant) of an expression that is linear in its names: numbers, names, + −, unary
    minus, and * or / by a number (`0.5 * a`, `(a + b) / 2`, `a - 0.02`). ExprError for anything else (a name times
    a name, division by a name or by zero, a call): a claim's side must be linear for its standard error to be."""
    if isinstance(node, ast.Expression):
        return linear_form(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return {}, float(node.value)
    if isinstance(node, ast.Name):
        return {node.id: 1.0}, 0.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        terms, const = linear_form(node.operand)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return {k: sign * v for k, v in terms.items()}, sign * const
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        (lt, lc), (rt, rc) = linear_form(node.left), linear_form(node.right)
        sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
        out = dict(lt)
        for k, v in rt.items():
            out[k] = out.get(k, 0.0) + sign * v
        return out, lc + sign * rc
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        (lt, lc), (rt, rc) = linear_form(node.left), linear_form(node.right)
        if isinstance(node.op, ast.Div):
            if rt:
                raise ExprError("divides by a measured number (not linear: its standard error is not defined here)")
            if rc == 0:
                raise ExprError("divides by zero")
            return {k: v / rc for k, v in lt.items()}, lc / rc
        if lt and rt:
            raise ExprError("multiplies two measured numbers (not linear)")
        terms, scale, const = (lt, rc, lc * rc) if lt else (rt, lc, lc * rc)
        return {k: v * scale for k, v in terms.items()}, const
    raise ExprError(f"{type(node).__name__} is not allowed: use numbers, step.metric, + - and * or / by a number")


@dataclass(frozen=True)
class Constraint:
    """`<expr> >= <number>` (or >, <=, <): feasible when it holds."""

    text: str
    expr: Expr
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        m = re.match(r"^(.+?)\s*(>=|<=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$", str(text).strip())
        if not m:
            raise ExprError(f"constraint {text!r} must read `<metric expression> >= <number>` (or >, <=, <), "
                            "e.g. clean_acc >= 0.7")
        return cls(str(text).strip(), Expr.parse(m.group(1)), m.group(2), float(m.group(3)))

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 when satisfied, the amount of violation otherwise."""
        v = self.expr(metrics)
        return self.bound - v if self.op in (">=", ">") else v - self.bound

    def holds(self, metrics: dict[str, float]) -> bool:
        return _CMPOPS[self.op](self.expr(metrics), self.bound)

    def __str__(self) -> str:
        return self.text


def intermediate_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Per-epoch stand-ins for final metrics (for pruning): `val_clean_acc` for `clean_acc`, and any
    `val_pgd{k}_acc` for `pgd{j}_acc` (a cheaper validation attack tracks the final one)."""
    out = dict(metrics)
    for k, v in metrics.items():
        if k.startswith("val_"):
            out.setdefault(k[len("val_"):], v)
    pgd = [k for k in out if re.fullmatch(r"pgd\d+_acc", k)]
    if pgd:
        out["_pgd_any"] = out[pgd[0]]
    return out


def evaluate_intermediate(expr: Expr, epoch_metrics: dict[str, float]) -> float | None:
    """The expression on per-epoch metrics, or None when they do not carry what it needs."""
    env = intermediate_metrics(epoch_metrics)
    for n in expr.names:
        if n not in env and re.fullmatch(r"pgd\d+_acc", n) and "_pgd_any" in env:
            env[n] = env["_pgd_any"]
    try:
        return expr(env)
    except (KeyError, ZeroDivisionError):
        return None


# --- choosing on test data (issue 13): test metrics are reported, choices read val_* ------------------------
_NOT_TEST = re.compile(r"^(val_|train_)")


def names_of_test_metrics(names) -> list[str]:
    """The names among `names` that are test-set accuracies (`clean_acc`, `pgd20_acc`, `aa_acc`, ...):
    every `*_acc` (ℓ2: `*_acc_l2`) that is not a validation (`val_*`) or training (`train_*`) metric."""
    return [n for n in dict.fromkeys(names) if n.endswith(("_acc", "_acc_l2")) and not _NOT_TEST.match(n)]


def choosing_on_test_warning(what: str, names) -> str | None:
    """One line when a choice (`what`: an objective, a constraint, a policy) reads test-set metrics."""
    test = names_of_test_metrics(names)
    if not test:
        return None
    return (f"warning: {what} chooses by test-set metric(s) {', '.join(test)}: choosing on test data biases what "
            "is reported; use the validation metrics (val_clean_acc, val_pgd10_acc)")


# --- cascade numbers (issue 24 §4): one rule for the CLI, the run and the report -------------------------------
CASCADE_MARK = "†"
CASCADE_NOTE = (f"{CASCADE_MARK} a per-attack number of a cascade evaluation (`rtl.eval_per_attack=cascade`): the "
                "attack ran only on the examples the attacks before it left correct, so it is not that attack's own "
                "accuracy; the cascade's `worst_acc` is.")


def is_per_attack_metric(name: str) -> bool:
    """A number one attack gives (`pgd20_acc`, `val_apgd_t_acc`, `aa_acc`): not the clean accuracy, not a worst
    case over attacks (`worst_acc`, `standard_worst_acc`), not a training or diagnostic number."""
    base = name[len("val_"):] if name.startswith("val_") else name
    base = base[:-len("_l2")] if base.endswith("_l2") else base      # an ℓ2 evaluation's name (docs/evaluation.md)
    return (base.endswith("_acc") and not base.startswith(("train_", "diag_")) and base != "clean_acc"
            and not base.endswith("worst_acc"))


# --- per-example correctness (`evaluation/per_example.json`): one key per logged accuracy -------------------------
_ACC_SUFFIXES = ("_acc", "_acc_l2")


def per_example_key(metric: str) -> str | None:
    """The key of a test accuracy in `evaluation/per_example.json`'s `correct`: the metric without `_acc`
    (`pgd20_acc` → `pgd20`, `aa_acc` → `aa`, `worst_acc` → `worst`, `aa_apgd_ce_acc` → `aa_apgd_ce`), an ℓ2 one's
    `_l2` kept (`pgd20_acc_l2` → `pgd20_l2`, so it never reads an ℓ∞ number's vector); None for a name that is no
    accuracy. The writer (evaluation.EvalResult.per_example_record) and the reader (analysis/per_example.py) use it."""
    base = metric[len("val_"):] if metric.startswith("val_") else metric
    for suffix in _ACC_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[:-len(suffix)] + suffix[len("_acc"):]
    return None


def per_example_metric(key: str) -> str:
    """The test metric a `correct` key holds the vector of: `per_example_key`'s inverse (`pgd20_l2` →
    `pgd20_acc_l2`, `clean` → `clean_acc`)."""
    return key[:-len("_l2")] + "_acc_l2" if key.endswith("_l2") else key + "_acc"
