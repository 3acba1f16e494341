"""Synthea records through the real extractor (fhir_mappings.extract) and the post/discharge services.

None of the records holds a VA: tests add a completed Procedure (CPT 22513, kyphoplasty, thoracic) shortly
after the record's last encounter and fix the clock relative to it (records end in 2018–2021).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from fhir_mappings.extract import extract_facts
from hooks.discharge import rules as dis
from hooks.postprocedure import rules as post
from tests.post.factories import ids, run_discharge, run_post
from tests.shared_paths import SYNTHEA


def _record(prefix: str) -> tuple[list[dict[str, Any]], str, datetime]:
    """Clinical resources (billing dropped, as a prefetch would), the patient id, and the record's end."""
    path = next(SYNTHEA.glob(f"{prefix}_*.json"))
    bundle = json.loads(path.read_text(encoding="utf-8"))
    resources = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] not in ("Claim", "ExplanationOfBenefit")
    ]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    ends = [
        r["period"]["end"]
        for r in resources
        if r["resourceType"] == "Encounter" and "end" in r.get("period", {})
    ]
    return resources, patient["id"], datetime.fromisoformat(max(ends))


def _va(patient_id: str, when: datetime, encounter: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": "va-added-by-test",
        "status": "completed",
        "subject": {"reference": f"urn:uuid:{patient_id}"},
        "code": {
            "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}],
            "text": "Percutaneous kyphoplasty",
        },
        "performedDateTime": when.isoformat(),
    }
    if encounter:
        body["encounter"] = {"reference": f"Encounter/{encounter}"}
    return body


def _post_cards(prefix: str, *, add_va: bool) -> list[Any]:
    resources, patient_id, end = _record(prefix)
    va_time = end + timedelta(days=1)
    if add_va:
        resources = [*resources, _va(patient_id, va_time)]
    facts = extract_facts(resources)
    return run_post(facts, now=va_time + timedelta(days=30))


@pytest.mark.parametrize("prefix", ["Cruz_Halvorson", "Jonathan_Hermiston"])
def test_added_va_without_osteoporosis_therapy_gets_bone_health_untreated(prefix: str) -> None:
    cards = _post_cards(prefix, add_va=True)
    assert ids(cards) == {post.BONE_HEALTH}
    spec = cards[0]
    assert any(e.reference.endswith("va-added-by-test") for e in spec.evidence)
    assert spec.suggestions  # DXA / falls clinic / endocrinology, validated ServiceRequests


def test_lonnie_von_on_alendronate_with_added_va_is_not_untreated() -> None:
    cards = _post_cards("Lonnie_Von", add_va=True)
    assert post.BONE_HEALTH not in ids(cards)
    assert ids(cards) == {post.FOLLOWUP}  # in scope, nothing alarming on the record after the VA


def test_luigi_wiegand_without_va_gets_no_cards() -> None:
    assert _post_cards("Luigi_Wiegand", add_va=False) == []


@pytest.mark.parametrize("prefix", ["Lonnie_Von", "Hallie_Hoeger", "Wendell_Lesch"])
def test_records_without_a_va_get_no_post_or_discharge_cards(prefix: str) -> None:
    resources, _, end = _record(prefix)
    facts = extract_facts(resources)
    assert run_post(facts, now=end) == []
    assert run_discharge(facts, now=end) == []


def test_lonnie_von_discharge_after_va_in_the_encounter() -> None:
    resources, patient_id, end = _record("Lonnie_Von")
    va_time = end + timedelta(days=1)
    facts = extract_facts([*resources, _va(patient_id, va_time, encounter="enc-va")])
    cards = run_discharge(facts, now=va_time + timedelta(hours=6), encounter_id="enc-va")
    # No neuro exam, bare procedure record; alendronate active → no bone-health card.
    assert ids(cards) == {dis.NEURO_EXAM_MISSING, dis.RED_FLAGS, dis.DOCUMENTATION, dis.FOLLOWUP}
