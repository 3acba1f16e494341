"""The README's CDS Hooks Sandbox walkthrough, driven exactly as the sandbox drives it.

`make serve` settings (sandbox trust preset, CORS for any origin, demo data on, public base URL
http://127.0.0.1:8080). The "sandbox" here replays what the real one sends (tests/fixtures/sandbox-requests):

* it is the public https page, so every call is preceded by a preflight carrying
  `Access-Control-Request-Private-Network: true` (Chrome's Private Network Access);
* it connects to the FHIR server `http://127.0.0.1:8080/demo/fhir` with the queries it was seen making
  (metadata, the patient list, the Patient read, the Condition search by GET and by POST _search);
* it registers services by URL, one hook each (the last discovery entry for a URL wins), fills prefetch
  itself (reads by GET, searches by POST _search) and signs every call with its ES384 key, whose private half
  is published (tests/fixtures/sandbox-es384-private.pem), `aud` = the exact URL called.

The cards asserted are rule ids that must appear for each demo patient; texts and counts belong to the
clinical issues.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.demo.patients import (
    DISCHARGE_NO_NEURO,
    PATIENT_IDS,
    PLANNED_WARFARIN,
    POST_HYPOXAEMIA,
    POST_INFECTION,
)
from cds_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CAPTURED = FIXTURES / "sandbox-requests"
EXAMPLES = ROOT / "examples"

BASE = "http://127.0.0.1:8080"  # make serve: VA_CDS_PUBLIC_BASE_URL
FHIR = f"{BASE}/demo/fhir"
DISCOVERY = f"{BASE}/cds-services"
SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"  # the public https page: Chrome asks for private network
ISS = "https://sandbox.cds-hooks.org"
JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
KID = json.loads((FIXTURES / "sandbox-jwks.json").read_text())["keys"][0]["kid"]
PRIVATE_KEY = load_pem_private_key((FIXTURES / "sandbox-es384-private.pem").read_bytes(), None)
WARFARIN = {
    "text": "Warfarin Sodium 5 MG Oral Tablet",
    "coding": [
        {
            "display": "Warfarin Sodium 5 MG Oral Tablet",
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "855332",
        }
    ],
}


def sandbox_token(aud: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, PRIVATE_KEY, algorithm="ES384", headers={"kid": KID, "jku": JKU, "typ": "JWT"})  # type: ignore[arg-type]


def _captured(name: str) -> Any:
    return json.loads((CAPTURED / f"{name}.json").read_text())


class _LateApp:
    """The app, reached from its own FHIR client: the service fetches from the demo data it serves."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Sandbox:
    """What the CDS Hooks Sandbox page does, call by call, against one va-cds."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.services: dict[str, dict[str, Any]] = {}  # service URL → the one discovery entry it keeps
        self.calls: list[str] = []

    # -- transport ------------------------------------------------------------------------------------
    def preflight(self, url: str, method: str, request_headers: str | None) -> None:
        template = _captured("discovery")["preflight"]["headers"]
        headers = {k: v for k, v in template.items() if k in ("Accept", "Sec-Fetch-Mode", "Sec-Fetch-Dest")}
        headers |= {
            "Origin": SANDBOX_ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Private-Network": "true",
        }
        if request_headers:
            headers["Access-Control-Request-Headers"] = request_headers
        r = self.client.options(url, headers=headers)
        assert r.status_code in (200, 204), (url, r.status_code, r.text)
        assert r.headers["access-control-allow-origin"] in (SANDBOX_ORIGIN, "*")
        assert r.headers["access-control-allow-private-network"] == "true"
        assert method in r.headers["access-control-allow-methods"]
        for name in (request_headers or "").split(","):
            if name:
                assert name.lower() in r.headers["access-control-allow-headers"].lower()

    def fhir(self, method: str, path: str, *, body: str | None = None, accept: str) -> httpx.Response:
        url = FHIR + path
        self.preflight(url, method, None)  # simple requests: only the private-network preflight
        headers = {"Origin": SANDBOX_ORIGIN, "Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        r = self.client.request(method, url, headers=headers, content=body)
        assert r.status_code == 200, (method, path, r.text)
        assert r.headers["access-control-allow-origin"] in (SANDBOX_ORIGIN, "*")
        return r

    def cds(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        self.preflight(url, method, "authorization" if body is None else "authorization,content-type")
        headers = {
            "Origin": SANDBOX_ORIGIN,
            "Accept": "application/json",
            "Authorization": f"Bearer {sandbox_token(url)}",
        }
        r = self.client.request(method, url, headers=headers, json=body)
        assert r.headers["access-control-allow-origin"] in (SANDBOX_ORIGIN, "*")
        self.calls.append(url)
        return r

    # -- what the sandbox screens do ------------------------------------------------------------------
    def connect_fhir_server(self, patient_id: str) -> dict[str, Any]:
        """The captured FHIR traffic (fhir.json) with the sandbox's patient replaced by a demo patient."""
        last: dict[str, Any] = {}
        for req in _captured("fhir"):
            path = req["path"].replace("pat-1", patient_id)
            body = req["body"].replace("pat-1", patient_id) if isinstance(req["body"], str) else None
            r = self.fhir(req["method"], path, body=body, accept=req["headers"]["Accept"])
            last[f"{req['method']} {path}"] = r.json()
        return last

    def discover(self) -> list[dict[str, Any]]:
        r = self.cds("GET", DISCOVERY)
        assert r.status_code == 200, r.text
        entries = r.json()["services"]
        for entry in entries:  # registered by URL: a later entry for the same URL replaces the earlier one
            self.services[f"{DISCOVERY}/{entry['id']}"] = entry
        return entries

    def prefetch(self, templates: dict[str, str], context: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, template in templates.items():
            query = re.sub(r"\{\{context\.(\w+)\}\}", lambda m: str(context[m.group(1)]), template)
            rtype, _, params = query.partition("?")
            if params:
                r = self.fhir("POST", f"/{rtype}/_search", body=params, accept="application/json+fhir")
            else:
                r = self.fhir("GET", f"/{rtype}", accept="application/json+fhir")
            out[key] = r.json()
        return out

    def fire(self, hook: str, body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Call every registered service for `hook`, with prefetch filled; cards by service id."""
        answers = {}
        for url, entry in self.services.items():
            if entry["hook"] != hook:
                continue
            call = {**copy.deepcopy(body), "hook": hook, "hookInstance": str(uuid.uuid4())}
            call["prefetch"] = self.prefetch(entry.get("prefetch") or {}, call["context"])
            r = self.cds("POST", url, call)
            assert r.status_code == 200, (url, r.text)
            answers[entry["id"]] = r.json()["cards"]
        assert answers, f"no registered service answers {hook}"
        return answers

    def patient_view(self, patient_id: str) -> dict[str, list[dict[str, Any]]]:
        body = _captured("patient-view")["request"]["body"]
        body = {**body, "fhirServer": FHIR, "context": {**body["context"], "patientId": patient_id}}
        body.pop("prefetch", None)
        return self.fire("patient-view", body)

    def rx_sign(self, patient_id: str, medication: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        body = copy.deepcopy(_captured("order-sign-rx-sign")["request"]["body"])
        body["fhirServer"] = FHIR
        body["context"]["patientId"] = patient_id
        draft = body["context"]["draftOrders"]["entry"][0]["resource"]
        draft["subject"] = {"reference": f"Patient/{patient_id}"}
        draft["medicationCodeableConcept"] = medication
        return self.fire("order-sign", body)


def rules(answers: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Every finding the answers carry: each card's rule and those folded into it (catalog V2.2)."""
    return {
        rule
        for cards in answers.values()
        for c in cards
        for rule in c["extension"].get("org.va-cds.findings") or [c["extension"]["org.va-cds.rule"]]
    }


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/va-cds.db",
        trust_preset="sandbox",
        cors_origins=["*"],
        demo=True,
        public_base_url=BASE,
    )  # type: ignore[call-arg]
    late = _LateApp()
    fetcher = httpx.AsyncClient(transport=httpx.ASGITransport(app=late))  # type: ignore[arg-type]
    app = create_app(settings, http_client=fetcher)
    late.app = app
    with TestClient(app, base_url=BASE) as client:
        yield Sandbox(client)


def test_the_sandbox_connects_to_the_demo_fhir_server_with_its_own_queries(sandbox: Sandbox) -> None:
    for pid in PATIENT_IDS:
        seen = sandbox.connect_fhir_server(pid)
        assert seen["GET /metadata"]["resourceType"] == "CapabilityStatement"
        listed = {e["resource"]["id"] for e in seen["GET /Patient"]["entry"]}
        assert listed == set(PATIENT_IDS)  # the sandbox's patient picker shows the demo patients
        assert seen[f"GET /Patient/{pid}"]["id"] == pid
        by_get = [e["resource"]["id"] for e in seen[f"GET /Condition?patient={pid}"]["entry"]]
        by_post = [e["resource"]["id"] for e in seen["POST /Condition/_search"]["entry"]]
        assert by_get == by_post and by_get, pid  # every demo patient has its fracture on record


def test_discovery_gives_the_sandbox_one_hook_per_service_url(sandbox: Sandbox) -> None:
    entries = sandbox.discover()
    # The sandbox keeps one hook per URL: with one hook per id, every hook we list gets called.
    assert len(sandbox.services) == len(entries)
    assert {"patient-view", "order-sign"} <= {e["hook"] for e in sandbox.services.values()}


def test_walkthrough_patient_view_and_rx_sign_for_the_demo_patients(sandbox: Sandbox) -> None:
    sandbox.discover()

    planned = sandbox.patient_view(PLANNED_WARFARIN)
    # On warfarin, VA in four days: the hold card, and the INR (2.6, two days ago) is out of range or too old.
    assert "pre.coag.antithrombotic-active" in rules(planned)
    assert {"pre.coag.labs-out-of-range", "pre.coag.labs-missing"} & rules(planned)
    assert not any(r.startswith("post.") for r in rules(planned))

    signed = sandbox.rx_sign(PLANNED_WARFARIN, WARFARIN)  # Rx Sign: warfarin while a VA is planned
    assert "pre.antithrombotic-order-while-va-planned" in rules(signed)

    assert "post.pce.suspected" in rules(sandbox.patient_view(POST_HYPOXAEMIA))
    assert "post.infection.suspected" in rules(sandbox.patient_view(POST_INFECTION))
    assert any(r.startswith("post.") for r in rules(sandbox.patient_view(DISCHARGE_NO_NEURO)))

    # Every query the services needed was answered: nothing reported as unavailable.
    everything = rules(planned) | rules(signed)
    assert "sys.data-unavailable" not in everything


def test_walkthrough_patient_view_answers_use_the_demo_data_not_an_outage(sandbox: Sandbox) -> None:
    sandbox.discover()
    for pid in PATIENT_IDS:
        assert "sys.data-unavailable" not in rules(sandbox.patient_view(pid)), pid


def _send_example(sandbox: Sandbox, name: str) -> dict[str, list[dict[str, Any]]]:
    """The README's `curl` step: an example request without prefetch; the service fetches from the demo."""
    body = json.loads((EXAMPLES / name).read_text())
    assert body["fhirServer"] == FHIR and "prefetch" not in body
    answers = {}
    for url, entry in sandbox.services.items():
        if entry["hook"] == body["hook"]:
            r = sandbox.cds("POST", url, body)
            assert r.status_code == 200, r.text
            answers[entry["id"]] = r.json()["cards"]
    assert answers
    return answers


def test_the_procedure_order_the_sandbox_cannot_draft_is_sent_from_the_examples(sandbox: Sandbox) -> None:
    sandbox.discover()
    kyphoplasty = rules(_send_example(sandbox, "order-sign-kyphoplasty.json"))
    assert "pre.coag.antithrombotic-active" in kyphoplasty
    assert {"pre.coag.labs-out-of-range", "pre.coag.labs-missing"} & kyphoplasty
    assert "sys.data-unavailable" not in kyphoplasty
    discharge = rules(_send_example(sandbox, "encounter-discharge-demo.json"))
    assert "discharge.neuro-exam-missing" in discharge
    assert "sys.data-unavailable" not in discharge


def test_feedback_from_the_sandbox_is_accepted(sandbox: Sandbox) -> None:
    sandbox.discover()
    answers = sandbox.patient_view(POST_INFECTION)
    sid, cards = next((s, c) for s, c in answers.items() if c)
    feedback = copy.deepcopy(_captured("feedback")["overridden"]["request"]["body"])
    feedback["feedback"][0]["card"] = cards[0]["uuid"]
    r = sandbox.cds("POST", f"{DISCOVERY}/{sid}/feedback", feedback)
    assert r.status_code == 200, r.text
    assert urlsplit(sandbox.calls[-1]).path.endswith("/feedback")


def test_va_cds_evaluate_runs_the_examples_against_a_running_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README step 5 with the offline tool: `va-cds evaluate examples/...` fetches from the demo data."""
    import socket
    import threading

    import uvicorn

    from cds_service.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(auth_mode="off", database_url=f"sqlite:///{tmp_path}/e.db", demo=True)  # type: ignore[call-arg]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "demo server did not start"
            time.sleep(0.05)
        for name, rule in [
            ("order-sign-kyphoplasty.json", "pre.coag.antithrombotic-active"),
            ("encounter-discharge-demo.json", "discharge.neuro-exam-missing"),
        ]:
            body = json.loads((EXAMPLES / name).read_text())
            body["fhirServer"] = f"http://127.0.0.1:{port}/demo/fhir"  # the example names :8080
            path = tmp_path / name
            path.write_text(json.dumps(body))
            assert main(["evaluate", str(path), "--format", "json"]) == 0
            out = json.loads(capsys.readouterr().out)
            found = {c["extension"]["org.va-cds.rule"] for s in out["services"] for c in s["cards"]}
            assert rule in found and "sys.data-unavailable" not in found, found
    finally:
        server.should_exit = True
        thread.join(10)
