"""Small builders shared by the persistence tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cds_service.models import FeedbackItem
from cds_service.persistence import AuditRecord


def fb(
    card: str, outcome: str = "overridden", ts: str = "2025-05-01T14:03:22Z", **extra: Any
) -> FeedbackItem:
    return FeedbackItem.model_validate({"card": card, "outcome": outcome, "outcomeTimestamp": ts, **extra})


def reason(code: str | None = None, display: str | None = None, comment: str | None = None) -> dict[str, Any]:
    coding = {"system": "https://cds.example.com/override-reasons"}
    if code:
        coding["code"] = code
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"reason": coding} if code else {}
    if comment:
        out["userComment"] = comment
    return {"overrideReason": out}


def audit(
    cards: list[tuple[str, str]],
    at: datetime | None = None,
    hook_instance: str | None = None,
    service: str = "va-safety",
) -> AuditRecord:
    """An audit record for cards given as (card uuid, rule id)."""
    return AuditRecord(
        hook_instance=hook_instance or str(uuid.uuid4()),
        service_id=service,
        hook="order-sign",
        received_at=at or datetime.now(UTC),
        duration_ms=12.5,
        patient_hash="hmac-sha256:3f2a",
        cards=[{"uuid": c, "rule": r, "indicator": "warning", "suggestions": []} for c, r in cards],
        fhir_outcomes={"patient": "prefetched"},
    )


def card_id() -> str:
    return str(uuid.uuid4())
