"""Where the shared fixtures are: `../shared/` beside the checkout (as in CI's fresh clone)."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures"
SYNTHEA = FIXTURES / "synthea"
SANDBOX = FIXTURES / "sandbox-requests"
