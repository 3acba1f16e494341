"""Bounds on feedback (issue 16 item 4): each oversized part gets a 4xx saying what is too large, and
nothing of the request is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.memory.conftest import SERVICE_ID, Clock, make_app_client

URL = f"/cds-services/{SERVICE_ID}/feedback"
CARD = "5f0c6d3e-1c1e-4a57-9a43-0d7b7a1c2b11"


def item(**extra: Any) -> dict[str, Any]:
    return {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2026-11-28T09:00:00Z", **extra}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_app_client(f"sqlite:///{tmp_path / 'db.sqlite'}", Clock(), tmp_path) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"feedback": [item() for _ in range(101)]}, 400, "at most 100"),
        (
            {"feedback": [item(overrideReason={"userComment": "x" * 2001})]},
            400,
            "feedback.0.overrideReason.userComment",
        ),
        (
            {"feedback": [item(overrideReason={"reason": {"system": "s", "code": "c" * 501}})]},
            400,
            "reason.code is longer than 500",
        ),
        (
            {"feedback": [item(overrideReason={"reason": {"system": "s", "code": {"nested": "x"}}})]},
            400,
            "plain value",
        ),
        (
            {"feedback": [item(outcome="accepted", acceptedSuggestions=[CARD] * 51)]},
            400,
            "feedback.0.acceptedSuggestions",
        ),
        ({"feedback": [item(card="c" * 201)]}, 400, "feedback.0.card"),
    ],
    ids=["items", "comment", "reason-field", "reason-nested", "accepted", "card-id"],
)
def test_oversized_feedback_gets_a_400_naming_the_field(
    client: TestClient, body: dict[str, Any], status: int, says: str
) -> None:
    r = client.post(URL, json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["issue"][0]["diagnostics"]
    assert client.app.state.va.store.override_report(None) == []  # type: ignore[attr-defined]


def test_a_feedback_body_over_the_limit_gets_413_before_it_is_read(client: TestClient) -> None:
    padding = "y" * 300_000
    r = client.post(URL, json={"feedback": [item()], "padding": padding})
    assert r.status_code == 413
    assert "larger than 256000 bytes" in r.json()["issue"][0]["diagnostics"]


def test_feedback_at_the_bounds_is_accepted(client: TestClient) -> None:
    full = item(
        overrideReason={"reason": {"system": "s" * 500, "code": "c" * 500}, "userComment": "z" * 2000},
    )
    r = client.post(
        URL,
        json={
            "feedback": [full] + [item(outcomeTimestamp=f"2026-11-28T09:00:{n:02d}Z") for n in range(1, 60)]
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 60, "stored": 60}
