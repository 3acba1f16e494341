"""The alert-burden report (`python -m benchmarks.burden`) runs and has its sections. Its figures are the
report's business, not this test's: tests pin behaviour, the report shows the burden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.burden import CALLS, FIXTURES, Burden, Card, load_record, report

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "# Alert burden on the Synthea fixture records",
    "## Cards per call (min / median / max over records)",
    "## Interruptive cards per VA order",
    "## Critical cards",
    "## Top rules",
    "## Targets",
)


def test_one_record_through_every_call_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "burden.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.burden", "--records", "Luigi_*.json", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text in proc.stdout
    for section in SECTIONS:
        assert section in text, section
    for label, _, _ in CALLS:
        assert f"| {label} |" in text, label
    assert "1 records, 5 calls" in text  # every hook was called for the record
    assert "| Luigi_Wiegand | 2021-" in text  # evaluated as of the record's own last date
    assert "every call answered 200: **yes**" in text


def test_targets_judge_the_median_and_stale_critical_cards() -> None:
    rec = load_record(next(FIXTURES.glob("Luigi_*.json")))

    def card(rule: str, indicator: str, age: float | None) -> Card:
        return Card(rec.name, CALLS[0][0], rule, indicator, "s", age)

    quiet, met = report(Burden([rec], [card("pre.checklist", "info", None)], 5, []))
    assert met and "**met**" in quiet and "NOT met" not in quiet
    loud = [card("pre.coag.antithrombotic-active", "warning", 3), card("pre.x", "warning", 3)]
    text, met = report(Burden([rec], loud, 5, []))
    assert not met and "<= 1: 2 — **NOT met**" in text
    stale = [card("pre.indication.neuro-red-flags", "critical", 4000)]
    text, met = report(Burden([rec], stale, 5, []))
    assert not met and "OLDER THAN WINDOW" in text
    undated = [card("pre.allergy.cement", "critical", None)]  # no window: not judged on age
    assert report(Burden([rec], undated, 5, []))[1]
