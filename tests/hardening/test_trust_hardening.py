"""Issue 16 through HTTP: where the service may fetch, fail-closed configuration and the small things.

The FHIR server is the fault server on 127.0.0.1 (a real socket), so "nothing was fetched" is what that server
saw, not what a mock was asked. Each test names the review finding it covers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.settings import Settings
from hooks.preprocedure import prefetch as keys
from tests.hardening.fault_server import FaultServer
from tests.hardening.test_fetch_bounds import DOTDOT
from tests.hardening.test_fhir_faults import URL, by_rule, hook_call
from tests.pages.helpers import SERVICE_URL, checklist_link, order_sign_request


@pytest.fixture(scope="module")
def fhir() -> Iterator[FaultServer]:
    with FaultServer(hang_limit_s=10) as server:
        yield server


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_mode": "off",
        "database_url": f"sqlite:///{tmp_path}/h.db",
        "log_level": "WARNING",
        "fhir_deadline_s": 2.0,
    }
    return Settings(**{**values, **overrides})


# -- where the service may fetch (review: "High: no allowlist of FHIR servers") ------------------------------


def _aliases(base: str) -> dict[str, str]:
    """The forms the review used to reach a loopback server the allowlist does not name as such."""
    port = httpx.URL(base).port
    path = httpx.URL(base).path
    return {
        "decimal-ip": f"http://2130706433:{port}{path}",
        "short-ip": f"http://127.1:{port}{path}",
        "ipv4-mapped-ipv6": f"http://[::ffff:127.0.0.1]:{port}{path}",
        "userinfo": f"http://user:pw@127.0.0.1:{port}{path}",
        "userinfo-empty": f"http://@127.0.0.1:{port}{path}",
        "localhost-name": f"http://localhost:{port}{path}",
        "other-path": f"http://127.0.0.1:{port}{path}-admin",
        "parent-path": f"http://127.0.0.1:{port}{path.rsplit('/', 1)[0]}",
        "other-port": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}{path}",
        "https-instead": f"https://127.0.0.1:{port}{path}",
        "query": f"{base}?_format=json",
        "fragment": f"{base}#x",
        "unlisted-host": "https://internal.example.net/fhir",
    }


def test_only_allowlisted_fhir_bases_are_fetched_from(fhir: FaultServer, tmp_path: Path) -> None:
    allowed = fhir.plan("none")
    with TestClient(create_app(settings(tmp_path, fhir_servers=[allowed]))) as client:
        for name, url in _aliases(allowed).items():
            resp = client.post(URL, json=hook_call(url))
            assert resp.status_code in (400, 403), (name, resp.status_code, resp.text)
            reason = resp.json()["issue"][0]["diagnostics"]
            assert "fhirServer" in reason, (name, reason)
            assert "pw" not in reason, "user information is never echoed"
        assert fhir.seen(allowed) == [], "a refused request must fetch nothing"

        # The listed base itself, also with a trailing slash, is used.
        for url in (allowed, allowed + "/"):
            resp = client.post(URL, json=hook_call(url))
            assert resp.status_code == 200, resp.text
            assert "sys.data-unavailable" not in by_rule(resp.json())
        assert len(fhir.seen(allowed)) == 2 * len(keys.PREFETCH)


def test_nothing_is_fetched_with_an_empty_allowlist(fhir: FaultServer, tmp_path: Path) -> None:
    base = fhir.plan("none")
    with TestClient(create_app(settings(tmp_path))) as client:  # VA_CDS_FHIR_SERVERS unset: empty
        resp = client.post(URL, json=hook_call(base))
    assert resp.status_code == 403
    assert "not an allowed FHIR server" in resp.json()["issue"][0]["diagnostics"]
    assert fhir.seen(base) == []


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("http://ehr.example.org/fhir", "plain http is allowed only for loopback"),
        ("http://2130706433:9002/fhir", "host must be"),
        ("http://127.1:9002/fhir", "host must be"),
        ("http://[::ffff:127.0.0.1]:9002/fhir", "host must be"),
        ("https://user:pw@ehr.example.org/fhir", "user information"),
        ("https://ehr.example.org/fhir?x=1", "without query"),
        (f"https://ehr.example.org/fhir/{DOTDOT}/admin", "path must be plain"),
        ("ftp://ehr.example.org/fhir", "http or https"),
    ],
)
def test_bad_allowlist_entries_stop_start_up(tmp_path: Path, entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match="VA_CDS_FHIR_SERVERS") as exc:
        create_app(settings(tmp_path, fhir_servers=[entry]))
    assert problem in str(exc.value)


@pytest.mark.parametrize("patient_id", ["1&_count=99999&x=", DOTDOT, ".", "p1?x=1", "p1#frag"])
def test_injected_ids_are_refused_and_nothing_is_fetched(
    fhir: FaultServer, tmp_path: Path, patient_id: str
) -> None:
    base = fhir.plan("none")
    with TestClient(create_app(settings(tmp_path, fhir_servers=[base]))) as client:
        body = hook_call(base)
        body["context"] = {**body["context"], "patientId": patient_id}
        resp = client.post(URL, json=body)
    assert resp.status_code == 400, resp.text
    assert "context.patientId must be a FHIR id" in resp.json()["issue"][0]["diagnostics"]
    assert fhir.seen(base) == []


# -- fail closed on configuration ----------------------------------------------------------------------------


def test_auth_required_without_public_base_url_refuses_to_start(tmp_path: Path) -> None:
    """Review: with VA_CDS_PUBLIC_BASE_URL unset, aud was checked against the caller's Host header."""
    with pytest.raises(ValueError, match="VA_CDS_PUBLIC_BASE_URL is required"):
        create_app(settings(tmp_path, auth_mode="required", trust_preset="sandbox"))


