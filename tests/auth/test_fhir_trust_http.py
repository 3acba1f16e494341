"""Issue 16 with authentication on: FHIR bases per issuer, the Host header, the reason in every 401, and the
sandbox preset's loopback bases.

FHIR is mocked with respx (nothing here reaches the network); "nothing fetched" is the mock's call count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import respx
import yaml
from fastapi.testclient import TestClient

from cds_service.auth import load_trust
from tests.core.conftest import hook_body, make_settings

from .conftest import ISS, TENANT_ISS, Minter
from .test_auth_http import BASE, FHIR, SERVICE_URL, _app
from .test_auth_http import trust_file as trust_file  # the fixture


def _call(
    client: TestClient, token: str, fhir_server: str, *, access_token: str | None = "opaque-fhir-token"
) -> Any:
    body = hook_body(fhirServer=fhir_server)
    if access_token is not None:
        body["fhirAuthorization"] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "va-cds",
        }
    return client.post("/cds-services/test-service", json=body, headers={"Authorization": f"Bearer {token}"})


def test_each_issuer_may_name_only_its_own_fhir_servers(
    mint: Minter, tmp_path: Path, trust_file: Path
) -> None:
    with respx.mock(assert_all_called=False) as router, TestClient(_app(tmp_path, trust_file)) as client:
        fhir = router.get(url__startswith=FHIR).respond(
            json={"resourceType": "Bundle", "type": "searchset", "entry": []}
        )
        anywhere = router.route().respond(json={"resourceType": "Bundle", "type": "searchset", "entry": []})

        ok = _call(client, mint(payload={"aud": SERVICE_URL}), FHIR)
        assert ok.status_code == 200, ok.text
        assert fhir.call_count > 0

        fhir.reset()
        # ISS's own base under another path, and an internal host: refused, nothing fetched.
        for other in (f"{FHIR}-internal", "https://10.0.0.5/fhir", "https://ehr.example.org"):
            refused = _call(client, mint(payload={"aud": SERVICE_URL}), other)
            assert refused.status_code == 403, refused.text
            assert "not an allowed FHIR server" in refused.json()["issue"][0]["diagnostics"]
        # Another trusted issuer may not use ISS's base (its trust entry lists none).
        tenant = mint({"kid": "ec-t"}, {"iss": TENANT_ISS, "tenant": "hospital-a", "aud": SERVICE_URL})
        assert _call(client, tenant, FHIR).status_code == 403
        assert fhir.call_count == 0 and anywhere.call_count == 0


def test_token_is_sent_over_plain_http_only_to_a_listed_loopback_base(
    mint: Minter, tmp_path: Path, trust_file: Path
) -> None:
    doc = yaml.safe_load(trust_file.read_text())
    doc["issuers"][0]["fhir_servers"].append("http://127.0.0.1:9/fhir")  # a loopback base, listed explicitly
    trust_file.write_text(yaml.safe_dump(doc))
    assert (
        "http://127.0.0.1:9/fhir"
        in load_trust(make_settings(tmp_path, trust_file=trust_file)).issuer(ISS).fhir_servers
    )  # type: ignore[union-attr]
    with respx.mock(assert_all_called=False) as router, TestClient(_app(tmp_path, trust_file)) as client:
        local = router.get(url__startswith="http://127.0.0.1:9/fhir").respond(
            json={"resourceType": "Bundle", "type": "searchset", "entry": []}
        )
        assert _call(client, mint(payload={"aud": SERVICE_URL}), "http://127.0.0.1:9/fhir").status_code == 200
        assert local.call_count > 0
        # The same host by another name is not the listed base.
        assert _call(client, mint(payload={"aud": SERVICE_URL}), "http://127.1:9/fhir").status_code == 403


def test_aud_is_the_public_url_never_the_host_header(mint: Minter, tmp_path: Path, trust_file: Path) -> None:
    """Review: with VA_CDS_PUBLIC_BASE_URL unset the aud was checked against the caller's Host header."""
    with TestClient(_app(tmp_path, trust_file)) as client:
        spoofed = mint(payload={"aud": "https://attacker.example.net/cds-services/test-service"})
        resp = client.post(
            "/cds-services/test-service",
            json=hook_body(),
            headers={"Authorization": f"Bearer {spoofed}", "Host": "attacker.example.net"},
        )
        assert resp.status_code == 401
        assert "token audience mismatch" in resp.json()["issue"][0]["diagnostics"]
        genuine = client.post(
            "/cds-services/test-service",
            json=hook_body(),
            headers={
                "Authorization": f"Bearer {mint(payload={'aud': SERVICE_URL})}",
                "Host": "attacker.example.net",
            },
        )
        # Authenticated (TEST_SERVICE then needs prefetch it was not given: 412, not 401).
        assert genuine.status_code == 412, genuine.text
        assert SERVICE_URL.startswith(BASE)


def test_every_401_gives_a_short_reason_never_the_token(
    mint: Minter, tmp_path: Path, trust_file: Path
) -> None:
    audiences = [f"{BASE}/cds-services", SERVICE_URL]
    expired = mint(payload={"aud": audiences, "iat": 1_000_000, "exp": 1_000_300})
    cases = {
        "missing": ({}, "bearer token required"),
        "not bearer": ({"Authorization": "Basic dXNlcjpwdw=="}, "bearer token required"),
        "garbage": ({"Authorization": "Bearer not-a-jwt"}, "invalid token"),
        "expired": ({"Authorization": f"Bearer {expired}"}, "token expired"),
    }
    with TestClient(_app(tmp_path, trust_file)) as client:
        for name, (headers, phrase) in cases.items():
            for method, path in (
                ("GET", "/cds-services"),
                ("POST", "/cds-services/test-service"),
                ("POST", "/cds-services/test-service/feedback"),
            ):
                resp = client.request(
                    method, path, headers=headers, json=hook_body() if method == "POST" else None
                )
                assert resp.status_code == 401, (name, path)
                diagnostics = resp.json()["issue"][0]["diagnostics"]
                assert diagnostics == f"authentication failed: {phrase}", (name, diagnostics)
                assert f'error_description="{phrase}"' in resp.headers["www-authenticate"], name
                assert resp.headers["cache-control"] == "no-store"
                assert expired not in resp.text and expired not in resp.headers["www-authenticate"]


def test_sandbox_preset_allows_its_loopback_demo_bases(mint: Minter, tmp_path: Path) -> None:
    trust = load_trust(make_settings(tmp_path, trust_preset="sandbox"))
    (issuer,) = trust.issuers.values()
    assert issuer.fhir_servers == frozenset(
        {"http://127.0.0.1:8080/demo/fhir", "http://localhost:8080/demo/fhir"}
    )


def test_a_401_never_fetches(mint: Minter, tmp_path: Path, trust_file: Path) -> None:
    with respx.mock(assert_all_called=False) as router, TestClient(_app(tmp_path, trust_file)) as client:
        anything = router.route().mock(return_value=httpx.Response(200, json={}))
        assert _call(client, "not-a-jwt", FHIR).status_code == 401
        assert anything.call_count == 0
