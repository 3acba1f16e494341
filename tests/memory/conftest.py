"""Fixtures for the alert-memory tests: a database of each kind, a small clinical service whose cards the
tests control through the chart they send, an adjustable clock, and an HTTP client that waits for the
audit record of each call (written after the response) before the next one.

Every database test runs on SQLite and on a real PostgreSQL server (tests/pg_server.py); without one the
postgres variants skip, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.contracts import CardSpec, HookInput, RuleDoc, ServiceDefinition, SuggestionSpec
from cds_service.settings import Settings
from tests.persistence.conftest import launch_or_skip
from tests.pg_server import PostgresServer

#: One service per hook (catalog V2.1), as the clinical services are: memory works across them (it is
#: per chart, not per service), feedback is bound to the service that sent the card.
SERVICE_IDS = {"order-sign": "memory-test-order-sign", "patient-view": "memory-test-patient-view"}
SERVICE_ID = SERVICE_IDS["order-sign"]
HASH_KEY = "memory-test-hash-key"
START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

ANTICOAG = "test.anticoagulant"
INR_HIGH = "test.inr-high"
INR_ORDER = "Order INR"


def _lab_order(patient_id: str, loinc: str = "6301-6", display: str = "INR") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def _handler(inp: HookInput) -> list[CardSpec]:
    """A warning per active anticoagulant (suggesting an INR), a critical for an INR above 3."""
    cards = []
    for med in inp.facts.active_medications(["anticoagulant"]):
        cards.append(
            CardSpec(
                rule_id=ANTICOAG,
                indicator="warning",
                summary=f"{med.ingredient} is active: hold before the procedure",
                detail="Test card: hold the anticoagulant.",
                citation="memory test rule",
                evidence=(med.evidence,),
                suggestions=(
                    SuggestionSpec(
                        label=INR_ORDER,
                        resources=(_lab_order(inp.patient_id),),
                        description="Create a draft order: INR (LOINC 6301-6)",
                    ),
                    SuggestionSpec(
                        label="Order platelet count",
                        resources=(_lab_order(inp.patient_id, "777-3", "Platelets"),),
                        description="Create a draft order: platelets (LOINC 777-3)",
                    ),
                ),
            )
        )
        break
    inr = inp.facts.latest("inr")
    if inr is not None and inr.value is not None and inr.value > 3:
        cards.append(
            CardSpec(
                rule_id=INR_HIGH,
                indicator="critical",
                summary=f"INR {inr.value:g}: do not proceed",
                detail="Test card: correct the INR first.",
                citation="memory test rule",
                evidence=(inr.evidence,),
            )
        )
    return cards


SERVICE = ServiceDefinition(
    id=SERVICE_ID,
    hook="order-sign",
    title="Memory test service",
    description="A service that exists only in the alert-memory tests.",
    prefetch={
        "patient": "Patient/{{context.patientId}}",
        "meds": "MedicationRequest?patient={{context.patientId}}&status=active",
        "labs": "Observation?patient={{context.patientId}}&code=http://loinc.org|6301-6",
    },
    usage_requirements="Needs the meds and labs prefetch.",
    checks_by_key={"meds": ("anticoagulant review",), "labs": ("INR check",)},
    handler=_handler,
    rules=(
        RuleDoc(
            rule_id=ANTICOAG,
            title="Active anticoagulant (test)",
            indicator="warning",
            checks="An active anticoagulant.",
            reads=("MedicationRequest",),
            steps=("Hold it.",),
            citation="memory test rule",
        ),
        RuleDoc(
            rule_id=INR_HIGH,
            title="INR above 3 (test)",
            indicator="critical",
            checks="An INR above 3.",
            reads=("INR",),
            steps=("Correct it.",),
            citation="memory test rule",
        ),
    ),
)


SERVICES = [SERVICE, replace(SERVICE, id=SERVICE_IDS["patient-view"], hook="patient-view")]

# ---------------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------------


def warfarin(rid: str = "mr1", status: str = "active", authored: str = "2026-10-01") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "855332",
                    "display": "warfarin 5 MG Oral Tablet",
                }
            ]
        },
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
    }


def inr(value: float, rid: str = "inr1", when: str = "2026-11-27T08:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "6301-6"}]},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "{INR}", "system": "http://unitsofmeasure.org"},
    }


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


@dataclass
class Chart:
    """What the EHR sends about one patient: the prefetch of the memory-test service."""

    patient_id: str = "p1"
    meds: tuple[dict[str, Any], ...] = (warfarin(),)
    labs: tuple[dict[str, Any], ...] = ()

    def prefetch(self) -> dict[str, Any]:
        # Each resource about this chart's patient (another patient's would be ignored as evidence).
        subject = {"subject": {"reference": f"Patient/{self.patient_id}"}}
        return {
            "patient": {"resourceType": "Patient", "id": self.patient_id, "birthDate": "1948-03-02"},
            "meds": searchset(*({**r, **subject} for r in self.meds)),
            "labs": searchset(*({**r, **subject} for r in self.labs)),
        }


def hook_body(chart: Chart, hook: str = "order-sign") -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/u1", "patientId": chart.patient_id}
    if hook in ("order-sign", "order-select"):
        context["draftOrders"] = {"resourceType": "Bundle", "entry": []}
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": chart.prefetch(),
    }


# ---------------------------------------------------------------------------------------------------------
# Databases, clock, client
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = launch_or_skip(tmp_path_factory.mktemp("pg-memory"), fsync=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'va-cds.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"m_{uuid.uuid4().hex[:16]}")


class Clock:
    """The request time the app sees; tests move it forward to cross memory windows."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class MemoryClient:
    """A TestClient for one app plus the steps the tests repeat: call, feedback, wait for the audit."""

    def __init__(self, client: TestClient, clock: Clock, service_ids: dict[str, str] | None = None) -> None:
        self.http = client
        self.clock = clock
        self.service_ids = SERVICE_IDS if service_ids is None else service_ids
        self.last_hook_instance = ""
        self.sent_by: dict[str, str] = {}  # card uuid → the service id that sent it (where feedback goes)

    @property
    def state(self) -> Any:
        return self.http.app.state.va  # type: ignore[attr-defined]

    def call(
        self, chart: Chart, hook: str = "order-sign", headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        body = hook_body(chart, hook)
        service_id = self.service_ids[hook]
        r = self.http.post(f"/cds-services/{service_id}", json=body, headers=headers or {})
        assert r.status_code == 200, r.text
        self.wait_audited(body["hookInstance"])
        self.last_hook_instance = str(body["hookInstance"])
        cards = list(r.json()["cards"])
        self.sent_by.update({c["uuid"]: service_id for c in cards})
        return cards

    def wait_audited(self, hook_instance: str) -> None:
        # The audit row is written by the writer thread after the response; memory reads it on the next call.
        deadline = time.monotonic() + 10
        while self.state.store.find_audit(hook_instance) is None:
            assert time.monotonic() < deadline, "audit record never written"
            time.sleep(0.01)

    def feedback(
        self,
        card: dict[str, Any],
        outcome: str = "overridden",
        *,
        reason: str | None = "benefit-outweighs-risk",
        accepted: list[str] | None = None,
        headers: dict[str, str] | None = None,
        service_id: str | None = None,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "card": card["uuid"],
            "outcome": outcome,
            "outcomeTimestamp": self.clock.now.isoformat().replace("+00:00", "Z"),
        }
        if outcome == "overridden" and reason:
            item["overrideReason"] = {
                "reason": {"system": "https://va-cds.org/fhir/CodeSystem/override-reason", "code": reason}
            }
        if outcome == "accepted":
            item["acceptedSuggestions"] = [{"id": s} for s in accepted or []]
        r = self.http.post(
            f"/cds-services/{service_id or self.sent_by.get(card['uuid'], SERVICE_ID)}/feedback",
            json={"feedback": [item]},
            headers=headers or {},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


def make_app_client(
    db_url: str,
    clock: Clock,
    tmp_path: Path,
    services: list[ServiceDefinition] | None = None,
    **overrides: Any,
) -> TestClient:
    values: dict[str, Any] = {
        "auth_mode": "off",
        "database_url": db_url,
        "patient_hash_key": HASH_KEY,
        "log_level": "WARNING",
    }
    values.update(overrides)
    app = create_app(Settings(**values), services=SERVICES if services is None else services, clock=clock)
    return TestClient(app)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mem(db_url: str, clock: Clock, tmp_path: Path) -> Iterator[MemoryClient]:
    with make_app_client(db_url, clock, tmp_path) as client:
        yield MemoryClient(client, clock)


def by_rule(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["extension"]["org.va-cds.rule"]: c for c in cards}
