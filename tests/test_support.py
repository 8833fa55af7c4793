"""Tests as a product (issue 23 item 5): what several test files need is written once, in tests/support/, and no
test imports another test module. The rules are read off the files with `ast`, like tests/test_layout.py's; the
last tests check the server helpers themselves."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from support.net import free_port, wait_http

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"


def tree_files(root: Path = TESTS) -> list[Path]:
    """Every Python file of the test tree: test modules, conftest.py and tests/support/."""
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported_test_modules(path: Path) -> list[str]:
    """The test modules (`test_*`, `conftest`, `tests.test_*`) that `path` imports, anywhere in its body, also by
    `importlib.import_module("<constant>")`. pytest imports test modules and conftest.py itself: imported again
    by hand they run twice, under two names, and tie one file's tests to another's."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.append(node.args[0].value)
    return [n for n in names if (n.split(".")[-1].startswith("test_") or n.split(".")[-1] == "conftest")
            and (len(n.split(".")) == 1 or n.split(".")[0] == "tests")]


def top_level_definitions(path: Path) -> dict[str, ast.AST]:
    """name → the function or class defined at the top level of `path`."""
    tree = ast.parse(path.read_text(), str(path))
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _body_shape(node: ast.AST) -> str:
    """A definition's body without its docstring, as `ast.dump` writes it: the same logic under another name."""
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return ast.dump(ast.Module(body=body, type_ignores=[]))


def helper_copies(support: Path = SUPPORT, tests: Path = TESTS) -> list[str]:
    """Helpers of tests/support/ written again: a name two support modules define, or a test file's top-level
    function or class that has a support helper's name or its very body (under any name)."""
    helpers: dict[str, tuple[Path, ast.AST]] = {}
    found = []
    for module in sorted(support.glob("*.py")):
        for name, node in top_level_definitions(module).items():
            if name in helpers and not name.startswith("_"):
                found.append(f"{name}: in {helpers[name][0].name} and {module.name}")
            helpers.setdefault(name, (module, node))
    shapes = {_body_shape(node): name for name, (_, node) in helpers.items() if len(node.body) > 1}
    for path in sorted(tests.glob("*.py")):
        for name, node in top_level_definitions(path).items():
            if name in helpers:
                found.append(f"{path.name} defines {name}: support.{helpers[name][0].stem} has it")
            elif _body_shape(node) in shapes:
                found.append(f"{path.name} defines {name}: the body of support's {shapes[_body_shape(node)]}")
    return found


# ---------------------------------------------------------------------------------------------------- the rules
def test_no_test_imports_another_test_module():
    files = tree_files()
    assert len(files) > 30 and any(p.parent == SUPPORT for p in files)   # the scan saw the test tree
    bad = [f"{p.relative_to(TESTS)} imports {', '.join(names)}" for p in files if (names := imported_test_modules(p))]
    assert not bad, "; ".join(bad) + " (move what is shared to tests/support/, fixtures to tests/conftest.py)"


def test_helpers_live_in_support_and_nowhere_else():
    loose = sorted(p.name for p in TESTS.glob("*.py") if not p.name.startswith("test_") and p.name != "conftest.py")
    assert not loose, f"helper modules beside the tests: {loose} (they belong in tests/support/)"
    assert (SUPPORT / "__init__.py").exists() and len(list(SUPPORT.glob("*.py"))) >= 5
    bad = helper_copies()
    assert not bad, "; ".join(bad)


def test_the_checks_see_what_they_forbid(tmp_path):
    """The checkers themselves, on a tree that breaks every rule once."""
    (tmp_path / "support").mkdir()
    (tmp_path / "support" / "net.py").write_text("import socket\n\n\ndef free_port():\n    s = socket.socket()\n"
                                                 "    s.bind(('127.0.0.1', 0))\n    return s.getsockname()[1]\n")
    (tmp_path / "support" / "other.py").write_text("def free_port():\n    return 0\n")
    (tmp_path / "test_a.py").write_text("from test_b import x\nimport tests.test_c\nfrom conftest import y\n"
                                        "import importlib\nimportlib.import_module('test_d')\nfrom support.net import z\n")
    (tmp_path / "test_b.py").write_text("def free_port():\n    pass\n\n\n"
                                        "def port():\n    s = socket.socket()\n    s.bind(('127.0.0.1', 0))\n"
                                        "    return s.getsockname()[1]\n")
    assert imported_test_modules(tmp_path / "test_a.py") == ["test_b", "tests.test_c", "conftest", "test_d"]
    assert imported_test_modules(tmp_path / "test_b.py") == []
    assert helper_copies(tmp_path / "support", tmp_path) == [
        "free_port: in net.py and other.py", "test_b.py defines free_port: support.net has it",
        "test_b.py defines port: the body of support's free_port"]


# ---------------------------------------------------------------------------------------------------- the helpers
def test_wait_http_returns_the_body_once_the_server_answers(tmp_path):
    (tmp_path / "health").write_text("ok")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/health", server, timeout=60) == b"ok"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_wait_http_fails_the_test_with_the_log_when_the_server_exits(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("address already in use\n")
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait(timeout=30)
    with pytest.raises(AssertionError, match=r"exited \(3\).*address already in use"):
        wait_http(f"http://127.0.0.1:{free_port()}/", dead, timeout=60, log=log)


def test_support_paths_point_at_the_checkout():
    """tests/support/ is one level deeper than the test modules: its REPO must still be the checkout."""
    from support.transfer import BIN, REPO

    assert REPO == TESTS.parent and (REPO / "MLproject").is_file() and (BIN / "mlflow").exists()
