"""Override analytics on a seeded history: Store.override_report and `va-cds report overrides`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_service import report
from cds_service.persistence import UNATTRIBUTED, RuleStats, Store
from tests.persistence.helpers import audit, fb, reason

JAN = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)
MAR = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
FEEDBACK_AT = datetime(2025, 3, 5, tzinfo=UTC)
PALLIATIVE = "Patient is receiving palliative care"

# Card ids (uuids) named for readability.
A1, A2, A3, A4, A5, A6, STRAY = (f"00000000-0000-4000-8000-00000000000{i}" for i in range(1, 8))


def seed(store: Store) -> None:
    """opioid-mme shown 4× (A1 Jan; A3, A4, A6 Mar), anticoag-hold 2× (A2 Jan, A5 Mar)."""
    store.record_audit(audit([(A1, "opioid-mme"), (A2, "anticoag-hold")], at=JAN))
    store.record_audit(audit([(A3, "opioid-mme"), (A4, "opioid-mme"), (A5, "anticoag-hold")], at=MAR))
    store.record_audit(audit([(A6, "opioid-mme")], at=MAR))
    items = [
        fb(A1, **reason("palliative", PALLIATIVE)),
        # same coded reason without display, from another client: still the same reason
        fb(A3, **reason("palliative", comment="hospice")),
        fb(A4, **reason(comment="dose already reduced by pain team")),
        # A4 reported again later: one card, counted once
        fb(A4, ts="2025-05-01T15:00:00Z", **reason(comment="dose already reduced by pain team")),
        fb(A6, "accepted", acceptedSuggestions=[{"id": "00000000-0000-4000-8000-0000000000aa"}]),
        fb(A2, "accepted", acceptedSuggestions=[]),
        fb(A5, **reason("bridging", "Bridging therapy planned")),
        fb(STRAY, **reason("other", "Other")),
    ]
    assert store.save_feedback("va-safety", items, FEEDBACK_AT) == len(items)
    # The EHR resends the first batch: the report must not change.
    assert store.save_feedback("va-safety", items, FEEDBACK_AT) == 0


def test_report_counts_and_rates_on_a_seeded_history(store: Store) -> None:
    seed(store)
    stats = {s.rule_id: s for s in store.override_report(None)}
    assert stats["opioid-mme"] == RuleStats(
        rule_id="opioid-mme",
        shown=4,
        accepted=1,
        overridden=3,
        top_reasons=((PALLIATIVE, 2), ("dose already reduced by pain team", 1)),
    )
    assert stats["opioid-mme"].override_rate == pytest.approx(0.75)
    assert stats["opioid-mme"].accept_rate == pytest.approx(0.25)
    assert stats["anticoag-hold"] == RuleStats(
        "anticoag-hold", shown=2, accepted=1, overridden=1, top_reasons=(("Bridging therapy planned", 1),)
    )
    assert stats["anticoag-hold"].override_rate == pytest.approx(0.5)
    # feedback for a card we never audited is still visible, not silently dropped
    assert stats[UNATTRIBUTED] == RuleStats(UNATTRIBUTED, 0, 0, 1, (("Other", 1),))
    assert stats[UNATTRIBUTED].override_rate is None
    # the most overridden rule first, the unattributed line last
    assert [s.rule_id for s in store.override_report(None)] == ["opioid-mme", "anticoag-hold", UNATTRIBUTED]


def test_report_since_only_counts_cards_shown_since(store: Store) -> None:
    seed(store)
    stats = {s.rule_id: s for s in store.override_report(datetime(2025, 2, 1, tzinfo=UTC))}
    assert (stats["opioid-mme"].shown, stats["opioid-mme"].accepted, stats["opioid-mme"].overridden) == (
        3,
        1,
        2,
    )
    assert stats["opioid-mme"].override_rate == pytest.approx(2 / 3)
    assert (stats["anticoag-hold"].shown, stats["anticoag-hold"].overridden) == (1, 1)
    assert stats["anticoag-hold"].override_rate == pytest.approx(1.0)
    assert store.override_report(datetime(2026, 1, 1, tzinfo=UTC)) == []


def test_cli_prints_an_aligned_table(store: Store, db_url: str) -> None:
    seed(store)
    out, err = io.StringIO(), io.StringIO()
    assert report.main(["overrides", "--database-url", db_url], out, err) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "rule",
        "shown",
        "accepted",
        "overridden",
        "override",
        "rate",
        "repeat",
        "burden",
        "top",
        "override",
        "reasons",
    ]
    row = next(line for line in lines if line.startswith("opioid-mme"))
    assert row.split()[:5] == ["opioid-mme", "4", "1", "3", "75.0%"]
    assert f"{PALLIATIVE} (2); dose already reduced by pain team (1)" in row
    # aligned: the right-aligned rate column ends at the same offset in the header and every row
    ends = {line.index("75.0%") + 5 for line in lines if "75.0%" in line}
    ends |= {lines[0].index("override rate") + len("override rate")}
    assert len(ends) == 1


def test_cli_csv_to_stdout_and_to_a_file(store: Store, db_url: str, tmp_path: Path) -> None:
    seed(store)
    out = io.StringIO()
    assert (
        report.main(["overrides", "--since", "2025-02-01", "--csv", "-", "--database-url", db_url], out) == 0
    )
    rows = {r["rule_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert rows["anticoag-hold"]["override_rate"] == "1.0000"
    assert (rows["opioid-mme"]["shown"], rows["opioid-mme"]["overridden"]) == ("3", "2")
    assert rows["opioid-mme"]["override_rate"] == "0.6667"
    assert rows[UNATTRIBUTED]["override_rate"] == ""  # nothing shown: no rate, not 0

    path = tmp_path / "overrides.csv"
    table = io.StringIO()
    assert report.main(["overrides", "--csv", str(path), "--database-url", db_url], table, io.StringIO()) == 0
    assert "opioid-mme" in table.getvalue()  # the table is still printed
    with path.open(newline="") as fh:
        file_rows = {r["rule_id"]: r for r in csv.DictReader(fh)}
    assert file_rows["opioid-mme"]["top_reason_1"] == PALLIATIVE
    assert file_rows["opioid-mme"]["top_reason_1_count"] == "2"


def test_cli_csv_neutralises_formulas_in_comments(store: Store, db_url: str) -> None:
    card = "00000000-0000-4000-8000-0000000000ff"
    store.record_audit(audit([(card, "opioid-mme")], at=MAR))
    store.save_feedback("va-safety", [fb(card, **reason(comment='=HYPERLINK("http://evil")'))], FEEDBACK_AT)
    out = io.StringIO()
    assert report.main(["overrides", "--csv", "-", "--database-url", db_url], out) == 0
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["top_reason_1"] == '\'=HYPERLINK("http://evil")'


def test_db_upgrade_cli_then_report(db_url: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert report.main(["overrides", "--database-url", db_url], out, err) == 1  # no schema yet
    assert "db upgrade" in err.getvalue()
    assert report.db_main(["upgrade", "--database-url", db_url], io.StringIO(), io.StringIO()) == 0
    assert report.db_main(["upgrade", "--database-url", db_url], io.StringIO(), io.StringIO()) == 0
    out = io.StringIO()
    assert report.main(["overrides", "--database-url", db_url], out) == 0
    assert out.getvalue() == "no cards recorded\n"


def test_cli_usage_errors() -> None:
    err = io.StringIO()
    assert (
        report.main(
            ["overrides", "--since", "last tuesday", "--database-url", "sqlite://"], io.StringIO(), err
        )
        == 2
    )
    assert report.main(["overrides", "--database-url", "mysql://x@y/z"], io.StringIO(), err) == 2
    assert report.db_main([], io.StringIO(), err) == 2
