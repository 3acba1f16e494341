"""Code shape: nothing the app builds imports the app back (the shared State lives in cds_service.state)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cds_service"
# Entry points may import the app; the modules it is built from must not (not even for type hints).
ENTRY_POINTS = {"app.py", "cli.py", "__main__.py"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ENTRY_POINTS),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_the_app_uses_imports_the_app(path: Path) -> None:
    assert "cds_service.app" not in _imports(path)


def test_state_imports_without_the_app_or_its_routes() -> None:
    code = (
        "import sys, cds_service.state; print(sorted(m for m in sys.modules if m.startswith('cds_service.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = out.stdout
    assert "cds_service.app'" not in loaded and "cds_service.docs_pages" not in loaded
    assert "cds_service.checklist" not in loaded


def test_fhir_mappings_imports_nothing_above_it() -> None:
    code = (
        "import sys, fhir_mappings.extract; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cds_service', 'hooks')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
