"""Property tests: any JSON whatsoever fed to extract_facts returns ClinicalFacts, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_mappings.extract import extract_facts
from fhir_mappings.facts import ClinicalFacts

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)

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
]
FIELDS = [
    "id",
    "status",
    "intent",
    "code",
    "coding",
    "system",
    "display",
    "text",
    "medicationCodeableConcept",
    "medicationReference",
    "reference",
    "contained",
    "ingredient",
    "itemCodeableConcept",
    "authoredOn",
    "effectiveDateTime",
    "effectivePeriod",
    "start",
    "end",
    "issued",
    "valueQuantity",
    "value",
    "unit",
    "valueCodeableConcept",
    "valueString",
    "valueInteger",
    "valueBoolean",
    "component",
    "interpretation",
    "category",
    "clinicalStatus",
    "verificationStatus",
    "onsetDateTime",
    "abatementDateTime",
    "recordedDate",
    "reaction",
    "substance",
    "note",
    "bodySite",
    "performedDateTime",
    "performedPeriod",
    "usedCode",
    "complication",
    "encounter",
    "occurrenceDateTime",
    "occurrencePeriod",
    "reasonCode",
    "serviceType",
    "description",
    "conclusion",
    "conclusionCode",
    "presentedForm",
    "contentType",
    "data",
    "series",
    "modality",
    "procedureCode",
    "birthDate",
    "gender",
    "period",
    "entry",
    "resource",
    "fullUrl",
    "dosageInstruction",
    "effectiveInstant",
    "effectivePeriod",
    "onsetPeriod",
    "abatementPeriod",
    "dateAsserted",
    "started",
    "deceasedDateTime",
    "deceasedBoolean",
    "occurrenceTiming",
    "event",
    "subject",
    "patient",
    "priority",
    "class",
    "doseAndRate",
    "doseQuantity",
    "timing",
    "repeat",
    "frequency",
    "periodUnit",
    "route",
    "form",
]
# Values that look like FHIR but with the wrong types and odd contents.
LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [
            "final",
            "active",
            "order",
            "http://loinc.org",
            "6301-6",
            "777-3",
            "8480-6",
            "600-7",
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "855332",
            "2026-11-19",
            "2026-11-19T08:00:00",  # naive
            "2026-11-19T08:00:00+05:00",  # aware
            "2026-11-19T08:00:00Z",
            "2026",
            "2026-11",
            "2999-01-01",  # future
            "2026-99-99",
            "urn:uuid:x",
            "#m",
            "Medication/x",
            "[degF]",
            "mg",
            "M80.08XD",
            "heparin lock flush",
            "no history of COPD",
            "T12",
            "aGVsbG8=",
            "text/plain",
            "%%%",
            "",
        ]
    )
    | st.text(max_size=12)
)


def _fhirish(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return LEAF
    child = _fhirish(depth - 1)
    return st.one_of(
        LEAF,
        st.lists(child, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS), child, max_size=5),
    )


RESOURCE = st.builds(
    lambda rt, body: {**body, "resourceType": rt} if isinstance(body, dict) else body,
    st.sampled_from(RESOURCE_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), _fhirish(3), max_size=8),
)


def _check(facts: Any) -> None:
    assert isinstance(facts, ClinicalFacts)
    assert all(isinstance(p, str) for p in facts.problems)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(JSON)
def test_arbitrary_json_never_raises(data: Any) -> None:
    _check(extract_facts(data))
    _check(extract_facts([data], draft_orders=data))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(RESOURCE, max_size=6), st.lists(RESOURCE, max_size=3))
def test_fhir_shaped_garbage_never_raises(resources: list[Any], drafts: list[Any]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": r} for r in resources]}
    _check(extract_facts(resources, drafts))
    _check(extract_facts([bundle, *resources], [bundle]))


def test_top_level_odd_inputs() -> None:
    for value in (
        None,
        42,
        "Observation",
        b"x",
        3.5,
        True,
        {"resourceType": "Bundle", "entry": "nope"},
        [[[]]],
    ):
        facts = extract_facts(value)  # type: ignore[arg-type]
        _check(facts)
    assert extract_facts(42).problems  # type: ignore[arg-type]


def test_generator_input_is_consumed() -> None:
    gen = (
        {
            "resourceType": "Observation",
            "id": str(i),
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "6301-6"}]},
            "valueQuantity": {"value": 1.0 + i / 10, "code": "{INR}"},
            "effectiveDateTime": "2026-11-19",
        }
        for i in range(3)
    )
    assert len(extract_facts(gen).measurements) == 3


def test_deep_nesting_is_bounded() -> None:
    inner: dict[str, Any] = {"resourceType": "Patient", "id": "p"}
    for _ in range(50):
        inner = {"resourceType": "Bundle", "entry": [{"resource": inner}]}
    facts = extract_facts([inner])
    _check(facts)
    assert any("nested deeper" in p for p in facts.problems)


# V2.9: every date field the extractors read, with naive, aware, date-only, partial and missing times, and
# then every facts helper that compares those times (a naive/aware comparison raises TypeError).
_TIMES = st.sampled_from(
    [
        "2026-11-19",
        "2026-11-19T08:00:00",
        "2026-11-19T08:00:00+05:00",
        "2026-11-19T08:00:00Z",
        "2026",
        "2026-11",
    ]
)
_DATE_FIELDS = [
    "effectiveDateTime",
    "effectiveInstant",
    "issued",
    "authoredOn",
    "dateAsserted",
    "onsetDateTime",
    "recordedDate",
    "abatementDateTime",
    "performedDateTime",
    "occurrenceDateTime",
    "started",
    "birthDate",
    "deceasedDateTime",
    "start",
]
_PERIOD_FIELDS = [
    "effectivePeriod",
    "onsetPeriod",
    "abatementPeriod",
    "performedPeriod",
    "occurrencePeriod",
    "period",
]
_CODES = [{"coding": [{"system": "http://loinc.org", "code": c}]} for c in ("6301-6", "777-3", "24968-0")] + [
    {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "855332"}]},
    {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
    {"coding": [{"system": "http://snomed.info/sct", "code": "71286001"}]},
]


@st.composite
def _timed(draw: st.DrawFn) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": draw(st.sampled_from(RESOURCE_TYPES[:-2])),
        "id": draw(st.text(alphabet="abc123", min_size=1, max_size=4)),
        "status": draw(st.sampled_from(["active", "final", "completed", "booked", "preliminary"])),
        "intent": "order",
        "code": draw(st.sampled_from(_CODES)),
        "medicationCodeableConcept": draw(st.sampled_from(_CODES)),
        "valueQuantity": {"value": 1.2},
    }
    for name in draw(st.lists(st.sampled_from(_DATE_FIELDS), max_size=5, unique=True)):
        r[name] = draw(_TIMES)
    for name in draw(st.lists(st.sampled_from(_PERIOD_FIELDS), max_size=2, unique=True)):
        r[name] = {"start": draw(_TIMES)} if draw(st.booleans()) else {"end": draw(_TIMES)}
    return r


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(resources=st.lists(_timed(), max_size=8))
def test_mixed_times_never_raise_in_extraction_or_fact_helpers(resources: list[dict[str, Any]]) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    facts = extract_facts(resources, resources[:2], now=now, patient_id="p1")
    assert not [p for p in facts.problems if p.startswith("extraction stopped early")]
    for kind in ("inr", "platelets"):
        facts.measurements_of(kind, since=datetime(2026, 1, 1, tzinfo=UTC), until=now)
        facts.latest(kind)
        facts.latest_any(kind, since=datetime(2026, 1, 1, tzinfo=UTC))
    every = [
        *(m.time for m in facts.measurements),
        *(m.authored for m in facts.medications),
        *(c.onset for c in facts.conditions),
        *(c.recorded for c in facts.conditions),
        *(p.start for p in facts.procedures),
        *(o.planned for o in facts.orders + facts.draft_orders),
        *(i.time for i in facts.imaging),
    ]
    dated = [t for t in every if t is not None]
    assert all(t.tzinfo is not None for t in dated), "every fact time is timezone-aware"
    sorted(dated)  # comparable with each other
    assert all(t <= now + timedelta(minutes=10) for t in (m.time for m in facts.measurements) if t)
