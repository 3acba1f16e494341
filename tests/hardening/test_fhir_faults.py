"""FHIR fetch faults, end to end: a real hook call whose `fhirServer` is a fault-injecting HTTP server.

For every fault of `fault_server.FAULTS` (except `slow`, which the shutdown test uses), the va-preprocedure
order-sign call for a drafted kyphoplasty sends *no* prefetch: all 14 keys are fetched from the fault server
(127.0.0.1, a free port), which injects the fault into the `coagLabs` search and answers every other query
normally (a Patient, empty searchsets). The app runs with a 1 s FHIR deadline (VA_CDS_FHIR_DEADLINE_S=1.0).
For each fault:

* the hook answers 200 within the deadline plus a margin (no hang: a stalled body or a server that never
  answers is cut at the deadline; a 50 MB body at the byte limit; a looping `next` link at the first
  repeated page);
* `sys.data-unavailable` names `coagLabs` (and only it) and lists the coagulation checks that could not run;
* the unaffected rules still run: the pre.checklist card is there;
* no `pre.coag.labs-missing` / `pre.coag.labs-out-of-range`: a failed source is unknown, never "missing" and
  never an all-clear;
* the failure is counted under the right reason in /metrics (timeout, http-429, too-large, paging-loop...);
* the process stays healthy: /health answers 200 and a following normal call works.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.models import HookResponse
from cds_service.prefetch import render
from cds_service.settings import Settings
from hooks.preprocedure import prefetch as keys
from tests.hardening.fault_server import HUGE_BYTES, FaultServer

DEADLINE_S = 1.0
MARGIN_S = 2.0  # TestClient, rules and a loaded 2-core CI runner; a hang would take hang_limit_s (30 s)
URL = "/cds-services/va-preprocedure-order-sign"
CONTEXT: dict[str, Any] = {
    "userId": "Practitioner/doc-1",
    "patientId": "p1",
    "draftOrders": {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "va-draft-1",
                    "status": "draft",
                    "intent": "order",
                    "subject": {"reference": "Patient/p1"},
                    "code": {
                        "coding": [
                            {
                                "system": "http://www.ama-assn.org/go/cpt",
                                "code": "22513",
                                "display": "Percutaneous vertebral augmentation, thoracic (kyphoplasty)",
                            }
                        ]
                    },
                }
            }
        ],
    },
}
COAG_QUERY = render(keys.PREFETCH[keys.COAG_LABS], CONTEXT)
assert COAG_QUERY is not None

# fault → the reason the app records for the failed key (va_cds_fhir_fetch_failures{reason=...})
EXPECTED_REASON = {
    "timeout": "timeout",
    "stalled-body": "timeout",
    "http-401": "http-401",
    "http-403": "http-403",
    "http-404": "http-404",
    "http-429": "http-429",
    "http-500": "http-500",
    "malformed-json": "malformed-json",
    "not-fhir": "not-fhir",
    "next-loop": "paging-loop",
    "huge": "too-large",
    "huge-declared": "too-large",
}


@pytest.fixture(scope="module")
def fhir() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, fhir: FaultServer) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("faults") / "faults.db"
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off",
        database_url=f"sqlite:///{db}",
        fhir_deadline_s=DEADLINE_S,
        log_level="WARNING",
        # The FHIR bases are allowlisted exactly (issue 16): reserve the ones the plans below will use.
        fhir_servers=fhir.reserve(200),
    )
    with TestClient(create_app(settings)) as c:
        yield c


def hook_call(base_url: str) -> dict[str, Any]:
    return {
        "hook": "order-sign",
        "hookInstance": "7e1f0c2a-4b9d-4f3e-9a7c-2d5b8e6f1a30",
        "fhirServer": base_url,
        "fhirAuthorization": {
            "access_token": "fault-test-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "va-cds",
        },
        "context": CONTEXT,
    }


def by_rule(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every finding (a card's own rule and those folded into it, V2.2) → the card carrying it."""
    out: dict[str, dict[str, Any]] = {}
    for c in payload["cards"]:
        ext = c["extension"]
        for rid in ext.get("org.va-cds.findings") or [ext["org.va-cds.rule"]]:
            out.setdefault(rid, c)
    return out


