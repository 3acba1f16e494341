"""`va-cds report overrides` shows the repeat burden per rule: cards that repeated an earlier card's
fingerprint for the same chart, and how many of them memory spared (after real HTTP calls)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from cds_service import report
from tests.memory.conftest import ANTICOAG, INR_HIGH, Chart, MemoryClient, by_rule, inr, warfarin


def test_repeat_burden_counts_repeats_and_what_memory_spared(mem: MemoryClient, db_url: str) -> None:
    chart = Chart(labs=(inr(3.3),))
    first = by_rule(mem.call(chart))
    mem.call(chart)  # repeat 1 for both rules, nothing spared yet (no feedback)
    mem.feedback(first[ANTICOAG])
    mem.feedback(first[INR_HIGH])
    mem.call(chart)  # repeat 2: the warning demoted (spared), the critical only noted (not spared)
    # A new warfarin order: not a repeat for the anticoagulant card; the INR card repeats a third time.
    mem.call(replace(chart, meds=(warfarin("mr5", authored="2026-11-25"),)))
    mem.call(Chart(patient_id="p2", labs=(inr(3.3),)))  # another chart: not a repeat either

    stats = {s.rule_id: s for s in mem.state.store.override_report(None)}
    assert (stats[ANTICOAG].repeats, stats[ANTICOAG].spared) == (2, 1)
    assert (stats[INR_HIGH].repeats, stats[INR_HIGH].spared) == (3, 0)

    out = io.StringIO()
    assert report.main(["overrides", "--database-url", db_url], out, io.StringIO()) == 0
    lines = out.getvalue().splitlines()
    assert "repeat burden" in lines[0]
    row = next(line for line in lines if line.startswith(ANTICOAG))
    assert "2 (1 spared)" in row

    out = io.StringIO()
    assert report.main(["overrides", "--csv", "-", "--database-url", db_url], out) == 0
    rows = {r["rule_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert (rows[ANTICOAG]["repeats"], rows[ANTICOAG]["repeats_spared"]) == ("2", "1")
