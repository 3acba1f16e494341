"""Memory is shared, not per process: two real server processes (uvicorn) on one database, SQLite and
PostgreSQL, with the clinical pre-procedure service. What one learns from feedback, the other applies;
a changed lab brings the card back in full on either.

The service id is taken from discovery (the service answering order-sign whose id starts with
"va-preprocedure"), so the split of services into one per hook needs no change here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds_service.persistence import Store
from tests.net import free_port

COAG = "pre.coag.labs-out-of-range"
CHECKLIST = "pre.checklist"


def _start(db_url: str, tmp_path: Path, name: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ,
        "VA_CDS_AUTH_MODE": "off",
        "VA_CDS_DATABASE_URL": db_url,
        "VA_CDS_LOG_LEVEL": "WARNING",
        "VA_CDS_PATIENT_HASH_KEY": "shared-memory-test-key",
    }
    cmd = [sys.executable, "-m", "uvicorn", "cds_service.app:app", "--host", "127.0.0.1", "--port", str(port)]
    with open(tmp_path / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return base, proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"server {name} did not start: {(tmp_path / f'{name}.log').read_text()[-2000:]}")


@pytest.fixture
def servers(db_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    Store(db_url).upgrade()  # once, before both start (each would also do it, serialised)
    started = [_start(db_url, tmp_path, "a"), _start(db_url, tmp_path, "b")]
    yield started[0][0], started[1][0]
    for _base, proc in started:
        proc.kill()
        proc.wait(timeout=10)


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _lab(rid: str, loinc: str, value: float, unit: str, when: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": "Patient/mem-p1"},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {"value": value, "unit": unit},
    }


def _order_sign(service: dict[str, Any], inr_value: float, inr_id: str) -> dict[str, Any]:
    day = datetime.now(UTC) - timedelta(days=2)
    prefetch: dict[str, Any] = {key: _bundle() for key in service["prefetch"]}
    prefetch["patient"] = {
        "resourceType": "Patient",
        "id": "mem-p1",
        "birthDate": "1950-01-01",
        "gender": "female",
    }
    prefetch["coagLabs"] = _bundle(
        _lab(inr_id, "6301-6", inr_value, "{INR}", day), _lab("plt1", "777-3", 210, "10*3/uL", day)
    )
    draft = {
        "resourceType": "ServiceRequest",
        "id": "va1",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
        "subject": {"reference": "Patient/mem-p1"},
    }
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/u1",
            "patientId": "mem-p1",
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]},
        },
        "prefetch": prefetch,
    }


def test_two_processes_share_one_memory(servers: tuple[str, str], db_url: str) -> None:
    a, b = servers
    services = httpx.get(f"{a}/cds-services").json()["services"]
    service = next(s for s in services if s["hook"] == "order-sign" and s["id"].startswith("va-preprocedure"))
    store = Store(db_url)

    def call(base: str, inr_value: float = 2.4, inr_id: str = "inr1") -> dict[str, dict[str, Any]]:
        body = _order_sign(service, inr_value, inr_id)
        r = httpx.post(f"{base}/cds-services/{service['id']}", json=body, timeout=30)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while store.find_audit(body["hookInstance"]) is None:  # written after the response
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return {c["extension"]["org.va-cds.rule"]: c for c in r.json()["cards"]}

    def feedback(base: str, card: dict[str, Any], outcome: str = "overridden") -> None:
        item: dict[str, Any] = {
            "card": card["uuid"],
            "outcome": outcome,
            "outcomeTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if outcome == "overridden":
            item["overrideReason"] = {"reason": {"system": "https://va-cds.org", "code": "held-per-protocol"}}
        else:
            item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
        r = httpx.post(f"{base}/cds-services/{service['id']}/feedback", json={"feedback": [item]})
        assert r.status_code == 200 and r.json()["stored"] == 1

    try:
        first = call(a)
        assert first[COAG]["indicator"] == "warning"
        ordered = first[CHECKLIST]["suggestions"][0]["label"]  # the first work-up order it suggests
        feedback(a, first[COAG])
        feedback(a, first[CHECKLIST], "accepted")

        seen_by_b = call(b)  # the other process, the same database
        assert seen_by_b[COAG]["indicator"] == "info"
        assert seen_by_b[COAG]["extension"]["org.va-cds.memory"]["actions"] == ["demoted"]
        assert seen_by_b[COAG]["detail"].startswith("**Overridden on ")
        withheld = seen_by_b[CHECKLIST]
        assert ordered not in [x["label"] for x in withheld.get("suggestions") or ()]
        assert withheld["extension"]["org.va-cds.memory"]["actions"] == ["suggestion-withheld"]
        assert "**Already ordered on " in withheld["detail"]

        new_lab = call(a, inr_value=2.9, inr_id="inr2")  # a new INR: the coagulation card is new again
        assert new_lab[COAG]["indicator"] == "warning"
        assert "org.va-cds.memory" not in new_lab[COAG]["extension"]
        assert (
            new_lab[COAG]["extension"]["org.va-cds.fingerprint"]
            != first[COAG]["extension"]["org.va-cds.fingerprint"]
        )
    finally:
        store.close()
