"""va-discharge at the facts level: scope (encounter or recent VA), neuro exam (with its missing-data and
failed-source behaviour), red flags, documentation, bone health, follow-up, and the service definition."""

from __future__ import annotations

import re
from datetime import timedelta

from fhir_mappings.facts import EncounterFact, Evidence, ProcedureFact
from hooks import discharge
from hooks.discharge import rules as dis
from tests.post.factories import (
    ENCOUNTER,
    NOW,
    POLICY,
    VA_T,
    card,
    cond,
    ids,
    make_facts,
    med,
    proc,
    run_discharge,
    suggested_codes,
    va,
)

ALWAYS = {dis.RED_FLAGS, dis.FOLLOWUP}


def _exam_after(v_end_offset: timedelta = timedelta(hours=2)) -> ProcedureFact:
    return proc({"neuro-exam"}, VA_T + v_end_offset, display="Neurological examination")


# ---- scope ------------------------------------------------------------------------------------------


def test_no_va_gives_no_cards() -> None:
    assert run_discharge(make_facts(medications=[])) == []


def test_va_in_the_discharged_encounter_applies_even_when_older_than_the_recent_days() -> None:
    old = va(NOW - timedelta(days=20), encounter=f"Encounter/{ENCOUNTER}")
    cards = run_discharge(make_facts(procedures=[old]))
    assert ALWAYS <= ids(cards)


def test_va_inside_the_encounter_period_without_a_reference_applies() -> None:
    start = NOW - timedelta(days=20)
    facts = make_facts(procedures=[va(start + timedelta(days=1))])
    facts.encounters = [
        EncounterFact(Evidence(f"Encounter/{ENCOUNTER}", "stay"), ENCOUNTER, "in-progress", start, None)
    ]
    assert ALWAYS <= ids(run_discharge(facts))


def test_recent_va_boundary() -> None:
    days = POLICY.value("discharge_recent_va_days")
    inside = va(NOW - timedelta(days=days), encounter="Encounter/other")
    assert ALWAYS <= ids(run_discharge(make_facts(procedures=[inside])))
    outside = va(NOW - timedelta(days=days, minutes=1), encounter="Encounter/other")
    assert run_discharge(make_facts(procedures=[outside])) == []


def test_not_performed_va_does_not_apply() -> None:
    assert run_discharge(make_facts(procedures=[va(status="not-done")])) == []


def test_failed_procedures_source_returns_only_data_unavailable() -> None:
    cards = run_discharge(make_facts(medications=[]), unavailable=["procedures"])
    assert ids(cards) == {"sys.data-unavailable"}


# ---- neuro exam -------------------------------------------------------------------------------------


def test_neuro_exam_after_the_procedure_end_satisfies_the_check() -> None:
    facts = make_facts(procedures=[va(), _exam_after()])
    assert dis.NEURO_EXAM_MISSING not in ids(run_discharge(facts))


def test_neuro_exam_only_before_the_procedure_is_missing() -> None:
    before = proc({"neuro-exam"}, VA_T - timedelta(hours=3), display="Neuro exam (baseline)")
    spec = card(run_discharge(make_facts(procedures=[va(), before])), dis.NEURO_EXAM_MISSING)
    assert spec.indicator == "warning" and spec.override_reasons


def test_neuro_exam_missing_when_none_recorded() -> None:
    assert dis.NEURO_EXAM_MISSING in ids(run_discharge(make_facts(procedures=[va()])))


def test_neuro_exam_during_the_procedure_does_not_count() -> None:
    during = proc({"neuro-exam"}, VA_T + timedelta(minutes=10), display="Neurological examination")
    assert dis.NEURO_EXAM_MISSING in ids(run_discharge(make_facts(procedures=[va(), during])))


def test_neuro_exam_found_by_text_or_as_an_observation_finding() -> None:
    by_text = proc(set(), VA_T + timedelta(hours=3), display="Post-op neurological assessment")
    assert dis.NEURO_EXAM_MISSING not in ids(run_discharge(make_facts(procedures=[va(), by_text])))
    observed = cond("neuro-exam", VA_T + timedelta(hours=3), display="Neuro check")
    assert dis.NEURO_EXAM_MISSING not in ids(
        run_discharge(make_facts(procedures=[va()], conditions=[observed]))
    )


