"""Where the test fixtures are: `tests/fixtures/`, inside the repository (a fresh clone has nothing beside).

They are copies of the project's shared material: captured CDS Hooks Sandbox requests, the sandbox's public
JWKS and six Synthea records (Apache-2.0, licence notice beside them).
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SYNTHEA = FIXTURES / "synthea"
SANDBOX = FIXTURES / "sandbox-requests"
