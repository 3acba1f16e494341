"""Through the real server process, on SQLite and PostgreSQL: acknowledged feedback survives a SIGKILL,
audit records are written after the response, and /metrics counters move with traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cds_service.persistence import Store
from tests.net import free_port

HOOK = {
    "hook": "order-sign",
    "context": {
        "userId": "Practitioner/u1",
        "patientId": "p1",
        "draftOrders": {
            "resourceType": "Bundle",
            "entry": [
                {
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "id": "va1",
                        "status": "draft",
                        "intent": "order",
                        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
                        "subject": {"reference": "Patient/p1"},
                    }
                }
            ],
        },
    },
}


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "VA_CDS_AUTH_MODE": "off",
        "VA_CDS_DATABASE_URL": db_url,
        "VA_CDS_LOG_LEVEL": "WARNING",
        "VA_CDS_PATIENT_HASH_KEY": "test-key",
    }
    cmd = [sys.executable, "-m", "uvicorn", "cds_service.app:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb")
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield base, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_acknowledged_feedback_survives_sigkill_of_the_server(server, db_url: str) -> None:
    base, proc = server
    card = str(uuid.uuid4())
    body = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z"}]}
    r = httpx.post(f"{base}/cds-services/va-preprocedure-order-sign/feedback", json=body, timeout=10)
    assert r.status_code == 200
    proc.send_signal(signal.SIGKILL)  # right after the 200: no graceful shutdown, no chance to flush later
    proc.wait(timeout=10)
    store = Store(db_url)
    try:
        report = store.override_report(None)
    finally:
        store.close()
    assert sum(s.overridden for s in report) == 1


def test_hook_call_is_audited_after_the_response_and_metrics_move(server, db_url: str) -> None:
    base, _proc = server
    before = httpx.get(f"{base}/metrics", timeout=5).text
    instance = str(uuid.uuid4())
    prefetch_keys = {}
    services = httpx.get(f"{base}/cds-services", timeout=5).json()["services"]
    pre = next(s for s in services if s["id"] == "va-preprocedure-order-sign" and s["hook"] == "order-sign")
    for key in pre["prefetch"]:
        prefetch_keys[key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    prefetch_keys["patient"] = {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "female",
        "birthDate": "1948-02-03",
    }
    r = httpx.post(
        f"{base}/cds-services/va-preprocedure-order-sign",
        json={**HOOK, "hookInstance": instance, "prefetch": prefetch_keys},
        timeout=20,
    )
    assert r.status_code == 200
    rules = {c["extension"]["org.va-cds.rule"] for c in r.json()["cards"]}
    assert "pre.checklist" in rules
    store = Store(db_url)
    try:
        record = None
        for _ in range(50):  # the audit write happens after the response was sent
            record = store.find_audit(instance)
            if record is not None:
                break
            time.sleep(0.1)
    finally:
        store.close()
    assert record is not None
    assert {c["rule"] for c in record.cards} == rules
    assert record.patient_hash and record.patient_hash != "p1"
    after = httpx.get(f"{base}/metrics", timeout=5).text
    line = 'va_cds_requests_total{hook="order-sign",service="va-preprocedure-order-sign",status="200"} 1.0'
    assert line not in before and line in after
    assert 'va_cds_cards_total{indicator="info",rule="pre.checklist"}' in after
