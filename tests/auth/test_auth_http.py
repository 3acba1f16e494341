"""Authentication through the real app: 401 + WWW-Authenticate for every forged token, the external URL
as `aud`, CORS preflight without a token, the real sandbox requests, and no secrets or patient ids in
any log line of a real hook call."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.auth import JwtVerifier, load_trust, www_authenticate
from cds_service.logs import patient_hash
from tests.core.conftest import TEST_SERVICE, hook_body, make_settings, searchset, warfarin_request

from .conftest import (
    ATTACKER_JKU,
    FETCH_ISS,
    FETCH_JKU,
    ISS,
    JKU,
    NOW,
    TENANT_ISS,
    Keys,
    Minter,
    ec_jwk,
    rsa_jwk,
)
from .test_trust import SANDBOX_REQUESTS
from .test_verifier import FORGED

BASE = "https://cds.example.org"  # public_base_url: what the EHR calls, not what the app sees
SERVICE_URL = f"{BASE}/cds-services/test-service"
HASH_KEY = "log-test-hash-key"


def _write_trust(path: Path, keys: Keys) -> Path:
    doc = {
        "issuers": [
            {
                "iss": ISS,
                "jku": [JKU],
                "jwks": {
                    "keys": [
                        ec_jwk(keys.ec, "ec-1"),
                        rsa_jwk(keys.rsa, "rsa-1"),
                        ec_jwk(keys.ec256, "ec256-1"),
                    ]
                },
                "fhir_servers": [FHIR],
            },
            {"iss": FETCH_ISS, "jku": [FETCH_JKU]},
            {"iss": TENANT_ISS, "jwks": {"keys": [ec_jwk(keys.ec, "ec-t")]}, "tenant": "hospital-a"},
        ]
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def trust_file(tmp_path: Path, keys: Keys) -> Path:
    return _write_trust(tmp_path / "trust.yaml", keys)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[TestClient]:
    """One app for the forged-token table (building an app per case is slow); every token has its
    own jti, so the shared replay cache does not couple the cases."""
    tmp = tmp_path_factory.mktemp("auth-http")
    with TestClient(_app(tmp, _write_trust(tmp / "trust.yaml", keys))) as c:
        yield c


def _app(
    tmp_path: Path, trust_file: Path | None, *, fixed_clock: float | None = NOW, **overrides: Any
) -> Any:
    values: dict[str, Any] = {
        "auth_mode": "required",
        "trust_file": trust_file,
        "public_base_url": BASE,
        "cors_origins": ["http://127.0.0.1:8080"],
        "patient_hash_key": HASH_KEY,
    }
    settings = make_settings(tmp_path, **{**values, **overrides})
    app = create_app(settings, services=[TEST_SERVICE])
    state = app.state.va
    if fixed_clock is not None:
        # Test seam: same trust and HTTP client as the app's verifier, but a fixed clock, so tokens
        # minted for NOW (and the recorded sandbox tokens) do not depend on the wall clock.
        state.verifier = JwtVerifier(load_trust(settings), state.http, clock=lambda: fixed_clock)
    return app


def _aud(payload: dict[str, Any] | None, aud: str) -> dict[str, Any]:
    return {"aud": aud, **(payload or {})}


@pytest.mark.parametrize(("case", "build", "reason"), FORGED, ids=[c[0] for c in FORGED])
def test_forged_tokens_get_401_on_every_endpoint(
    case: str, build: Any, reason: str, mint: Minter, keys: Keys, shared_client: TestClient
) -> None:
    def mint_for_service(
        header: dict[str, Any] | None = None, payload: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        # The table's tokens name the unit tests' audience; re-aim the valid ones at this endpoint so
        # that the only thing wrong with each token is what the case says.
        p = dict(payload or {})
        if "aud" not in p:
            p["aud"] = SERVICE_URL
        elif p["aud"] == "https://cds.example.org/cds-services/va-order-sign":
            p["aud"] = SERVICE_URL
        return mint(header, p, **kw)

    header = build(mint_for_service, keys)
    c = shared_client
    with respx.mock(assert_all_called=False) as router:
        attacker = router.get(ATTACKER_JKU).respond(json={"keys": [ec_jwk(keys.attacker, "evil")]})
        router.get(JKU).respond(json={"keys": []})
        headers = {} if header is None else {"Authorization": header}
        r = c.post("/cds-services/test-service", json=hook_body(), headers=headers)
        assert attacker.call_count == 0
    assert r.status_code == 401, (case, r.text)
    assert r.headers["www-authenticate"] == www_authenticate(reason)
    if header:
        for part in header.partition(" ")[2].split("."):
            if len(part) > 8:
                assert part not in r.text and part not in r.headers["www-authenticate"]


@pytest.mark.parametrize("alg_kid", [("ES384", "ec-1"), ("RS384", "rsa-1")])
def test_valid_token_reaches_the_service(
    alg_kid: tuple[str, str], mint: Minter, tmp_path: Path, trust_file: Path
) -> None:
    alg, kid = alg_kid
    with TestClient(_app(tmp_path, trust_file)) as c:
        token = mint({"alg": alg, "kid": kid}, {"aud": SERVICE_URL})
        r = c.post(
            "/cds-services/test-service", json=hook_body(), headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code in (200, 412), r.text  # past authentication
        replay = c.post(
            "/cds-services/test-service", json=hook_body(), headers={"Authorization": f"Bearer {token}"}
        )
        assert replay.status_code == 401
        assert replay.headers["www-authenticate"] == www_authenticate("replayed")


def test_aud_is_the_external_url_of_each_endpoint(mint: Minter, tmp_path: Path, trust_file: Path) -> None:
    with TestClient(_app(tmp_path, trust_file)) as c:

        def call(method: str, path: str, aud: str, body: Any = None) -> int:
            h = {"Authorization": "Bearer " + mint(payload={"aud": aud})}
            return c.request(method, path, headers=h, json=body).status_code

        assert call("GET", "/cds-services", f"{BASE}/cds-services") == 200
        # The internal URL the app sees (http://testserver) is not what the EHR addressed.
        assert call("GET", "/cds-services", "http://testserver/cds-services") == 401
        assert call("GET", "/cds-services", SERVICE_URL) == 401  # a service's aud on discovery
        assert call("POST", "/cds-services/test-service", f"{BASE}/cds-services", hook_body()) == 401
        feedback = {"feedback": []}
        fb_path = "/cds-services/test-service/feedback"
        assert call("POST", fb_path, f"{SERVICE_URL}/feedback", feedback) != 401
        assert call("POST", fb_path, SERVICE_URL, feedback) != 401  # service URL accepted for feedback
        assert call("POST", fb_path, f"{BASE}/cds-services", feedback) == 401


def test_jku_not_allowlisted_makes_no_request_through_the_app(
    mint: Minter, keys: Keys, tmp_path: Path, trust_file: Path
) -> None:
    token = mint({"jku": ATTACKER_JKU, "kid": "evil"}, {"aud": f"{BASE}/cds-services"}, key=keys.attacker)
    with respx.mock(assert_all_called=False) as router, TestClient(_app(tmp_path, trust_file)) as c:
        attacker = router.route(host="attacker.example.net").respond(
            json={"keys": [ec_jwk(keys.attacker, "evil")]}
        )
        r = c.get("/cds-services", headers={"Authorization": f"Bearer {token}"})
        assert not attacker.called
    assert r.status_code == 401


def test_jwks_from_allowlisted_jku_through_the_app(
    mint: Minter, keys: Keys, tmp_path: Path, trust_file: Path
) -> None:
    with respx.mock(assert_all_called=False) as router, TestClient(_app(tmp_path, trust_file)) as c:
        route = router.get(FETCH_JKU).respond(json={"keys": [ec_jwk(keys.fetched, "f-1")]})
        for _ in range(3):
            token = mint(
                {"kid": "f-1", "jku": FETCH_JKU},
                {"iss": FETCH_ISS, "aud": f"{BASE}/cds-services"},
                key=keys.fetched,
            )
            assert c.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert route.call_count == 1


def test_wall_clock_verifier_built_by_the_app(mint: Minter, tmp_path: Path, trust_file: Path) -> None:
    # The app's own verifier (real clock): a fresh token passes, one from an hour ago does not.
    now = int(time.time())
    with TestClient(_app(tmp_path, trust_file, fixed_clock=None)) as c:
        fresh = mint(payload={"aud": f"{BASE}/cds-services", "iat": now, "exp": now + 300})
        old = mint(payload={"aud": f"{BASE}/cds-services", "iat": now - 3600, "exp": now - 3300})
        assert c.get("/cds-services", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
        r = c.get("/cds-services", headers={"Authorization": f"Bearer {old}"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == www_authenticate("expired")


def test_no_trust_configured_refuses_everything(mint: Minter, tmp_path: Path) -> None:
    with TestClient(_app(tmp_path, None)) as c:
        r = c.get(
            "/cds-services",
            headers={"Authorization": "Bearer " + mint(payload={"aud": f"{BASE}/cds-services"})},
        )
    assert r.status_code == 401


@pytest.mark.parametrize(("name", "req"), SANDBOX_REQUESTS, ids=[n for n, _ in SANDBOX_REQUESTS])
def test_real_sandbox_requests_with_preset(name: str, req: dict[str, Any], tmp_path: Path) -> None:
    """The recorded sandbox calls (aud http://127.0.0.1:8090/...) authenticate with the preset; the
    recorded preflight succeeds without a token."""
    payload = req["jwt_decoded"]["payload"]
    app = _app(
        tmp_path,
        None,
        fixed_clock=float(payload["iat"]),
        trust_preset="sandbox",
        public_base_url="http://127.0.0.1:8090",
    )
    preflight = req["preflight"]
    with TestClient(app) as c:
        pre = c.options(
            preflight["path"], headers={k: v for k, v in preflight["headers"].items() if k != "Host"}
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        request = req["request"]
        path = httpx.URL(request["url"]).path
        auth = {"Authorization": request["headers"]["Authorization"]}
        if request["method"] == "GET":
            r = c.get(path, headers=auth)
        else:
            r = c.post(path, headers=auth, json=request["body"])
        # The stub-* services of the recording do not exist here: 404 (not 401) proves authentication passed.
        assert r.status_code in (200, 404), r.text
        again = c.request(request["method"], path, headers=auth, json=request.get("body"))
        assert again.status_code == 401  # replayed jti


def test_cors_preflight_without_token(tmp_path: Path, trust_file: Path) -> None:
    with TestClient(_app(tmp_path, trust_file)) as c:
        for path, method in (
            ("/cds-services", "GET"),
            ("/cds-services/test-service", "POST"),
            ("/cds-services/test-service/feedback", "POST"),
        ):
            r = c.options(
                path,
                headers={
                    "Origin": "http://127.0.0.1:8080",
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert r.status_code == 200, path
            assert "www-authenticate" not in r.headers


PATIENT_ID = "smart-7c3e91-patient"
ACCESS_TOKEN = "opaque-FHIR-access-token-5f2b8e"
FHIR = "https://ehr.example.org/fhir"


def test_no_token_jwt_or_patient_id_in_any_log_line(
    mint: Minter,
    tmp_path: Path,
    trust_file: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwt = mint(payload={"aud": SERVICE_URL})
    bad_jwt = mint(payload={"aud": "https://wrong.example.org"})
    body = hook_body(
        fhirServer=FHIR,
        fhirAuthorization={
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "va-cds",
            "patient": PATIENT_ID,
        },
    )
    body["context"]["patientId"] = PATIENT_ID
    caplog.set_level("DEBUG")
    app = _app(tmp_path, trust_file)
    with respx.mock(assert_all_called=False) as router, TestClient(app) as c:
        router.get(f"{FHIR}/Patient/{PATIENT_ID}").respond(
            json={"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1950-01-01"}
        )
        # The record names this call's patient (catalog V2.4: another patient's resources are ignored).
        mine = {**warfarin_request(), "subject": {"reference": f"Patient/{PATIENT_ID}"}}
        router.get(f"{FHIR}/MedicationRequest").respond(json=searchset(mine))
        router.get(f"{FHIR}/Observation").respond(500)
        ok = c.post("/cds-services/test-service", json=body, headers={"Authorization": f"Bearer {jwt}"})
        denied = c.post(
            "/cds-services/test-service", json=body, headers={"Authorization": f"Bearer {bad_jwt}"}
        )
    assert ok.status_code == 200, ok.text
    assert denied.status_code == 401
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("msg") == "request"]
    assert len(requests) == 1
    rec = requests[0]
    assert rec["service"] == "test-service" and rec["status"] == 200 and rec["hook"] == "order-sign"
    assert rec["patient"] == patient_hash(HASH_KEY.encode(), PATIENT_ID)
    assert "test.anticoagulant" in rec["rules"] and isinstance(rec["fhir"], dict)
    # Both the emitted JSON lines and the raw records (before our redaction filter) are clean.
    for text in (err, caplog.text, repr([r.__dict__ for r in caplog.records])):
        for secret in (ACCESS_TOKEN, PATIENT_ID, *jwt.split("."), *bad_jwt.split(".")):
            assert secret not in text, secret
