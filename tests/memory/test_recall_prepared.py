"""The alert-memory lookup runs as SQL compiled once (cds_service.persistence.prepared): it must return
exactly what the same statement returns through SQLAlchemy's ordinary execution, on SQLite and PostgreSQL,
for a chart with every kind of row memory reads (overrides with reasons, accepted suggestions, repeated
warnings, changed evidence, other patients, issuers and tenants)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds_service.models import FeedbackItem
from cds_service.persistence import AuditRecord, Store
from cds_service.persistence.store import _NEVER, RecalledCard, _recall_statement, _RecallRow
from tests.persistence.helpers import card_id

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PATIENT = "hmac-sha256:prepared"
SERVICE = "va-pre"


def _record(minutes_ago: int, cards: list[dict[str, Any]], **kw: Any) -> AuditRecord:
    return AuditRecord(
        hook_instance=card_id(),
        service_id=kw.pop("service", SERVICE),
        hook=kw.pop("hook", "order-sign"),
        received_at=NOW - timedelta(minutes=minutes_ago),
        duration_ms=4.0,
        patient_hash=kw.pop("patient", PATIENT),
        cards=cards,
        **kw,
    )


def _card(rule: str, fingerprint: str, indicator: str = "warning", n_suggestions: int = 0) -> dict[str, Any]:
    ids = [card_id() for _ in range(n_suggestions)]
    return {
        "uuid": card_id(),
        "rule": rule,
        "indicator": indicator,
        "suggestions": ids,
        "suggestion_keys": [f"key-{i}" for i in range(n_suggestions)],
        "fingerprint": fingerprint,
    }


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upgrade()
    yield s
    s.close()


@pytest.fixture
def chart(store: Store) -> dict[str, dict[str, Any]]:
    """A chart's history: returns the cards by name, for feedback."""
    cards = {
        "old-inr": _card("pre.coag.inr", "fp-old"),  # evidence since changed
        "inr-1": _card("pre.coag.inr", "fp-inr"),
        "inr-2": _card("pre.coag.inr", "fp-inr"),
        "checklist": _card("pre.checklist", "fp-list", "info", n_suggestions=3),
        "ct": _card("pre.imaging.ct", "fp-ct"),
        "elsewhere": _card("pre.coag.inr", "fp-inr"),  # another tenant's card, same evidence
        "other-patient": _card("pre.coag.inr", "fp-inr"),
    }
    records = [
        _record(600, [cards["old-inr"]]),
        _record(300, [cards["inr-1"], cards["checklist"]]),
        _record(200, [cards["ct"]], hook="patient-view"),
        _record(100, [cards["inr-2"]]),
        _record(90, [cards["elsewhere"]], tenant="t2"),
        _record(80, [cards["other-patient"]], patient="hmac-sha256:someone-else"),
    ]
    with store._transaction("seed") as conn:
        store.write_audits(conn, records)
    when = (NOW - timedelta(minutes=50)).isoformat()
    items = [
        FeedbackItem.model_validate(
            {
                "card": cards["inr-1"]["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": when,
                "overrideReason": {
                    "reason": {"system": "https://va-cds.example/why", "code": "benefit", "display": "Ok"},
                    "userComment": "INR rechecked by phone",
                },
            }
        ),
        FeedbackItem.model_validate(
            {
                "card": cards["checklist"]["uuid"],
                "outcome": "accepted",
                "outcomeTimestamp": when,
                "acceptedSuggestions": [{"id": s} for s in cards["checklist"]["suggestions"][:2]],
            }
        ),
        FeedbackItem.model_validate(
            {"card": cards["elsewhere"]["uuid"], "outcome": "overridden", "outcomeTimestamp": when}
        ),
    ]
    store.save_feedback(SERVICE, items, NOW - timedelta(minutes=49))
    return cards


def _through_sqlalchemy(store: Store, current: dict[str, str], repeat_since: datetime | None) -> list[Any]:
    params = {
        "patient": PATIENT,
        "issuer": "",
        "tenant": "",
        "since": NOW - timedelta(days=30),
        "repeat_since": _NEVER if repeat_since is None else repeat_since,
        "rules": sorted(current),
        "fingerprints": sorted(set(current.values())),
        "max_calls": 200,
    }
    with store._read("reference") as conn:
        return [tuple(row) for row in conn.execute(store._recall, params).all()]


def _flatten(found: list[RecalledCard]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for c in found:
        head = (c.uuid, c.rule_id, c.fingerprint, c.indicator, c.memory, list(c.suggestions))
        tail = (list(c.suggestion_keys), c.shown_at, c.hook)
        if not c.feedback:
            out.append((*head, *tail, None, None, None, None, None, None))
        for f in c.feedback:
            accepted = list(f.accepted_suggestions) if f.accepted_suggestions else None
            fb = (f.outcome, f.outcome_at, f.reason_code, f.reason_display, f.user_comment, accepted)
            out.append((*head, *tail, *fb))
    return out


def test_rows_are_read_by_the_names_the_statement_selects() -> None:
    expanding = [c.name for c in _recall_statement().selected_columns]
    as_run = [c.name for c in _recall_statement({"rules": 2, "fingerprints": 3}).selected_columns]
    assert list(_RecallRow._fields) == expanding == as_run


@pytest.mark.parametrize("view", [False, True], ids=["order-sign", "patient-view"])
def test_prepared_lookup_returns_what_sqlalchemy_returns(
    store: Store, chart: dict[str, dict[str, Any]], view: bool
) -> None:
    current = {"pre.coag.inr": "fp-inr", "pre.checklist": "fp-list", "pre.imaging.ct": "fp-ct"}
    repeat_since = NOW - timedelta(hours=24) if view else None
    found = store.recall(PATIENT, "", "", current, NOW - timedelta(days=30), repeat_since)
    reference = _through_sqlalchemy(store, current, repeat_since)
    assert reference, "the seeded chart must give the lookup something to return"
    flat = _flatten(found)
    # The reference's JSON lists come back as lists, its empty accepted list as None: compare alike.
    normalised = [(*row[:14], list(row[14]) if row[14] else None) for row in reference]
    assert flat == normalised
    # What memory relies on, stated plainly: the override (with its reason) and the accepted orders are
    # there, typed; the other tenant's feedback and the other patient's card are not.
    by_uuid = {c.uuid: c for c in found}
    override = by_uuid[chart["inr-1"]["uuid"]].feedback[0]
    assert (override.outcome, override.reason_code, override.user_comment) == (
        "overridden",
        "benefit",
        "INR rechecked by phone",
    )
    assert override.outcome_at == NOW - timedelta(minutes=50)
    assert override.outcome_at.tzinfo is not None
    accepted = by_uuid[chart["checklist"]["uuid"]].feedback[0]
    assert accepted.accepted_suggestions == tuple(chart["checklist"]["suggestions"][:2])
    assert by_uuid[chart["checklist"]["uuid"]].suggestion_keys == ("key-0", "key-1", "key-2")
    assert chart["elsewhere"]["uuid"] not in by_uuid and chart["other-patient"]["uuid"] not in by_uuid
    assert chart["old-inr"]["uuid"] not in by_uuid  # before the evidence changed
    # A patient-view also brings back the latest warning shown (a repeat), even without feedback.
    assert (chart["inr-2"]["uuid"] in by_uuid) is view


def test_prepared_lookup_for_one_rule_and_for_many(store: Store, chart: dict[str, dict[str, Any]]) -> None:
    # Each list length is its own compiled statement: a shorter call after a longer one must not reuse it.
    many = {"pre.coag.inr": "fp-inr", "pre.checklist": "fp-list", "pre.imaging.ct": "fp-ct"}
    one = {"pre.checklist": "fp-list"}
    since = NOW - timedelta(days=30)
    assert {c.rule_id for c in store.recall(PATIENT, "", "", many, since, None)} == {
        "pre.coag.inr",
        "pre.checklist",
    }
    assert [c.uuid for c in store.recall(PATIENT, "", "", one, since, None)] == [chart["checklist"]["uuid"]]
    changed = {"pre.coag.inr": "fp-newer"}
    assert store.recall(PATIENT, "", "", changed, since, None) == []


def test_a_database_error_in_the_lookup_is_store_unavailable(store: Store) -> None:
    # The lookup runs on the driver's cursor: its errors must still reach memory as StoreUnavailable
    # (memory then answers with full cards), not as a raw driver exception that would become a 500.
    from sqlalchemy import text

    from cds_service.persistence import StoreUnavailable

    with store._transaction("break") as conn:
        conn.execute(text("DROP TABLE feedback"))
    with pytest.raises(StoreUnavailable, match="recalling alert memory"):
        store.recall(PATIENT, "", "", {"pre.coag.inr": "fp"}, NOW - timedelta(days=30), None)


def _busy_chart(store: Store, calls: int, *, change_at: int | None = None) -> str:
    """`calls` calls of one rule, the oldest overridden; `change_at`: that many calls ago the evidence
    was different (fingerprint fp-then), before and after it fp-now. Returns the overridden card's uuid."""
    records = [
        _record(minutes, [_card("pre.coag.inr", "fp-then" if minutes == change_at else "fp-now")])
        for minutes in range(calls, 0, -1)
    ]
    with store._transaction("seed") as conn:
        store.write_audits(conn, records)
    oldest = records[0].cards[0]["uuid"]
    item = {"card": oldest, "outcome": "overridden", "outcomeTimestamp": NOW.isoformat()}
    store.save_feedback(SERVICE, [FeedbackItem.model_validate(item)], NOW)
    return str(oldest)


def test_a_busy_chart_is_read_only_as_far_back_as_max_calls(store: Store) -> None:
    # 300 calls: the override on the oldest lies beyond the latest 200, so it is forgotten and the card
    # would come back in full (never hidden); a site allowing 400 calls still finds it.
    overridden = _busy_chart(store, 300)
    since = NOW - timedelta(days=30)
    current = {"pre.coag.inr": "fp-now"}
    assert store.recall(PATIENT, "", "", current, since, None) == []  # default: 200
    found = store.recall(PATIENT, "", "", current, since, None, max_calls=400)
    assert [c.uuid for c in found] == [overridden]
    assert found[0].feedback[0].outcome == "overridden"


def test_changed_evidence_inside_the_bound_still_ends_the_override(store: Store) -> None:
    _busy_chart(store, 150, change_at=20)  # the evidence changed 20 calls ago, after the override
    since = NOW - timedelta(days=30)
    assert store.recall(PATIENT, "", "", {"pre.coag.inr": "fp-now"}, since, None, max_calls=400) == []