def test_neuro_exam_unknown_when_its_source_failed() -> None:
    cards = run_discharge(make_facts(procedures=[va()]), unavailable=["examObservations"])
    assert dis.NEURO_EXAM_MISSING not in ids(cards)
    assert "discharge.neuro-exam-missing" in card(cards, "sys.data-unavailable").detail
    assert ALWAYS <= ids(cards)


# ---- documentation ----------------------------------------------------------------------------------


def test_documentation_card_lists_what_is_missing() -> None:
    spec = card(
        run_discharge(make_facts(procedures=[va(level=None, region=None, documented=False)])),
        dis.DOCUMENTATION,
    )
    for item in ("Level", "Approach", "Cement details", "Complications"):
        assert item in spec.detail
    assert "4 documentation item(s)" in spec.summary
    assert spec.indicator == "info"


def test_complete_documentation_gives_no_card() -> None:
    cards = run_discharge(make_facts(procedures=[va(), _exam_after()]))
    assert dis.DOCUMENTATION not in ids(cards)
    assert ids(cards) == ALWAYS  # treated, examined, documented: only the two always-on cards


# ---- bone health ------------------------------------------------------------------------------------


def test_discharge_bone_health() -> None:
    untreated = run_discharge(make_facts(procedures=[va(), _exam_after()], medications=[]))
    spec = card(untreated, dis.BONE_HEALTH)
    assert spec.indicator == "warning"
    assert "Referral to endocrinologist" in suggested_codes(spec)
    planned = make_facts(
        procedures=[va()],
        medications=[],
        draft_medications=[med("zoledronic acid", draft=True, active=False, status="draft")],
    )
    assert dis.BONE_HEALTH not in ids(run_discharge(planned))
    assert dis.BONE_HEALTH not in ids(run_discharge(make_facts(procedures=[va()])))  # alendronate active
    supplements_only = make_facts(procedures=[va()], medications=[med("calcium", drug_class="supplement")])
    assert dis.BONE_HEALTH in ids(run_discharge(supplements_only))


def test_discharge_bone_health_unknown_when_medications_failed() -> None:
    cards = run_discharge(make_facts(procedures=[va()], medications=[]), unavailable=["medicationStatements"])
    assert dis.BONE_HEALTH not in ids(cards)
    assert "sys.data-unavailable" in ids(cards)


# ---- cards and service ------------------------------------------------------------------------------


def test_discharge_cards_are_valid_and_short() -> None:
    from cds_service.cards import build_cards

    cards = run_discharge(
        make_facts(procedures=[va(level=None, region=None, documented=False)], medications=[])
    )
    assert ids(cards) == set(dis.DISCHARGE_RULE_IDS)
    built = build_cards(cards, "https://cds.example.org")
    for spec, wire in zip(
        sorted(cards, key=lambda c: c.rule_id),
        sorted(built, key=lambda c: c.source.topic.code),
        strict=True,
    ):
        assert len(wire.summary) < 140
        assert spec.citation in (wire.detail or "")  # the chapter section, on every card
        assert len([x for x in (wire.detail or "").splitlines() if x.strip()]) <= 8
    assert built[0].indicator == "warning"
    red = card(cards, dis.RED_FLAGS)
    for flag in ("Fever", "Wound", "weakness", "Shortness of breath"):
        assert flag in red.detail
    assert "2–6 weeks" in card(cards, dis.FOLLOWUP).detail


def test_discharge_service_definition() -> None:
    (svc,) = discharge.services(POLICY)
    assert svc.id == "va-discharge" and svc.hook == "encounter-discharge"
    assert {d.rule_id for d in svc.rules} == {*dis.DISCHARGE_RULE_IDS, "sys.check-failed"}
    assert svc.prefetch["encounter"] == "Encounter/{{context.encounterId}}"
    assert set(svc.checks_by_key) <= set(svc.prefetch)
    allowed = {"context.patientId", "context.encounterId"}
    for template in svc.prefetch.values():
        assert set(re.findall(r"\{\{([^}]*)\}\}", template)) <= allowed
