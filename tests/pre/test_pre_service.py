"""The va-preprocedure service as a whole: scope, quick_scope on sandbox-shaped contexts, discovery
fields, rule docs, card validity (through the core's card builder) and the checklist."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from cds_service.cards import build_cards
from cds_service.contracts import MEDICATION_REFS_KEY
from hooks.preprocedure.scope import quick_scope
from tests.pre.builders import (
    NOW,
    SERVICE,
    SERVICES,
    ClinicalFacts,
    all_text,
    allergy,
    carried,
    cond,
    meas,
    med,
    mri,
    ready_facts,
    rows,
    rule_ids,
    run,
    va_order,
)
from tests.shared_paths import SANDBOX

CATALOG_IDS = {
    "pre.coag.antithrombotic-active",
    "pre.coag.labs-out-of-range",
    "pre.coag.labs-missing",
    "pre.infection.active",
    "pre.coag.coagulopathy",
    "pre.infection.labs-abnormal",
    "pre.indication.posterior-wall",
    "pre.patient-deceased",
    "pre.infection.history",
    "pre.infection.screen-missing",
    "pre.infection.risk-factors",
    "pre.indication.concordance-missing",
    "pre.indication.concordance-discordant",
    "pre.indication.neuro-red-flags",
    "pre.allergy.contrast",
    "pre.allergy.cement",
    "pre.sedation.cardiopulmonary",
    "pre.optimization.glycemic",
    "pre.checklist",
    "pre.antithrombotic-order-while-va-planned",
    "sys.data-unavailable",
    "sys.check-failed",
}


def _sandbox_context(name: str) -> tuple[str, dict[str, object]]:
    body = json.loads((SANDBOX / name).read_text())["request"]["body"]
    return body["hook"], body["context"]


def _draft(resource: dict[str, object]) -> dict[str, object]:
    return {"draftOrders": {"resourceType": "Bundle", "entry": [{"resource": resource}]}}


# ---- quick_scope ----


def test_quick_scope_sandbox_rx_view_and_sign_are_out_of_scope() -> None:
    for name in ("order-select-rx-view-empty.json", "order-select-rx-view.json", "order-sign-rx-sign.json"):
        hook, context = _sandbox_context(name)
        assert quick_scope(hook, context) is False, name  # empty medication / ibuprofen: nothing to check


def test_quick_scope_sandbox_ct_head_order_is_out_of_scope() -> None:
    hook, context = _sandbox_context("order-select-pama.json")
    assert quick_scope(hook, context) is False


def test_quick_scope_va_service_request_needs_full_evaluation() -> None:
    sr = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "22513"}]},
    }
    assert quick_scope("order-sign", _draft(sr)) is None
    by_text = {"resourceType": "ServiceRequest", "code": {"text": "Balloon kyphoplasty T12"}}
    assert quick_scope("order-select", _draft(by_text)) is None


def test_quick_scope_antithrombotic_or_unknown_product_needs_full_evaluation() -> None:
    rx = "http://www.nlm.nih.gov/research/umls/rxnorm"
    plavix = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "Plavix 75 mg"}}
    assert quick_scope("order-sign", _draft(plavix)) is None
    coded = {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {"coding": [{"system": rx, "code": "309362"}]},
    }
    assert quick_scope("order-sign", _draft(coded)) is None
    bare = {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {"coding": [{"system": rx, "code": "999"}]},
    }
    assert quick_scope("order-sign", _draft(bare)) is None  # cannot rule it out cheaply
    ref = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/1"}}
    assert quick_scope("order-sign", _draft(ref)) is None
    flush = {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": "Heparin lock flush"}}
    assert quick_scope("order-sign", _draft(flush)) is False


def test_quick_scope_patient_view_always_needs_data() -> None:
    hook, context = _sandbox_context("patient-view.json")
    assert quick_scope(hook, context) is None


# ---- scope on facts ----


def test_no_va_in_scope_no_cards_even_with_alarming_data() -> None:
    f = ready_facts()
    f.draft_orders = []
    f.medications.append(med("warfarin"))
    f.measurements.append(meas("inr", 4.0, timedelta(hours=2)))
    assert run(f, "order-sign") == []
    assert run(f, "patient-view") == []


def test_completed_or_cancelled_va_is_not_planned() -> None:
    f = ClinicalFacts(orders=[va_order(draft=False, status="completed", planned=NOW + timedelta(days=1))])
    f.orders.append(va_order(draft=False, resource_type="Appointment", status="cancelled", planned=NOW))
    assert run(f, "patient-view") == []


def test_full_review_always_has_the_checklist_with_a_docs_link() -> None:
    cards = run(ready_facts(), "order-select")
    checklist = [c for c in cards if c.rule_id == "pre.checklist"]
    assert len(checklist) == 1
    assert checklist[0].links[0].url == "/docs/rules/pre.checklist"


# ---- discovery, docs, validity ----


def test_service_definition_discovery_fields() -> None:
    assert [(d.id, d.hook) for d in SERVICES] == [
        ("va-preprocedure-order-sign", "order-sign"),
        ("va-preprocedure-order-select", "order-select"),
        ("va-preprocedure-patient-view", "patient-view"),
    ]
    assert all(d.handler is SERVICE.handler and d.prefetch == SERVICE.prefetch for d in SERVICES)
    assert SERVICE.title and SERVICE.description and SERVICE.usage_requirements
    # every prefetch key, plus the core's pseudo key for Medications fetched by reference (V2.4)
    assert set(SERVICE.checks_by_key) == set(SERVICE.prefetch) | {MEDICATION_REFS_KEY}


def test_prefetch_uses_only_cds_hooks_2_tokens_and_bounded_searches() -> None:
    for key, template in SERVICE.prefetch.items():
        tokens = set(re.findall(r"\{\{(.*?)\}\}", template))
        assert tokens <= {"context.patientId"}, key
        assert "today" not in template and "ofType" not in template
        if "?" in template:
            assert "_count=" in template, key
        if template.startswith("Observation?"):
            assert "_sort=-date" in template and "code=http://loinc.org|" in template, key


def test_every_rule_id_has_exactly_one_rule_doc() -> None:
    ids = [d.rule_id for d in SERVICE.rules]
    assert len(ids) == len(set(ids))
    assert set(ids) == CATALOG_IDS
    for doc in SERVICE.rules:
        assert doc.checks and doc.reads and doc.steps and doc.citation and doc.hooks
        assert "ref [6" not in doc.citation or "sedation" in doc.title.lower()  # ref 6 is not coagulation


def _everything_wrong() -> ClinicalFacts:
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=1), level="T12"))
    f.medications += [
        med("warfarin"),
        med("clopidogrel", "antiplatelet"),
        med("tacrolimus", "immunosuppressant"),
    ]
    f.draft_medications.append(med("apixaban", draft=True, display="Eliquis | 5 mg"))
    f.measurements += [
        meas("inr", 3.4, timedelta(hours=3)),
        meas("platelets", 20, timedelta(hours=3)),
        meas("temperature", 39.2, timedelta(hours=1)),
        meas("hba1c", 11.0, timedelta(days=3)),
        meas("blood_culture", None, timedelta(days=1), positive=True),
        meas("crp", 160, timedelta(hours=3)),
    ]
    f.conditions += [
        cond(
            c,
            display=f"{c} with a long, long record display text that goes on and on",
            onset=timedelta(days=9),
        )
        for c in (
            "discitis",
            "diabetes",
            "copd",
            "osa",
            "cord-compression",
            "myelopathy",
            "bleeding-disorder",
        )
    ]
    f.conditions += [cond("spondylitis", active=False), cond("posterior-wall")]
    f.allergies += [allergy("contrast-iodinated"), allergy("bone-cement")]
    f.imaging = [mri(findings=("no-edema", "chronic"), levels=("L3",))]
    return f


# What the worst-case chart shows as cards, and what it folds (V2.2: every finding in exactly one card).
WORST_CARDS = {
    "pre.indication.neuro-red-flags",
    "pre.infection.active",
    "pre.coag.labs-out-of-range",
    "pre.allergy.cement",
    "pre.coag.antithrombotic-active",
    "pre.indication.concordance-discordant",
    "pre.allergy.contrast",
    "pre.optimization.glycemic",
    "pre.checklist",
    "sys.data-unavailable",
}
WORST_FOLDED = {
    "pre.indication.posterior-wall": "pre.indication.neuro-red-flags",
    "pre.infection.labs-abnormal": "pre.infection.active",
    "pre.infection.history": "pre.infection.active",
    "pre.coag.coagulopathy": "pre.coag.labs-out-of-range",
    "pre.sedation.cardiopulmonary": "pre.checklist",
    "pre.infection.risk-factors": "pre.checklist",
}


def test_worst_case_patient_every_card_valid_short_and_sorted() -> None:
    cards = run(_everything_wrong(), "order-sign", unavailable={"renalLabs"})
    assert rule_ids(cards) == WORST_CARDS
    where = carried(cards)
    assert {k: where[k] for k in WORST_FOLDED} == WORST_FOLDED
    for c in cards:
        assert len(c.summary) < 140, c.summary
        if c.rule_id != "pre.checklist":  # the checklist alone may carry a table of its open items (V2.8)
            assert len([line for line in c.detail.splitlines() if line.strip()]) <= 8, c.rule_id
        assert c.citation
        assert "Policy values used" not in c.detail and "cut-point" not in all_text(c)
    built = build_cards(cards, "https://cds.example.org")  # raises on any spec violation
    assert built[0].indicator == "critical" and built[-1].indicator in ("info", "warning")
    assert all(
        b.source.url.startswith("https://cds.example.org/docs/rules/pre.") or "sys." in b.source.url
        for b in built
    )
    for b in built:
        findings = (b.extension or {})["org.va-cds.findings"]
        assert findings[0] == (b.extension or {})["org.va-cds.rule"]


def test_each_order_is_suggested_once_per_response_on_the_worst_case() -> None:
    cards = run(_everything_wrong(), "order-sign")
    labels = [s.description.split(", priority")[0] for c in cards for s in c.suggestions]
    # the core removes repeats across cards (V2.7); inside one card there are none
    for c in cards:
        own = [s.description for s in c.suggestions]
        assert len(own) == len(set(own)), c.rule_id
    assert labels


def test_summaries_stay_short_across_many_agents() -> None:
    f = ready_facts(va=va_order(planned=NOW + timedelta(hours=6)))
    for ing in (
        "warfarin",
        "apixaban",
        "rivaroxaban",
        "dabigatran",
        "edoxaban",
        "enoxaparin",
        "fondaparinux",
    ):
        f.medications.append(med(ing))
        f.draft_medications.append(med(ing, draft=True))
    for c in run(f):
        assert len(c.summary) < 140, c.summary
        if c.rule_id != "pre.checklist":
            assert len([line for line in c.detail.splitlines() if line.strip()]) <= 8, c.rule_id


# ---- checklist ----


def test_checklist_items_ready_patient_met_where_data_shows_it() -> None:
    items = rows(ready_facts())
    assert list(items) == [
        "acuity",
        "infection",
        "neuro",
        "coagulation",
        "optimisation",
        "imaging",
        "contrast",
        "access",
        "cement",
        "radiation",
        "prophylaxis",
        "consent",
    ]
    assert {k for k, i in items.items() if i.status == "met"} == {
        "acuity",
        "infection",
        "coagulation",
        "imaging",
    }
    assert items["consent"].status == "needs-documentation"
    assert "INR 1" in items["coagulation"].evidence


def test_checklist_names_the_finding_behind_each_problem() -> None:
    items = rows(_everything_wrong())
    assert items["coagulation"].status == "problem"
    assert items["coagulation"].rule_id == "pre.coag.labs-out-of-range"
    assert items["infection"].rule_id == "pre.infection.active"
    assert items["neuro"].rule_id == "pre.indication.neuro-red-flags"
    assert items["cement"].rule_id == "pre.allergy.cement"
    assert items["acuity"].rule_id == "pre.indication.concordance-discordant"
    assert items["optimisation"].rule_id == "pre.optimization.glycemic"
    assert items["prophylaxis"].rule_id == "pre.infection.risk-factors"


def test_checklist_never_claims_met_when_a_source_failed() -> None:
    items = rows(ready_facts(), unavailable={"coagLabs", "imaging", "temperature"})
    for key in ("coagulation", "acuity", "imaging", "infection"):
        assert items[key].status == "needs-documentation", key


def test_checklist_card_counts_what_is_open_and_names_it() -> None:
    f = ready_facts()
    f.measurements = [m for m in f.measurements if m.kind not in ("inr", "platelets")]
    f.imaging = []
    card = {c.rule_id: c for c in run(f)}["pre.checklist"]
    assert card.indicator == "info"
    assert card.summary.startswith("VA checklist: 3 to obtain before 28 Nov (INR, CBC, spine MRI)")
    assert "8 to document" in card.summary


def test_checklist_is_a_warning_only_when_imminent_with_an_open_work_up_row() -> None:
    f = ready_facts(va=va_order(planned=NOW + timedelta(hours=20)))
    assert {c.rule_id: c for c in run(f)}["pre.checklist"].indicator == "info"  # nothing open
    f.measurements = [m for m in f.measurements if m.kind != "platelets"]
    card = {c.rule_id: c for c in run(f)}["pre.checklist"]
    assert card.indicator == "warning" and card.summary.startswith("VA tomorrow: CBC not done")
    assert all(r["priority"] == "stat" for s in card.suggestions for r in s.resources)


def test_a_failing_rule_is_named_and_the_others_still_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """V2.9: an unexpected error in one rule gives sys.check-failed naming it; every other rule still runs."""
    from hooks.preprocedure import present

    def broken(_ctx: object) -> None:
        raise TypeError("can't compare offset-naive and offset-aware datetimes")

    rules = list(present.FULL_RULES)
    target = next(i for i, (rid, _) in enumerate(rules) if rid == "pre.coag.antithrombotic-active")
    rules[target] = ("pre.coag.antithrombotic-active", broken)
    monkeypatch.setattr(present, "FULL_RULES", tuple(rules))
    f = _everything_wrong()
    cards = run(f, "order-sign")
    ids = rule_ids(cards)
    assert "sys.check-failed" in ids and "pre.coag.antithrombotic-active" not in ids
    failed = next(c for c in cards if c.rule_id == "sys.check-failed")
    assert "pre.coag.antithrombotic-active" in failed.detail and failed.indicator == "warning"
    assert {"pre.infection.active", "pre.allergy.cement", "pre.checklist"} <= ids


def test_checklist_page_rows_are_the_rows_of_the_call_that_just_ran() -> None:
    from dataclasses import replace

    from hooks.preprocedure import checklist_items
    from tests.pre.builders import POLICY, hook_input

    f = _everything_wrong()
    inp = hook_input(f)
    SERVICE.handler(inp)
    remembered = checklist_items(inp, POLICY)  # taken from the call
    recomputed = checklist_items(replace(inp), POLICY)  # a new object: the rules run again
    assert remembered == recomputed and remembered
