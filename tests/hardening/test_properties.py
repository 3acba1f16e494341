"""Property tests (hypothesis) of the whole hook path, the unit tables and the card builder.

* Whole hook requests — a valid CDS Hooks envelope whose prefetch values are *anything* (null, any JSON
  shape, FHIR-shaped resources with realistic and absurd field values, Bundles with junk entries,
  OperationOutcomes) and whose draftOrders hold FHIR-shaped junk next to real VA / anticoagulant orders —
  sent through the real app (TestClient) to every (service, hook) pair: always 200, the body validates
  with `HookResponse` and with openapi.yaml's `HookResponse` schema, and no rule crashed (the core's
  internal-error `sys.data-unavailable` card would say so). Some keys are left out and fetched from a
  mocked `fhirServer` (httpx.MockTransport, no network) that answers junk, errors or malformed bytes.
* `extract_facts` on the resources of those same requests never raises and never stops early (a
  "extraction stopped early" problem would mean the rest of the record was silently not read).
  tests/mappings/test_properties.py covers arbitrary JSON fed to the extractor alone.
* Unit conversions round-trip for every (kind, unit) the table lists, in any spelling the lenient
  normaliser accepts; unknown units and non-finite values raise `UnitError`, never anything else.
* The card builder on random `CardSpec`s (summaries of any length and script, evidence, links,
  suggestions): it either refuses (pydantic `ValidationError`, a programming error in a rule) or emits
  cards that are valid by the wire model *and* openapi.yaml; well-formed specs are never refused.

Example counts are modest (the folder should run in about a minute on 2 cores); raise them locally with
`VA_CDS_PROPERTY_EXAMPLES=500`.
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cds_service.app import create_app
from cds_service.cards import build_cards
from cds_service.contracts import (
    INDICATOR_ORDER,
    CardSpec,
    LinkSpec,
    OverrideReasonSpec,
    SuggestionSpec,
)
from cds_service.invocation import draft_order_resources
from cds_service.models import HookResponse
from cds_service.prefetch import read_prefetched, render
from cds_service.settings import Settings
from cds_service.suggestions import order_keys
from fhir_mappings.extract import extract_facts
from fhir_mappings.facts import ClinicalFacts, Evidence
from fhir_mappings.units import UNITS, UnitError, from_canonical, normalize_quantity, to_canonical
from hooks import build_services
from hooks.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("VA_CDS_PROPERTY_EXAMPLES", "40"))
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FHIR_BASE = "https://fhir.property.test/fhir"  # only ever answered by httpx.MockTransport
INTERNAL_ERROR_SUMMARY = "va-cds could not complete its safety checks for this patient"

SERVICES = {s.id: s for s in build_services(load_policy())}
HOOK_CALLS = [(svc.id, svc.hook) for svc in SERVICES.values()]

_DOC = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
_REGISTRY: Registry = Registry().with_resource(
    "urn:va-cds:openapi", Resource.from_contents(_DOC, default_specification=DRAFT202012)
)
RESPONSE_SCHEMA = Draft202012Validator(
    {"$ref": "urn:va-cds:openapi#/components/schemas/HookResponse"}, registry=_REGISTRY
)

PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------------------------------
# Strategies: JSON of any shape, and FHIR-shaped resources mixing realistic and absurd values
# ---------------------------------------------------------------------------------------------------

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=12,
)

LOINC = "http://loinc.org"
CODES = [
    (LOINC, "6301-6"),  # INR
    (LOINC, "777-3"),  # platelets
    (LOINC, "6690-2"),  # WBC
    (LOINC, "1988-5"),  # CRP
    (LOINC, "8310-5"),  # temperature
    (LOINC, "29463-7"),  # weight
    (LOINC, "2160-0"),  # creatinine
    (LOINC, "4548-4"),  # HbA1c
    (LOINC, "600-7"),  # blood culture
    (LOINC, "718-7"),  # hemoglobin
    (LOINC, "59408-5"),  # SpO2
    (LOINC, "24968-0"),  # spine MRI
    ("http://www.ama-assn.org/go/cpt", "22513"),  # kyphoplasty
    ("http://www.ama-assn.org/go/cpt", "22510"),  # vertebroplasty
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "855332"),  # warfarin
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "1364430"),  # apixaban
    ("http://snomed.info/sct", "44054006"),  # diabetes
    ("http://snomed.info/sct", "60168000"),  # spondylitis
]
RESOURCE_TYPES = [
    "Patient",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "Procedure",
    "ServiceRequest",
    "Appointment",
    "DiagnosticReport",
    "ImagingStudy",
    "Encounter",
    "Bundle",
    "OperationOutcome",
    "Basic",
]
STATUSES = [
    "active",
    "on-hold",
    "completed",
    "draft",
    "final",
    "preliminary",
    "booked",
    "entered-in-error",
    "in-progress",
    "finished",
    "stopped",
    "unknown",
]
UNIT_STRINGS = sorted({u for table in UNITS.values() for u in table} | {"mg", "furlongs", "°F", "K/uL"})
# V2.9: naive, aware, date-only, partial, future and unreadable times in every date field read.
DATES = st.sampled_from(
    [
        "2026-11-20",
        "2026-11-21T08:00:00Z",
        "2026-11-19T23:59:59+02:00",
        "2026-11-20T08:00:00",  # naive dateTime (no offset)
        "2026-11-20T08:00:00.123456",
        "1948-03-02",
        "2027-01-01",  # after the request time
        "2026",
        "2026-11",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59Z",
        "not a date",
    ]
)


def _or_junk(realistic: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(realistic, realistic, JSON)


PERIOD = _or_junk(st.fixed_dictionaries({}, optional={"start": _or_junk(DATES), "end": _or_junk(DATES)}))
CODING = st.sampled_from(CODES).map(lambda c: {"system": c[0], "code": c[1], "display": c[1]})
CODEABLE = _or_junk(
    st.fixed_dictionaries(
        {"coding": st.lists(_or_junk(CODING), max_size=3)},
        optional={"text": st.sampled_from(["kyphoplasty T12", "warfarin 5 mg", "no fever", "INR"])},
    )
)
QUANTITY = _or_junk(
    st.fixed_dictionaries(
        {"value": _or_junk(st.floats(min_value=-1e4, max_value=1e6, allow_nan=False))},
        optional={"unit": _or_junk(st.sampled_from(UNIT_STRINGS)), "code": st.sampled_from(UNIT_STRINGS)},
    )
)
REFERENCE = _or_junk(
    st.sampled_from(["Patient/p1", "Encounter/e1", "Medication/m1", "#med", ""]).map(
        lambda r: {"reference": r}
    )
)
RESOURCE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": _or_junk(st.text(alphabet=string.ascii_letters + string.digits + "-.", min_size=1, max_size=8)),
    "status": _or_junk(st.sampled_from(STATUSES)),
    "intent": _or_junk(st.sampled_from(["order", "plan", "proposal"])),
    "code": CODEABLE,
    "category": _or_junk(st.lists(CODEABLE, max_size=2)),
    "medicationCodeableConcept": CODEABLE,
    "medicationReference": REFERENCE,
    "subject": REFERENCE,
    "valueQuantity": QUANTITY,
    "valueCodeableConcept": CODEABLE,
    "component": _or_junk(
        st.lists(st.fixed_dictionaries({"code": CODEABLE, "valueQuantity": QUANTITY}), max_size=2)
    ),
    "effectiveDateTime": _or_junk(DATES),
    "effectiveInstant": _or_junk(DATES),
    "effectivePeriod": PERIOD,
    "issued": _or_junk(DATES),
    "authoredOn": _or_junk(DATES),
    "dateAsserted": _or_junk(DATES),
    "onsetDateTime": _or_junk(DATES),
    "onsetPeriod": PERIOD,
    "recordedDate": _or_junk(DATES),
    "abatementDateTime": _or_junk(DATES),
    "abatementPeriod": PERIOD,
    "performedDateTime": _or_junk(DATES),
    "performedPeriod": PERIOD,
    "occurrenceDateTime": _or_junk(DATES),
    "occurrencePeriod": PERIOD,
    "occurrenceTiming": _or_junk(st.fixed_dictionaries({"event": st.lists(_or_junk(DATES), max_size=2)})),
    "started": _or_junk(DATES),
    "period": PERIOD,
    "start": _or_junk(DATES),
    "birthDate": _or_junk(DATES),
    "deceasedDateTime": _or_junk(DATES),
    "deceasedBoolean": _or_junk(st.booleans()),
    "priority": _or_junk(st.sampled_from(["routine", "urgent", "stat", "asap"])),
    "class": _or_junk(st.sampled_from([{"code": "IMP"}, {"code": "AMB"}, {"code": "EMER"}])),
    "gender": _or_junk(st.sampled_from(["female", "male", "other", "unknown"])),
    "clinicalStatus": CODEABLE,
    "verificationStatus": CODEABLE,
    "conclusion": _or_junk(st.text(max_size=60)),
    "note": _or_junk(st.lists(st.fixed_dictionaries({"text": st.text(max_size=40)}), max_size=2)),
    "bodySite": _or_junk(st.lists(CODEABLE, max_size=2)),
    "dosageInstruction": JSON,
    "contained": JSON,
    "extension": JSON,
}


@st.composite
def fhir_resource(draw: st.DrawFn, types: list[str] = RESOURCE_TYPES) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": draw(st.sampled_from(types))}
    names = draw(st.lists(st.sampled_from(sorted(RESOURCE_FIELDS)), max_size=10, unique=True))
    for name in names:
        resource[name] = draw(RESOURCE_FIELDS[name])
    return resource


ENTRY = st.one_of(fhir_resource().map(lambda r: {"resource": r}), JSON)
BUNDLE = st.fixed_dictionaries(
    {"resourceType": st.just("Bundle")},
    optional={
        "type": st.sampled_from(["searchset", "collection", "batch"]),
        "entry": st.one_of(st.lists(ENTRY, max_size=5), JSON),
        "link": JSON,
    },
)
OPERATION_OUTCOME = st.fixed_dictionaries(
    {"resourceType": st.just("OperationOutcome")},
    optional={"issue": st.one_of(JSON, st.just([{"severity": "error", "code": "exception"}]))},
)
NON_NULL_JSON = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(JSON, max_size=3),
    st.dictionaries(st.text(max_size=8), JSON, max_size=3),
)
FHIR_BODY = st.one_of(NON_NULL_JSON, fhir_resource(), BUNDLE, BUNDLE, OPERATION_OUTCOME)
PREFETCH_VALUE = st.one_of(st.none(), FHIR_BODY)

VA_ORDER = {
    "resourceType": "ServiceRequest",
    "id": "va-draft",
    "status": "draft",
    "intent": "order",
    "subject": {"reference": "Patient/p1"},
    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
}
WARFARIN_ORDER = {
    "resourceType": "MedicationRequest",
    "id": "mr-draft",
    "status": "draft",
    "intent": "order",
    "subject": {"reference": "Patient/p1"},
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332"}]
    },
}
DRAFT_ENTRY = st.one_of(
    st.just({"resource": VA_ORDER}),
    st.just({"resource": WARFARIN_ORDER}),
    fhir_resource(["ServiceRequest", "MedicationRequest", "Observation"]).map(lambda r: {"resource": r}),
    JSON,
)
DRAFT_ORDERS = st.fixed_dictionaries(
    {"resourceType": st.just("Bundle"), "entry": st.lists(DRAFT_ENTRY, max_size=4)},
    optional={"type": st.just("collection")},
)

# What the mocked fhirServer answers for a key the client did not prefetch.
FETCH_REPLY = st.one_of(
    st.tuples(st.just(200), FHIR_BODY),
    st.tuples(st.sampled_from([401, 404, 429, 500]), st.just({"resourceType": "OperationOutcome"})),
    st.tuples(st.just(200), st.sampled_from([b"{not json", b"", b"\xff\xfe"])),
)


# ---------------------------------------------------------------------------------------------------
# The app under test, with a mocked fhirServer whose replies each example chooses
# ---------------------------------------------------------------------------------------------------

_replies: dict[str, tuple[int, Any]] = {}


def _mock_fhir(request: httpx.Request) -> httpx.Response:
    url = unquote(str(request.url))
    for query, (status, body) in _replies.items():
        if url.endswith(query):
            if isinstance(body, bytes):
                return httpx.Response(status, content=body, headers={"content-type": "application/fhir+json"})
            return httpx.Response(status, json=body)
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("props") / "props.db"
    app = create_app(
        Settings(  # type: ignore[call-arg]
            auth_mode="off", database_url=f"sqlite:///{db}", log_level="WARNING", fhir_servers=[FHIR_BASE]
        ),
        clock=lambda: NOW,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(_mock_fhir)),
    )
    with TestClient(app) as c:
        yield c


@st.composite
def hook_request(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, tuple[int, Any]]]:
    """(service id, request body, replies of the mocked fhirServer by rendered query)."""
    service_id, hook = draw(st.sampled_from(HOOK_CALLS))
    svc = SERVICES[service_id]
    context: dict[str, Any] = {"userId": "Practitioner/u1", "patientId": "p1"}
    if hook.startswith("encounter-") or draw(st.booleans()):
        context["encounterId"] = "e1"
    if hook in ("order-sign", "order-select"):
        context["draftOrders"] = draw(DRAFT_ORDERS)
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/va-draft"]
    prefetch: dict[str, Any] = {}
    replies: dict[str, tuple[int, Any]] = {}
    fetch_some = draw(st.booleans())
    for key, template in svc.prefetch.items():
        query = render(template, context)
        if fetch_some and query is not None and draw(st.booleans()):
            replies["/" + unquote(query)] = draw(FETCH_REPLY)
        else:
            prefetch[key] = draw(PREFETCH_VALUE)
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": context,
        "prefetch": prefetch,
    }
    if fetch_some:
        body["fhirServer"] = FHIR_BASE
    return service_id, body, replies


# ---------------------------------------------------------------------------------------------------
# Whole hook requests through the app
# ---------------------------------------------------------------------------------------------------


@settings(PROFILE, max_examples=2 * EXAMPLES)
@given(call=hook_request())
def test_any_prefetch_content_gives_a_valid_response(
    client: TestClient, call: tuple[str, dict[str, Any], dict[str, tuple[int, Any]]]
) -> None:
    service_id, body, replies = call
    _replies.clear()
    _replies.update(replies)
    resp = client.post(f"/cds-services/{service_id}", json=body)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    HookResponse.model_validate(payload)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in RESPONSE_SCHEMA.iter_errors(payload)
    ]
    assert not problems, problems
    summaries = [c["summary"] for c in payload["cards"]]
    assert INTERNAL_ERROR_SUMMARY not in summaries, "a rule crashed on this input (see the log)"
    rules = [c["extension"]["org.va-cds.rule"] for c in payload["cards"]]
    # --hypothesis-show-statistics shows how deep the examples reach (full review, data-unavailable...)
    event(f"{service_id}/{body['hook']}: {'some' if rules else 'no'} cards")
    for rule in rules:
        event(f"rule {rule}")
    assert len(rules) == len(set(rules)), "at most one card per rule"
    assert "sys.check-failed" not in rules, "a rule failed on this input (V2.9: see the log)"
    assert_no_order_twice(payload)
    assert [INDICATOR_ORDER[c["indicator"]] for c in payload["cards"]] == sorted(
        INDICATOR_ORDER[c["indicator"]] for c in payload["cards"]
    )


def assert_no_order_twice(payload: dict[str, Any]) -> None:
    """V2.7: the same order (resource type + code, or text) is suggested at most once per response."""
    seen: dict[tuple[str, str, str], str] = {}
    for card in payload["cards"]:
        for suggestion in card.get("suggestions") or ():
            for action in suggestion.get("actions") or ():
                resource = action.get("resource") or {}
                for key in order_keys(resource):
                    where = f"{card['extension']['org.va-cds.rule']}/{suggestion['label']}"
                    assert key not in seen, f"{key} suggested by {seen[key]} and {where}"
                    seen[key] = where


# Medications and results with every kind of time next to each other: naive vs aware comparisons must never
# raise (V2.9: an undated MedicationStatement next to a dated MedicationRequest once hid every card).
TIMED_MED = st.fixed_dictionaries(
    {
        "resourceType": st.sampled_from(["MedicationRequest", "MedicationStatement"]),
        "id": st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6),
        "status": st.sampled_from(["active", "on-hold", "intended"]),
        "intent": st.just("order"),
        "subject": st.just({"reference": "Patient/p1"}),
        "medicationCodeableConcept": st.sampled_from(
            [
                {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": c}]}
                for c in ("855332", "1364430", "309362", "854235")
            ]
        ),
    },
    optional={
        "authoredOn": DATES,
        "effectiveDateTime": DATES,
        "effectivePeriod": PERIOD,
        "dateAsserted": DATES,
    },
)
TIMED_OBS = st.fixed_dictionaries(
    {
        "resourceType": st.just("Observation"),
        "id": st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6),
        "status": st.sampled_from(["final", "preliminary", "amended"]),
        "subject": st.just({"reference": "Patient/p1"}),
        "code": st.sampled_from(
            [{"coding": [{"system": LOINC, "code": c}]} for c in ("6301-6", "777-3", "1988-5")]
        ),
        "valueQuantity": st.just(
            {"value": 1.4, "unit": "1", "code": "1", "system": "http://unitsofmeasure.org"}
        ),
    },
    optional={"effectiveDateTime": DATES, "issued": DATES, "effectivePeriod": PERIOD},
)


@settings(PROFILE, max_examples=EXAMPLES)
@given(
    service_id=st.sampled_from([s for s, _ in HOOK_CALLS]),
    meds=st.lists(TIMED_MED, min_size=1, max_size=4),
    labs=st.lists(TIMED_OBS, max_size=4),
)
def test_mixed_naive_aware_date_only_and_missing_times_never_break_a_check(
    client: TestClient, service_id: str, meds: list[dict[str, Any]], labs: list[dict[str, Any]]
) -> None:
    svc = SERVICES[service_id]
    context: dict[str, Any] = {"userId": "Practitioner/u1", "patientId": "p1", "encounterId": "e1"}
    if svc.hook in ("order-sign", "order-select"):
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": VA_ORDER}]}
    if svc.hook == "order-select":
        context["selections"] = ["ServiceRequest/va-draft"]
    everything = {"resourceType": "Bundle", "entry": [{"resource": r} for r in [*meds, *labs]]}
    prefetch = {key: everything for key in svc.prefetch}
    body = {"hook": svc.hook, "hookInstance": "5b1f8d0e-0a37-4c3e-9a0b-1b4b1f6c2d10", "context": context}
    resp = client.post(f"/cds-services/{service_id}", json={**body, "prefetch": prefetch})
    assert resp.status_code == 200, resp.text
    rules = [c["extension"]["org.va-cds.rule"] for c in resp.json()["cards"]]
    assert "sys.check-failed" not in rules, rules
    assert INTERNAL_ERROR_SUMMARY not in [c["summary"] for c in resp.json()["cards"]]
    assert_no_order_twice(resp.json())


def test_undated_statement_next_to_dated_request_regression(client: TestClient) -> None:
    """The V2.9 TypeError: an undated MedicationStatement and a dated MedicationRequest of one drug."""
    rx = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332"}]}
    meds = [
        {
            "resourceType": "MedicationStatement",
            "id": "s",
            "status": "active",
            "medicationCodeableConcept": rx,
        },
        {
            "resourceType": "MedicationRequest",
            "id": "r",
            "status": "active",
            "intent": "order",
            "authoredOn": "2026-11-01T09:00:00Z",
            "medicationCodeableConcept": rx,
        },
    ]
    svc = SERVICES["va-preprocedure-order-sign"]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": m} for m in meds]}
    body = {
        "hook": "order-sign",
        "hookInstance": "5b1f8d0e-0a37-4c3e-9a0b-1b4b1f6c2d11",
        "context": {
            "userId": "Practitioner/u1",
            "patientId": "p1",
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": VA_ORDER}]},
        },
        "prefetch": {key: (bundle if key.startswith("medication") else None) for key in svc.prefetch},
    }
    resp = client.post("/cds-services/va-preprocedure-order-sign", json=body)
    assert resp.status_code == 200
    rules = [c["extension"]["org.va-cds.rule"] for c in resp.json()["cards"]]
    assert "pre.coag.antithrombotic-active" in rules and "sys.check-failed" not in rules


@PROFILE
@given(call=hook_request())
def test_extractor_reads_whole_requests_without_stopping(
    call: tuple[str, dict[str, Any], dict[str, tuple[int, Any]]],
) -> None:
    _, body, _ = call
    resources = [r for value in body["prefetch"].values() for r in read_prefetched(value).resources]
    facts = extract_facts(resources, draft_order_resources(body["context"]))
    assert isinstance(facts, ClinicalFacts)
    stopped = [p for p in facts.problems if p.startswith("extraction stopped early")]
    assert not stopped, stopped


# ---------------------------------------------------------------------------------------------------
# Unit conversions
# ---------------------------------------------------------------------------------------------------

KIND_UNIT = [(kind, unit) for kind, table in sorted(UNITS.items()) for unit in sorted(table)]


def _respell(unit: str, upper: bool, spaced: bool) -> str:
    out = unit.upper() if upper else unit
    return f" {out} " if spaced else out


@PROFILE
@given(
    pair=st.sampled_from(KIND_UNIT),
    value=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    upper=st.booleans(),
    spaced=st.booleans(),
)
def test_unit_conversions_round_trip(pair: tuple[str, str], value: float, upper: bool, spaced: bool) -> None:
    kind, unit = pair
    spelled = _respell(unit, upper, spaced)
    canonical = to_canonical(kind, value, spelled)
    assert math.isfinite(canonical)
    back = from_canonical(kind, canonical, spelled)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-6), (kind, spelled, value, canonical, back)
    # normalize_quantity reads the UCUM code first, then the display unit: either spelling works alone.
    assert math.isclose(normalize_quantity(kind, value, spelled, None), canonical, rel_tol=1e-12, abs_tol=0)
    assert math.isclose(normalize_quantity(kind, value, None, spelled), canonical, rel_tol=1e-12, abs_tol=0)


@PROFILE
@given(
    kind=st.sampled_from([*sorted(UNITS), "not-a-kind"]),
    value=st.floats(),
    code=st.none() | st.text(max_size=12),
    unit=st.none() | st.text(max_size=12),
)
def test_unknown_units_and_odd_values_raise_only_unit_error(
    kind: str, value: float, code: str | None, unit: str | None
) -> None:
    try:
        out = normalize_quantity(kind, value, code, unit)
    except UnitError:
        return
    assert math.isfinite(out)


# ---------------------------------------------------------------------------------------------------
# Card builder
# ---------------------------------------------------------------------------------------------------

ANY_TEXT = st.text(max_size=300)  # any script, emoji, control characters, whitespace
SOME_TEXT = st.text(min_size=1, max_size=300).filter(lambda s: s.strip() != "")
RULE_ID = st.from_regex(r"\A[a-z][a-z0-9.-]{0,30}\Z")
RESOURCE = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["ServiceRequest", "MedicationRequest"])},
    optional={"status": st.just("draft"), "note": st.lists(st.fixed_dictionaries({"text": ANY_TEXT}))},
)


def _suggestion(text: st.SearchStrategy[str]) -> st.SearchStrategy[SuggestionSpec]:
    return st.builds(
        SuggestionSpec,
        label=text,
        resources=st.lists(RESOURCE, min_size=1, max_size=2).map(tuple),
        description=text,
        is_recommended=st.booleans(),
    )


def _spec(text: st.SearchStrategy[str], rule_id: st.SearchStrategy[str]) -> st.SearchStrategy[CardSpec]:
    return st.builds(
        CardSpec,
        rule_id=rule_id,
        indicator=st.sampled_from(["info", "warning", "critical"]),
        summary=text,
        detail=ANY_TEXT,
        citation=text,
        evidence=st.lists(st.builds(Evidence, reference=text, summary=text), max_size=3).map(tuple),
        policy_used=st.dictionaries(st.text(min_size=1, max_size=10), JSON, max_size=3),
        suggestions=st.lists(_suggestion(text), max_size=3).map(tuple),
        selection_behavior=st.sampled_from(["any", "at-most-one"]),
        override_reasons=st.none()
        | st.lists(st.builds(OverrideReasonSpec, code=text, display=text), max_size=3).map(tuple),
        links=st.lists(
            st.builds(
                LinkSpec,
                label=text,
                url=st.sampled_from(["/docs/rules/x", "https://example.org/a?b=c", "http://h/p"]),
                type=st.sampled_from(["absolute", "smart"]),
            ),
            max_size=2,
        ).map(tuple),
    )


def _well_formed(spec: CardSpec) -> bool:
    recommended = sum(1 for s in spec.suggestions if s.is_recommended)
    return not (spec.selection_behavior == "at-most-one" and recommended > 1)


def _assert_valid_cards(specs: list[CardSpec], cards: list[Any]) -> None:
    payload = HookResponse(cards=cards).model_dump(mode="json", exclude_none=True)
    HookResponse.model_validate(payload)  # round-trips through the strict wire model
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in RESPONSE_SCHEMA.iter_errors(payload)
    ]
    assert not problems, problems
    assert len(cards) == len({s.rule_id for s in specs}), "one card per rule"
    assert len({c.uuid for c in cards}) == len(cards)
    for card in payload["cards"]:
        assert 0 < len(card["summary"]) < 140
        assert ("suggestions" in card) == ("selectionBehavior" in card)
        assert "\n" not in card["summary"]
    levels = [INDICATOR_ORDER[c.indicator] for c in cards]
    assert levels == sorted(levels)


@PROFILE
@given(specs=st.lists(_spec(SOME_TEXT, RULE_ID), min_size=1, max_size=4))
def test_well_formed_specs_always_build_valid_cards(specs: list[CardSpec]) -> None:
    specs = [s for s in specs if _well_formed(s)]
    cards = build_cards(specs, "https://cds.example.org")
    _assert_valid_cards(specs, cards)


@PROFILE
@given(specs=st.lists(_spec(ANY_TEXT, RULE_ID | st.text(max_size=12)), min_size=1, max_size=4))
def test_any_spec_is_refused_or_builds_valid_cards(specs: list[CardSpec]) -> None:
    """Blank summaries, empty labels, blank override reasons, two recommended suggestions under
    at-most-one, rule ids outside the pattern, empty citations or evidence...: a malformed spec is a
    programming error in a rule, and the builder must refuse it loudly (ValidationError) rather than emit a
    card the contract forbids."""
    try:
        cards = build_cards(specs, "https://cds.example.org")
    except ValidationError:
        return
    _assert_valid_cards(specs, cards)


@pytest.mark.parametrize(
    "spec",
    [
        CardSpec(rule_id="pre.x", indicator="info", summary="s", detail="", citation=""),
        CardSpec(rule_id="Pre X", indicator="info", summary="s", detail="", citation="c"),
        CardSpec(
            rule_id="pre.x",
            indicator="info",
            summary="s",
            detail="",
            citation="c",
            evidence=(Evidence("", ""),),
        ),
    ],
    ids=["empty-citation", "rule-id-pattern", "empty-evidence"],
)
def test_builder_refuses_specs_whose_extension_breaks_the_contract(spec: CardSpec) -> None:
    try:
        cards = build_cards([spec], "https://cds.example.org")
    except ValidationError:
        return
    _assert_valid_cards([spec], cards)
