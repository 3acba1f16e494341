"""Prefetch resolution: template rules, the four prefetch states, concurrent FHIR fetch under one deadline."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import respx

from cds_service.prefetch import (
    FetchLimits,
    PrefetchUnobtainable,
    TemplateError,
    check_template,
    read_prefetched,
    render,
    resolve,
)

FHIR = "https://ehr.example.org/fhir"
CTX = {"patientId": "p1", "userId": "Practitioner/u9", "encounterId": "e5"}


def bundle(*resources: dict, next_url: str | None = None) -> dict:
    b: dict = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def obs(i: int) -> dict:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final"}


def run(coro):  # small helper: the prefetch API is async
    return asyncio.run(coro)


# --- templates ---------------------------------------------------------------------------------------


def test_render_fills_context_and_user_tokens() -> None:
    assert render("Patient/{{context.patientId}}", CTX) == "Patient/p1"
    assert render("Practitioner/{{userPractitionerId}}", CTX) == "Practitioner/u9"


def test_render_gives_none_when_a_token_has_no_value() -> None:
    assert render("Encounter/{{context.encounterId}}", {"patientId": "p1"}) is None
    # a Practitioner token cannot be filled for a PractitionerRole user
    assert render("Practitioner/{{userPractitionerId}}", {"userId": "PractitionerRole/r1"}) is None


@pytest.mark.parametrize(
    "template",
    [
        "Observation?patient={{context.patientId}}&date=ge{{today() - 90 days}}",  # 3.0 ballot only
        "ServiceRequest/{{context.draftOrders.ServiceRequest.id}}",  # nested path, invalid in 2.0
        "Patient/{{Patient.id}}",  # pre-1.0 token
        "Patient/{{context.patientId}",  # malformed
    ],
)
def test_non_2_0_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        check_template(template, ("order-sign",))


def test_encounter_token_refused_for_a_hook_without_it() -> None:
    check_template("Encounter/{{context.encounterId}}", ("encounter-start",))
    with pytest.raises(TemplateError):
        check_template("Observation?subject={{context.draftOrders}}", ("order-sign",))


# --- reading what the client sent ------------------------------------------------------------------


def test_prefetch_states_are_kept_apart() -> None:
    assert read_prefetched(None).status == "null"
    assert read_prefetched(None).available
    empty = read_prefetched(bundle())
    assert empty.status == "prefetched" and empty.resources == []
    oo = read_prefetched({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x"}]})
    assert oo.status == "operation-outcome" and not oo.available
    assert read_prefetched({"resourceType": "Patient", "id": "p1"}).resources == [
        {"resourceType": "Patient", "id": "p1"}
    ]
    assert read_prefetched("nonsense").status == "failed"


def test_bundle_with_an_error_outcome_entry_is_unavailable_but_informational_outcome_is_fine() -> None:
    err = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    info = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational"}],
    }
    b = bundle(obs(1))
    b["entry"].append({"resource": info, "search": {"mode": "outcome"}})
    assert read_prefetched(b).status == "prefetched"
    b["entry"].append({"resource": err, "search": {"mode": "outcome"}})
    assert read_prefetched(b).status == "operation-outcome"


# --- resolving and fetching -----------------------------------------------------------------------


TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "labs": "Observation?patient={{context.patientId}}&code=http://loinc.org|6301-6&_sort=-date&_count=50",
    "meds": "MedicationRequest?patient={{context.patientId}}&status=active",
}


@respx.mock
def test_present_absent_and_null_keys() -> None:
    route = respx.get(f"{FHIR}/Observation").mock(return_value=httpx.Response(200, json=bundle(obs(1))))

    async def go():
        async with httpx.AsyncClient() as client:
            return await resolve(
                TEMPLATES,
                "order-sign",
                CTX,
                {"patient": {"resourceType": "Patient", "id": "p1"}, "meds": None},
                FHIR,
                "secret-token",
                client,
                FetchLimits(),
            )

    out = run(go())
    assert out["patient"].status == "prefetched"
    assert out["meds"].status == "null"
    assert out["labs"].status == "fetched" and out["labs"].resources[0]["id"] == "o1"
    assert route.call_count == 1
    sent = route.calls[0].request
    assert sent.headers["Authorization"] == "Bearer secret-token"
    assert sent.url.params["patient"] == "p1" and sent.url.params["code"] == "http://loinc.org|6301-6"


def test_missing_keys_without_fhir_server_are_unobtainable() -> None:
    async def go():
        async with httpx.AsyncClient() as client:
            await resolve(TEMPLATES, "order-sign", CTX, {"patient": None}, None, None, client, FetchLimits())

    with pytest.raises(PrefetchUnobtainable) as info:
        run(go())
    assert info.value.keys == ["labs", "meds"]


@respx.mock
@pytest.mark.parametrize(
    ("response", "status", "reason"),
    [
        (httpx.Response(500), "failed", "http-500"),
        (httpx.Response(401), "failed", "http-401"),
        (httpx.Response(404), "failed", "http-404"),
        (httpx.Response(200, content=b"{not json"), "failed", "malformed-json"),
        (httpx.Response(200, json={"hello": "world"}), "failed", "not-fhir"),
        (
            httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}),
            "operation-outcome",
            None,
        ),
    ],
)
def test_failed_fetches_mark_the_key_unavailable(
    response: httpx.Response, status: str, reason: str | None
) -> None:
    respx.get(f"{FHIR}/Observation").mock(return_value=response)

    async def go():
        async with httpx.AsyncClient() as client:
            return await resolve(
                {"labs": TEMPLATES["labs"]}, "order-sign", CTX, None, FHIR, None, client, FetchLimits()
            )

    out = run(go())["labs"]
    assert out.status == status and out.reason == reason and not out.available


@respx.mock
def test_paging_is_followed_and_loops_are_caught() -> None:
    respx.get(f"{FHIR}/Observation", params={"page": "2"}).mock(
        return_value=httpx.Response(200, json=bundle(obs(2), next_url=f"{FHIR}/Observation?page=3"))
    )
    respx.get(f"{FHIR}/Observation", params={"page": "3"}).mock(
        return_value=httpx.Response(200, json=bundle(obs(3)))
    )
    respx.get(f"{FHIR}/Observation").mock(
        return_value=httpx.Response(200, json=bundle(obs(1), next_url=f"{FHIR}/Observation?page=2"))
    )

    async def go(templates):
        async with httpx.AsyncClient() as client:
            return await resolve(templates, "order-sign", CTX, None, FHIR, None, client, FetchLimits())

    out = run(go({"labs": "Observation?patient={{context.patientId}}"}))["labs"]
    assert [r["id"] for r in out.resources] == ["o1", "o2", "o3"]

    respx.get(f"{FHIR}/Condition").mock(
        return_value=httpx.Response(200, json=bundle(obs(9), next_url=f"{FHIR}/Condition?patient=p1"))
    )
    looped = run(go({"c": "Condition?patient={{context.patientId}}"}))["c"]
    assert looped.status == "failed" and looped.reason == "paging-loop"


@respx.mock
def test_next_link_to_another_host_is_not_followed_with_the_token() -> None:
    evil = respx.get("https://evil.example.com/steal").mock(return_value=httpx.Response(200, json=bundle()))
    respx.get(f"{FHIR}/Observation").mock(
        return_value=httpx.Response(200, json=bundle(obs(1), next_url="https://evil.example.com/steal"))
    )

    async def go():
        async with httpx.AsyncClient() as client:
            return await resolve(
                {"labs": "Observation"}, "order-sign", CTX, None, FHIR, "tok", client, FetchLimits()
            )

    out = run(go())["labs"]
    assert out.status == "failed" and out.reason == "paging-off-server"
    assert evil.call_count == 0


@respx.mock
def test_oversized_response_is_refused() -> None:
    respx.get(f"{FHIR}/Observation").mock(return_value=httpx.Response(200, content=b" " * 5000))

    async def go():
        async with httpx.AsyncClient() as client:
            limits = FetchLimits(max_bytes=1000)
            return await resolve({"labs": "Observation"}, "order-sign", CTX, None, FHIR, None, client, limits)

    assert run(go())["labs"].reason == "too-large"


@respx.mock
def test_missing_keys_are_fetched_concurrently_under_one_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200, json=bundle(obs(1)))

    async def stalled(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json=bundle())

    respx.get(f"{FHIR}/Observation").mock(side_effect=slow)
    respx.get(f"{FHIR}/MedicationRequest").mock(side_effect=slow)
    respx.get(f"{FHIR}/Condition").mock(side_effect=stalled)
    templates = {
        "a": "Observation?patient={{context.patientId}}&x=1",
        "b": "Observation?patient={{context.patientId}}&x=2",
        "c": "MedicationRequest?patient={{context.patientId}}",
        "d": "Condition?patient={{context.patientId}}",
    }

    async def go():
        async with httpx.AsyncClient() as client:
            return await resolve(
                templates, "order-sign", CTX, None, FHIR, None, client, FetchLimits(deadline_s=0.6)
            )

    started = time.perf_counter()
    out = run(go())
    elapsed = time.perf_counter() - started
    # three 0.2 s fetches in parallel plus one stalled: all answered within the deadline, not 0.6 s + 30 s
    assert elapsed < 1.5
    assert {k: o.status for k, o in out.items()} == {
        "a": "fetched",
        "b": "fetched",
        "c": "fetched",
        "d": "failed",
    }
    assert out["d"].reason == "timeout"
