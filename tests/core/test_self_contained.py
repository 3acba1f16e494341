"""Nothing under tests/ or benchmarks/ reads outside the repository: a fresh clone must pass on its own.

The scan reads every Python file of the two trees (with `ast`, so comments and docstrings do not count) and
flags a path that leaves the checkout:

* `Path(__file__).parents[N]` or a `.parent.parent…` chain that climbs above the repository root;
* a relative path literal that climbs (`"../elsewhere/fixtures"`, `".."`, `os.pardir`);
* an absolute literal inside the folder that holds the checkout (its siblings, e.g. `/work/elsewhere/…`) or
  under `/work/`.

URL paths such as `"/static/../app.py"` (a traversal probe sent to the app) are absolute and outside those
folders, so they pass. This file holds examples of what it flags, so it scans everything but itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ("tests", "benchmarks")
_CLIMB = re.compile(r"(^|[/\\])\.\.([/\\]|$)")


def _file_anchor(node: ast.AST) -> bool:
    """`__file__`, possibly wrapped: Path(__file__), Path(__file__).resolve(), .absolute()."""
    while True:
        if isinstance(node, ast.Name):
            return node.id == "__file__"
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("resolve", "absolute"):
                node = node.func.value
            elif node.args:
                node = node.args[0]
            else:
                return False
        else:
            return False


def _levels_up(node: ast.AST) -> int | None:
    """How many directories above the file's own folder an expression reaches (None: not from __file__)."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
        if node.value.attr == "parents" and _file_anchor(node.value.value):
            index = node.slice
            if isinstance(index, ast.Constant) and isinstance(index.value, int):
                return index.value
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        count, inner = 0, node
        while isinstance(inner, ast.Attribute) and inner.attr == "parent":
            count, inner = count + 1, inner.value
        if _file_anchor(inner):
            return count - 1
    return None


def escapes(source: str, relpath: Path, root: Path = ROOT) -> list[str]:
    """Lines of `source` (a file at `relpath` inside `root`) whose paths leave `root`."""
    depth = len(relpath.parts) - 1  # folders between the root and the file
    outside_prefixes = (str(root.parent).rstrip("/") + "/", "/work/")
    found: list[str] = []
    tree = ast.parse(source)
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        where = f"{relpath}:{getattr(node, 'lineno', '?')}"
        up = _levels_up(node)
        if up is not None and up > depth:
            found.append(f"{where}: goes {up} folders above its own; the root is {depth} above")
        if isinstance(node, ast.Attribute) and node.attr == "pardir":
            found.append(f"{where}: os.pardir")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            if text.startswith("/"):
                if text.startswith(outside_prefixes) and not text.startswith(str(root) + "/"):
                    found.append(f"{where}: absolute path outside the checkout {text!r}")
            elif _CLIMB.search(text) and "\n" not in text:
                found.append(f"{where}: relative path climbing out {text!r}")
    return found


def _sources() -> list[Path]:
    me = Path(__file__).resolve()
    return sorted(
        p
        for tree in TREES
        for p in (ROOT / tree).rglob("*.py")
        if p.resolve() != me and "fixtures" not in p.relative_to(ROOT).parts
    )


def test_tests_and_benchmarks_read_nothing_outside_the_repository() -> None:
    sources = _sources()
    assert len(sources) > 20  # the scan really read the trees
    problems = [
        line for path in sources for line in escapes(path.read_text(encoding="utf-8"), path.relative_to(ROOT))
    ]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        'X = Path(__file__).resolve().parents[3] / "elsewhere" / "fixtures"',
        "X = Path(__file__).parent.parent.parent.parent",
        'X = Path("../elsewhere/fixtures/synthea")',
        'X = Path(__file__).parent / ".." / ".." / ".."',
        'X = "/work/elsewhere/fixtures/sandbox-jwks.json"',
        "X = os.path.join(HERE, os.pardir, os.pardir)",
    ],
)
def test_the_scan_flags_paths_that_leave_the_repository(line: str) -> None:
    assert escapes(line, Path("tests/core/test_x.py"), root=Path("/srv/checkout")) != []


@pytest.mark.parametrize(
    "line",
    [
        'X = Path(__file__).resolve().parents[2] / "tests" / "fixtures"',  # the root itself
        "X = Path(__file__).parent.parent",
        'r = client.get("/static/../app.py")',  # a URL path sent to the app
        'X = "/usr/lib/postgresql"',
        'X = "/srv/checkout/tests/fixtures/x.json"',  # inside the checkout
    ],
)
def test_the_scan_lets_paths_inside_the_repository_pass(line: str) -> None:
    assert escapes(line, Path("tests/core/test_x.py"), root=Path("/srv/checkout")) == []
