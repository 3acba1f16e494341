"""Shared builders for the page tests: a real va-preprocedure order-sign request and a settable clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PATIENT_ID = "p1"
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
SERVICE_URL = "/cds-services/va-preprocedure-order-sign"


class Clock:
    """The app's clock, movable by tests (expiry without sleeping)."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def va_draft_order() -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-va-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
    }


def order_sign_request(discovery: dict[str, Any]) -> dict[str, Any]:
    """order-sign with a VA draft and every prefetch key of the service's discovery entry present
    (empty searchsets; the patient key a Patient)."""
    entry = next(s for s in discovery["services"] if s["id"] == "va-preprocedure-order-sign")
    prefetch: dict[str, Any] = {
        key: {"resourceType": "Bundle", "type": "searchset", "entry": []} for key in entry["prefetch"]
    }
    prefetch["patient"] = {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "gender": "female",
        "birthDate": "1948-03-02",
    }
    return {
        "hook": "order-sign",
        "hookInstance": HOOK_INSTANCE,
        "context": {
            "userId": "Practitioner/doc-1",
            "patientId": PATIENT_ID,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": va_draft_order()}],
            },
        },
        "prefetch": prefetch,
    }


def checklist_card(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in cards if c["extension"]["org.va-cds.rule"] == "pre.checklist")


def checklist_link(cards: list[dict[str, Any]]) -> str:
    links = checklist_card(cards).get("links") or []
    return next(link["url"] for link in links if "/checklist/" in link["url"])


_URL_ATTR = re.compile(r"""\b(?:src|href|action)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def foreign_urls(html: str, base: str) -> list[str]:
    """Every src/href/action that leaves the app (anything absolute not under `base`)."""
    out = []
    for url in _URL_ATTR.findall(html):
        if url.startswith(("data:", "#")) or url.startswith(base.rstrip("/") + "/"):
            continue
        if url.startswith("/") and not url.startswith("//"):
            continue  # same-origin path
        out.append(url)
    return out
