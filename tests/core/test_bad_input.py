"""Bad input gets a clear 4xx with an OperationOutcome saying why — never a 500 and never a hang."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.core.conftest import hook_body

GOOD = hook_body(prefetch={"patient": None, "meds": None, "labs": None})
URL = "/cds-services/test-service"


def with_(**changes: object) -> bytes:
    body = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key.startswith("ctx_"):
            name = key.removeprefix("ctx_")
            if value is ...:
                body["context"].pop(name, None)
            else:
                body["context"][name] = value
        elif value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    # (name, url, body, headers, status, words expected in the reason)
    ("not json", URL, b"{nope", {}, 400, "not valid JSON"),
    ("empty body", URL, b"", {}, 400, "empty"),
    ("json array", URL, b"[1,2]", {}, 400, "JSON object"),
    ("json string", URL, b'"hello"', {}, 400, "JSON object"),
    ("wrong content type", URL, with_(), {"Content-Type": "text/plain"}, 415, "Content-Type"),
    (
        "form content type",
        URL,
        b"a=b",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "Content-Type",
    ),
    ("unknown service", "/cds-services/no-such-service", with_(), {}, 404, "no-such-service"),
    ("wrong hook for service", URL, with_(hook="encounter-start"), {}, 400, "does not answer hook"),
    ("unsupported hook name", URL, with_(hook="medication-prescribe"), {}, 400, "medication-prescribe"),
    ("missing hook", URL, with_(hook=...), {}, 400, "hook"),
    ("missing hookInstance", URL, with_(hookInstance=...), {}, 400, "hookInstance"),
    ("hookInstance not a uuid", URL, with_(hookInstance="1234"), {}, 400, "UUID"),
    ("missing context", URL, with_(context=...), {}, 400, "context"),
    ("context not an object", URL, with_(context="p1"), {}, 400, "context"),
    ("missing patientId", URL, with_(ctx_patientId=...), {}, 400, "patientId"),
    ("patientId not a string", URL, with_(ctx_patientId=42), {}, 400, "patientId"),
    ("patientId as a reference", URL, with_(ctx_patientId="Patient/p1"), {}, 400, "bare id"),
    ("userId without type", URL, with_(ctx_userId="u1"), {}, 400, "userId"),
    ("missing draftOrders on order-sign", URL, with_(ctx_draftOrders=...), {}, 400, "draftOrders"),
    (
        "draftOrders not a Bundle",
        URL,
        with_(ctx_draftOrders={"resourceType": "List"}),
        {},
        400,
        "draftOrders",
    ),
    (
        "draftOrders entry not a list",
        URL,
        with_(ctx_draftOrders={"resourceType": "Bundle", "entry": {}}),
        {},
        400,
        "entry",
    ),
    (
        "fhirAuthorization without fhirServer",
        URL,
        with_(
            fhirAuthorization={
                "access_token": "t",
                "token_type": "Bearer",
                "expires_in": 1,
                "scope": "s",
                "subject": "x",
            }
        ),
        {},
        400,
        "fhirServer",
    ),
    (
        "fhirAuthorization incomplete",
        URL,
        with_(fhirServer="https://x.org/fhir", fhirAuthorization={"access_token": "t"}),
        {},
        400,
        "fhirAuthorization",
    ),
    ("fhirServer not a URL", URL, with_(fhirServer="not a url"), {}, 400, "fhirServer"),
    ("prefetch not an object", URL, with_(prefetch=[1]), {}, 400, "prefetch"),
    ("GET on a service", URL, b"", {"method": "GET"}, 405, "method"),
    ("unknown route", "/nothing-here", b"", {"method": "GET"}, 404, "route"),
    ("feedback not json", URL + "/feedback", b"{", {}, 400, "not valid JSON"),
    ("feedback empty list", URL + "/feedback", b'{"feedback": []}', {}, 400, "feedback"),
    (
        "feedback bad outcome",
        URL + "/feedback",
        b'{"feedback":[{"card":"c","outcome":"maybe","outcomeTimestamp":"2026-01-01T00:00:00Z"}]}',
        {},
        400,
        "outcome",
    ),
    (
        "feedback bad timestamp",
        URL + "/feedback",
        b'{"feedback":[{"card":"c","outcome":"overridden","outcomeTimestamp":"yesterday"}]}',
        {},
        400,
        "outcomeTimestamp",
    ),
    (
        "feedback missing card",
        URL + "/feedback",
        b'{"feedback":[{"outcome":"overridden","outcomeTimestamp":"2026-01-01T00:00:00Z"}]}',
        {},
        400,
        "card",
    ),
    ("feedback unknown service", "/cds-services/nope/feedback", b'{"feedback":[]}', {}, 404, "nope"),
]


@pytest.mark.parametrize(
    ("name", "url", "body", "headers", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_input_gets_a_4xx_with_a_reason(
    client: TestClient, name: str, url: str, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    headers = dict(headers)  # the case table is shared between runs: never mutate it
    method = headers.pop("method", "POST")
    hdrs = {"Content-Type": "application/json", **headers}
    r = client.request(method, url, content=body if method == "POST" else None, headers=hdrs)
    assert r.status_code == status, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert words.lower() in outcome["issue"][0]["diagnostics"].lower()


def test_at_least_twenty_kinds_of_malformed_input_are_covered() -> None:
    assert len(CASES) >= 20


def test_oversized_body_is_refused_before_it_is_parsed(tmp_path) -> None:
    from cds_service.app import create_app
    from tests.core.conftest import TEST_SERVICE, make_settings

    with TestClient(create_app(make_settings(tmp_path, max_body_bytes=2000), services=[TEST_SERVICE])) as c:
        r = c.post(
            URL, content=b'{"x": "' + b"a" * 5000 + b'"}', headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 413
    assert "larger than 2000" in r.json()["issue"][0]["diagnostics"]
