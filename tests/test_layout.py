"""The package's layout (issue 12): no import cycle, and the library never reaches up into the entry points.

The import graph is built with `ast` from every `import`/`from ... import` in every module — inside
functions too — and every `importlib.import_module("<constant>")` call: an import that runs late is an
import all the same. A cycle means two modules cannot be read (or tested, or moved) one without the other.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


PACKAGE = "robust_transfer"
ROOT = Path(__file__).resolve().parents[1] / "platform"
# The top layer: the entry points and their front doors. Nothing below may import them.
TOP = ("commands", "cli", "mlproject", "demo")


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        rel = f.relative_to(root).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def import_graph(mods: dict[str, Path], package: str = PACKAGE) -> dict[str, set[str]]:
    """module → the package's modules it imports (anywhere in its body, or by importlib with a constant)."""
    def resolve(cur: str, level: int, module: str | None) -> str:
        base = cur if mods[cur].name == "__init__.py" else cur.rsplit(".", 1)[0]
        for _ in range(level - 1):
            base = base.rsplit(".", 1)[0]
        return f"{base}.{module}" if module else base

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(m, node.level, node.module) if node.level else (node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                t = node.args[0].value
                if t.startswith("."):
                    t = resolve(m, len(t) - len(t.lstrip(".")), t.lstrip(".") or None)
                targets = [t]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m and (t == package or t.startswith(package + ".")):
                    edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found, key=len, reverse=True)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle():
    found = cycles(import_graph(modules()))
    assert not found, "import cycles: " + " | ".join(" → ".join(c) for c in found)


def test_library_never_imports_the_entry_points():
    edges = import_graph(modules())
    bad = sorted(f"{m} imports {t}" for m, ts in edges.items() if _layer(m) not in TOP
                 for t in ts if _layer(t) in TOP)
    assert not bad, "; ".join(bad)


def test_the_graph_sees_late_and_importlib_imports(tmp_path):
    """The checker itself: a cycle through a function-level import and one through importlib are found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import importlib\nimportlib.import_module('pkg.a')\n")
    (pkg / "d.py").write_text("from .sub.c import x\n")   # into the cycle, not part of it
    found = cycles(import_graph(modules(tmp_path, "pkg"), "pkg"))
    assert found == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_search_and_suites_know_no_command_table():
    """Search is handed the function a trial runs; suites plan from config.CONFIGS."""
    edges = import_graph(modules())
    held = [m for m in edges if _layer(m) in ("search", "suites")]
    assert held, "no search or suites module found: the rule would hold of nothing"
    for m in held:
        assert not any(_layer(t) in TOP for t in edges[m]), m


def test_config_and_attacks_stay_below_the_evaluation_library():
    """config/ checks suite names, attack names and budget knobs with the attacks' grammar and budget
    (attacks/specs.py, attacks/budget.py); neither config/ nor attacks/ may import `evaluation` (issue 23)."""
    edges = import_graph(modules())
    checked = [m for m in edges if _layer(m) in ("config", "attacks")]
    assert any(_layer(m) == "config" for m in checked) and any(_layer(m) == "attacks" for m in checked)
    bad = sorted(f"{m} imports {t}" for m in checked for t in edges[m] if _layer(t) == "evaluation")
    assert not bad, "; ".join(bad)


# --- layers that hold (issue 23 §2) ---------------------------------------------------------------------------
def _external_imports(path: Path) -> set[str]:
    """Every absolute module name `path` imports (anywhere in its body), e.g. {'torch', 'mlflow.tracking'}."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def _under(layer: str) -> dict[str, Path]:
    return {m: f for m, f in modules().items() if _layer(m) == layer}


def test_no_strategy_imports_mlflow_or_tracking():
    """Strategies report through `RunLogger` and are handed their source model: MLflow is the command layer's."""
    strategies, edges = _under("strategies"), import_graph(modules())
    assert len(strategies) >= 8   # the check saw the package's strategies
    bad = sorted(f"{m} imports {t}" for m in strategies for t in edges[m] if _layer(t) == "tracking")
    bad += sorted(f"{m} imports {n}" for m, f in strategies.items() for n in _external_imports(f)
                  if n == "mlflow" or n.startswith("mlflow."))
    bad += sorted(f"{m} mentions mlflow" for m, f in strategies.items() if "mlflow" in f.read_text())
    assert not bad, "; ".join(bad)


def test_config_imports_no_strategy():
    """The paper defaults live in config/ (config/transfer.py), so strategies can type their config."""
    configs, edges = _under("config"), import_graph(modules())
    assert "robust_transfer.config.transfer" in configs
    bad = sorted(f"{m} imports {t}" for m in configs for t in edges[m] if _layer(t) == "strategies")
    assert not bad, "; ".join(bad)


MAX_LINES = 400


def long_modules_without_a_reason() -> set[str]:
    """Modules over MAX_LINES lines whose first lines (the top of the docstring) do not say why."""
    out = set()
    for m, f in modules().items():
        lines = f.read_text().splitlines()
        if len(lines) > MAX_LINES and not any("over 400 lines" in line.lower() for line in lines[:12]):
            out.add(m)
    return out


def test_a_module_over_400_lines_says_why_in_its_first_lines():
    assert len(modules()) > 50   # the scan saw the package
    bad = long_modules_without_a_reason()
    assert not bad, f"over {MAX_LINES} lines without a reason in the first lines (say 'Over 400 lines because ...'): " \
        + ", ".join(sorted(bad))


def test_the_external_import_scan_sees_late_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef f():\n    from mlflow.tracking import MlflowClient\n    from . import x\n")
    assert _external_imports(f) == {"torch", "mlflow.tracking"}
