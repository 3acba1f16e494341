"""The service core through HTTP: discovery, invocation and prefetch states, feedback, errors, CORS."""

from __future__ import annotations

import httpx
import respx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from cds_service.app import create_app
from tests.core.conftest import FHIR, NOW, TEST_SERVICE, hook_body, make_settings, searchset, warfarin_request

FULL_PREFETCH = {
    "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01", "gender": "female"},
    "meds": searchset(warfarin_request()),
    "labs": searchset(),
}


def rules(response: httpx.Response) -> list[str]:
    return [c["extension"]["org.va-cds.rule"] for c in response.json()["cards"]]


def test_discovery_lists_each_service_once_with_its_one_hook(client: TestClient) -> None:
    r = client.get("/cds-services")
    assert r.status_code == 200
    services = r.json()["services"]
    assert [(s["id"], s["hook"]) for s in services] == [("test-service", "order-sign")]
    assert services[0]["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert services[0]["usageRequirements"]


def test_discovery_with_no_services_is_an_empty_list(tmp_path) -> None:
    with TestClient(create_app(make_settings(tmp_path), services=[])) as c:
        assert c.get("/cds-services").json() == {"services": []}


def test_prefetch_present_gives_cards_with_evidence_and_valid_shape(client: TestClient) -> None:
    r = client.post("/cds-services/test-service", json=hook_body(prefetch=FULL_PREFETCH))
    assert r.status_code == 200
    card = r.json()["cards"][0]
    assert card["extension"]["org.va-cds.rule"] == "test.anticoagulant"
    assert card["extension"]["org.va-cds.evidence"][0]["reference"] == "MedicationRequest/mr1"
    assert card["source"]["url"].endswith("/docs/rules/test.anticoagulant")
    assert card["overrideReasons"] and all(o["display"] for o in card["overrideReasons"])
    assert "suggestions" not in card and "selectionBehavior" not in card  # no empty or null fields


def test_null_prefetch_is_known_empty_not_a_failure(client: TestClient) -> None:
    r = client.post("/cds-services/test-service", json=hook_body(prefetch={**FULL_PREFETCH, "meds": None}))
    assert r.status_code == 200
    assert r.json() == {"cards": []}


def test_absent_keys_are_fetched_from_the_fhir_server(tmp_path) -> None:
    app = create_app(make_settings(tmp_path), services=[TEST_SERVICE], clock=lambda: NOW)
    with respx.mock, TestClient(app) as c:
        meds = respx.get(f"{FHIR}/MedicationRequest").mock(
            return_value=httpx.Response(200, json=searchset(warfarin_request()))
        )
        labs = respx.get(f"{FHIR}/Observation").mock(return_value=httpx.Response(200, json=searchset()))
        body = hook_body(
            prefetch={"patient": FULL_PREFETCH["patient"]},
            fhirServer=FHIR,
            fhirAuthorization={
                "access_token": "opaque-token-123",
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "va-cds",
            },
        )
        r = c.post("/cds-services/test-service", json=body)
    assert r.status_code == 200
    assert rules(r) == ["test.anticoagulant"]
    assert meds.calls[0].request.headers["Authorization"] == "Bearer opaque-token-123"
    assert labs.call_count == 1


def test_operation_outcome_prefetch_gives_data_unavailable_naming_the_check(client: TestClient) -> None:
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    r = client.post("/cds-services/test-service", json=hook_body(prefetch={**FULL_PREFETCH, "meds": oo}))
    assert r.status_code == 200
    cards = r.json()["cards"]
    assert rules(r) == ["sys.data-unavailable"]
    assert cards[0]["indicator"] == "warning"
    assert "anticoagulant review" in cards[0]["detail"]


def test_failed_fetch_gives_other_cards_plus_data_unavailable(tmp_path) -> None:
    app = create_app(make_settings(tmp_path), services=[TEST_SERVICE], clock=lambda: NOW)
    with respx.mock, TestClient(app) as c:
        respx.get(f"{FHIR}/Observation").mock(return_value=httpx.Response(500))
        body = hook_body(prefetch={k: v for k, v in FULL_PREFETCH.items() if k != "labs"}, fhirServer=FHIR)
        r = c.post("/cds-services/test-service", json=body)
    assert r.status_code == 200
    assert rules(r) == ["test.anticoagulant", "sys.data-unavailable"]
    assert "INR check" in r.json()["cards"][1]["detail"]


def test_missing_prefetch_without_fhir_server_is_412(client: TestClient) -> None:
    r = client.post("/cds-services/test-service", json=hook_body(prefetch={"patient": None}))
    assert r.status_code == 412
    assert "meds" in r.json()["issue"][0]["diagnostics"]


def test_cards_are_sorted_critical_first(client: TestClient) -> None:
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]}
    r = client.post("/cds-services/test-service", json=hook_body(prefetch={**FULL_PREFETCH, "labs": oo}))
    order = {"critical": 0, "warning": 1, "info": 2}
    indicators = [order[c["indicator"]] for c in r.json()["cards"]]
    assert indicators == sorted(indicators)


def test_feedback_is_persisted_idempotent_and_accepts_older_shapes(tmp_path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, services=[TEST_SERVICE])) as c:
        item = {
            "card": "0c8f2b7e-6a55-4d1a-9d43-2f4a1e3b9c10",
            "outcome": "overridden",
            "overrideReason": {"reason": {"system": "x", "code": "not-applicable"}, "userComment": "hospice"},
            "outcomeTimestamp": "2026-11-21T14:03:22Z",
        }
        first = c.post("/cds-services/test-service/feedback", json={"feedback": [item]})
        again = c.post("/cds-services/test-service/feedback", json={"feedback": [item]})
        # sandbox#135 shape (no `reason` wrapper) and sandbox#133 (no `feedback` wrapper), unknown card uuid
        legacy = {
            "card": "unknown-card-uuid",
            "outcome": "overridden",
            "overrideReason": {"system": "x", "code": "data-outdated"},
            "outcomeTimestamp": "2026-11-21T14:04:00.120Z",
        }
        old = c.post("/cds-services/test-service/feedback", json=legacy)
        accepted = c.post(
            "/cds-services/test-service/feedback",
            json={
                "feedback": [
                    {
                        "card": "c2",
                        "outcome": "accepted",
                        "acceptedSuggestions": ["s1"],
                        "outcomeTimestamp": "2026-11-21T14:05:00Z",
                    }
                ]
            },
        )
    assert first.status_code == 200 and first.json() == {"received": 1, "stored": 1}
    assert again.status_code == 200 and again.json()["stored"] == 0
    assert old.status_code == 200 and old.json()["stored"] == 1
    assert accepted.status_code == 200
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("select card, outcome, reason_code from feedback order by card")).all()
    engine.dispose()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("0c8f2b7e-6a55-4d1a-9d43-2f4a1e3b9c10", "overridden", "not-applicable"),
        ("c2", "accepted", None),
        ("unknown-card-uuid", "overridden", "data-outdated"),
    ]


def test_cors_preflight_needs_no_token_and_allows_the_auth_header(tmp_path) -> None:
    settings = make_settings(tmp_path, auth_mode="required", cors_origins=["http://127.0.0.1:8080"])
    with TestClient(create_app(settings, services=[TEST_SERVICE])) as c:
        r = c.options(
            "/cds-services/test-service",
            headers={
                "Origin": "http://127.0.0.1:8080",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        unauth = c.get("/cds-services", headers={"Origin": "http://127.0.0.1:8080"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in r.headers["access-control-allow-methods"]
    assert unauth.status_code == 401 and unauth.headers["www-authenticate"].startswith("Bearer")
    assert unauth.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