def test_preset_and_trust_file_together_refuse_to_start(tmp_path: Path) -> None:
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        yaml.safe_dump({"issuers": [{"iss": "https://ehr.example.org", "jku": "https://e.org/j"}]})
    )
    with pytest.raises(ValueError) as exc:
        create_app(
            settings(
                tmp_path,
                auth_mode="required",
                public_base_url="https://cds.example.org",
                trust_file=trust,
                trust_preset="sandbox",
            )
        )
    assert "VA_CDS_TRUST_FILE" in str(exc.value) and "VA_CDS_TRUST_PRESET" in str(exc.value)


def test_start_up_warns_once_each_about_development_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = create_app(
        settings(
            tmp_path,
            auth_mode="required",
            trust_preset="sandbox",
            public_base_url="http://127.0.0.1:8080",
            cors_origins=["*"],
        )
    )
    with TestClient(app) as client:
        client.get("/cds-services")
        client.get("/cds-services")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    preset = [m for m in messages if "development trust preset" in m]
    assert len(preset) == 1
    assert "http://127.0.0.1:8080/demo/fhir" in preset[0] and "http://localhost:8080/demo/fhir" in preset[0]
    assert len([m for m in messages if "CORS allows any origin" in m]) == 1

    caplog.clear()
    with TestClient(create_app(settings(tmp_path))) as client:  # auth off
        client.get("/cds-services")
        client.get("/cds-services")
    off = [r.getMessage() for r in caplog.records if "authentication is OFF" in r.getMessage()]
    assert len(off) == 1, "auth off is said once at start-up, not on every discovery call"


# -- small things --------------------------------------------------------------------------------------------


def test_hook_and_feedback_answers_are_not_cacheable(fhir: FaultServer, tmp_path: Path) -> None:
    base = fhir.plan("none")
    with TestClient(create_app(settings(tmp_path, fhir_servers=[base]))) as client:
        hook = client.post(URL, json=hook_call(base))
        card = hook.json()["cards"][0]["uuid"]
        feedback = client.post(
            f"{URL}/feedback",
            json={
                "feedback": [
                    {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-12-01T05:00:00Z"}
                ]
            },
        )
        refused = client.post(URL, json=hook_call("https://elsewhere.example.org/fhir"))
    for resp in (hook, feedback, refused):
        assert resp.headers.get("cache-control") == "no-store", resp.status_code


def test_metrics_can_be_protected_by_a_token(tmp_path: Path) -> None:
    with TestClient(create_app(settings(tmp_path, metrics_token="scrape-secret"))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200 and "va_cds_requests" in ok.text
        assert client.get("/health").status_code == 200  # probes stay open


def test_checklist_export_stops_reading_at_its_limit(tmp_path: Path) -> None:
    """Review: the export read the whole body before its 64 KB check."""
    app = create_app(settings(tmp_path, patient_hash_key="export-limit-test"))
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(160):  # 10 MB in 64 KB chunks, if anyone reads it all
            sent.append(1)
            yield b"tick=" + b"x" * (64 * 1024 - 5)

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            hook = await client.post(
                SERVICE_URL,
                json=order_sign_request((await client.get("/cds-services")).json()),
            )
            path = checklist_link(hook.json()["cards"]).removeprefix("http://testserver")
            await asyncio.sleep(0.5)  # the snapshot row is written after the response
            resp = await client.post(
                f"{path}/export",
                content=body(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            return resp.status_code, len(sent)

    status, chunks = asyncio.run(scenario())
    assert status == 413
    assert chunks < 10, f"{chunks} chunks of 64 KB were read for a 64 KB limit"


def test_declared_oversized_export_is_refused_before_reading(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, patient_hash_key="export-limit-test"))
    with TestClient(app) as client:
        hook = client.post(SERVICE_URL, json=order_sign_request(client.get("/cds-services").json()))
        path = checklist_link(hook.json()["cards"]).removeprefix("http://testserver")
        resp = client.post(
            f"{path}/export",
            content=b"tick=x" * 20_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert resp.status_code == 413


def test_the_call_byte_budget_setting_is_applied(fhir: FaultServer, tmp_path: Path) -> None:
    """VA_CDS_FHIR_MAX_CALL_BYTES reaches the fetcher: 1 MB pages, a 2 MB budget for the whole call."""
    base = fhir.plan("big-pages", page_bytes=1024 * 1024, pages=3)
    app = create_app(settings(tmp_path, fhir_servers=[base], fhir_max_call_bytes=2_000_000))
    with TestClient(app) as client:
        resp = client.post(URL, json=hook_call(base))
        assert resp.status_code == 200
        cards = by_rule(resp.json())
        assert "sys.data-unavailable" in cards  # cut short: unavailable, never judged on part of the data
        assert 'reason="call-too-large"' in client.get("/metrics").text
    # 2 MB buys at most two whole 1 MB pages for the whole call: at most two `next` pages are ever asked for.
    later_pages = [s.target for s in fhir.seen(base) if "&page=" in s.target]
    assert len(later_pages) <= 2, later_pages
