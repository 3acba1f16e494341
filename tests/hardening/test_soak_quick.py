"""The soak script in quick mode (~300 mixed requests at concurrency 50, uvicorn subprocess, loopback):
no 5xx, no transport error on valid input, every acknowledged feedback row stored, exit status 0.

No timing threshold is asserted (CI runners vary); the figures go to the test output. The full run is
`make soak` (3000 requests), whose Markdown block goes in the README.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_quick_mode_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert "5xx: 0" in lines, out
    assert "transport: 0" in lines, out
    assert "5xx on valid input: 0" in lines, out
    assert any(line.startswith("feedback acknowledged:") and line.endswith("missing: 0") for line in lines)
    assert "| Figure | Value |" in lines  # the README block is printed