def failure_count(client: TestClient, key: str, reason: str) -> float:
    text = client.get("/metrics").text
    pattern = (
        rf'^va_cds_fhir_fetch_failures_total\{{key="{re.escape(key)}",reason="{re.escape(reason)}"\}} (\S+)$'
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def assert_healthy(client: TestClient, fhir: FaultServer) -> None:
    assert client.get("/health").status_code == 200
    resp = client.post(URL, json=hook_call(fhir.plan("none")))
    assert resp.status_code == 200, resp.text
    cards = by_rule(resp.json())
    assert "sys.data-unavailable" not in cards
    assert "pre.checklist" in cards
    assert "pre.coag.labs-missing" in cards  # with a healthy server, empty coag labs ARE missing


def test_healthy_server_baseline(client: TestClient, fhir: FaultServer) -> None:
    """The comparison point: every key fetched, nothing unavailable, labs-missing fires."""
    base = fhir.plan("none")
    resp = client.post(URL, json=hook_call(base))
    assert resp.status_code == 200
    assert len(fhir.seen(base)) == len(keys.PREFETCH)
    assert_healthy(client, fhir)


@pytest.mark.parametrize("fault", sorted(EXPECTED_REASON))
def test_fault_on_coag_labs(client: TestClient, fhir: FaultServer, fault: str) -> None:
    reason = EXPECTED_REASON[fault]
    before = failure_count(client, keys.COAG_LABS, reason)
    base = fhir.plan(fault, match=COAG_QUERY)

    started = time.monotonic()
    resp = client.post(URL, json=hook_call(base))
    elapsed = time.monotonic() - started

    assert resp.status_code == 200, resp.text
    assert elapsed < DEADLINE_S + MARGIN_S, f"{fault}: answered after {elapsed:.2f} s"
    payload = resp.json()
    HookResponse.model_validate(payload)
    cards = by_rule(payload)

    unavailable = cards.get("sys.data-unavailable")
    assert unavailable is not None, f"{fault}: no sys.data-unavailable card: {sorted(cards)}"
    assert unavailable["indicator"] == "warning"
    assert unavailable["extension"]["org.va-cds.policy"] == {"unavailable_sources": [keys.COAG_LABS]}
    for check in keys.CHECKS_BY_KEY[keys.COAG_LABS]:
        assert check in unavailable["detail"], check
    assert "not an all-clear" in unavailable["detail"]

    assert "pre.checklist" in cards, "unaffected rules must still run"
    assert "pre.coag.labs-missing" not in cards, "a failed source is unknown, not missing"
    assert "pre.coag.labs-out-of-range" not in cards

    faulted = [s for s in fhir.seen(base) if s.faulted]
    assert faulted, "the fault server never saw the coagLabs query"
    assert len(fhir.seen(base)) - len(faulted) == len(keys.PREFETCH) - 1  # every other key fetched once
    if fault == "next-loop":
        assert len(faulted) <= 5, "paging is bounded (fhir_max_pages) and the loop is detected"
    if fault == "huge":
        assert all(s.bytes_sent < HUGE_BYTES and not s.finished for s in faulted), "the body is cut short"
    if fault == "huge-declared":
        assert all(s.bytes_sent < HUGE_BYTES for s in faulted)

    assert failure_count(client, keys.COAG_LABS, reason) == before + 1
    assert_healthy(client, fhir)


def test_every_source_down(client: TestClient, fhir: FaultServer) -> None:
    """The whole FHIR server hangs: one deadline for all 14 fetches, every check named, no all-clear."""
    base = fhir.plan("timeout")
    started = time.monotonic()
    resp = client.post(URL, json=hook_call(base))
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert elapsed < DEADLINE_S + MARGIN_S
    cards = by_rule(resp.json())
    unavailable = cards["sys.data-unavailable"]
    assert unavailable["extension"]["org.va-cds.policy"]["unavailable_sources"] == sorted(keys.PREFETCH)
    for key in keys.PREFETCH:  # every prefetch key's checks (no Medication was named by reference here)
        for check in keys.CHECKS_BY_KEY[key]:
            assert check in unavailable["detail"]
    assert not [r for r in cards if r.endswith("-missing")], sorted(cards)
    assert "pre.checklist" in cards
    assert_healthy(client, fhir)


def test_fault_server_hangs_are_bounded() -> None:
    """The fault server itself never outlives its limits: a stop() ends every hung answer."""
    server = FaultServer(hang_limit_s=30).start()
    try:
        base = server.plan("timeout")
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{base}/Patient/p1", timeout=0.3)
    finally:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 10
