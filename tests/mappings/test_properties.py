"""Property tests: any JSON whatsoever fed to extract_facts returns ClinicalFacts, never an exception."""

from __future__ import annotations

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
