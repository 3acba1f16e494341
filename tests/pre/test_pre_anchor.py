"""The time anchor (catalog V2.3, amended by V2.12): planned start; current, scheduled, missing, imminent;
holds shown against the anchor, temperature never missing."""

from __future__ import annotations

from datetime import timedelta

from fhir_mappings.facts import EncounterFact
from hooks.preprocedure.scope import anchor_of, scope_of
from tests.pre.builders import (
    NOW,
    all_text,
    by_rule,
    carried,
    ev,
    meas,
    med,
    ready_facts,
    rows,
    run,
    va_order,
)

CHECKLIST = "pre.checklist"


def _anchor(facts, hook="order-sign", encounter_class=None):  # type: ignore[no-untyped-def]
    return anchor_of(scope_of(hook, facts), NOW, imminent_hours=48, encounter_class=encounter_class)


def test_draft_order_date_is_the_anchor_and_a_week_ahead_is_not_imminent() -> None:
    a = _anchor(ready_facts())
    assert a.start == NOW + timedelta(days=7) and a.source == "the draft order" and not a.imminent


def test_undated_draft_takes_the_earliest_booked_appointment_else_the_planned_order() -> None:
    f = ready_facts(va=va_order(planned=None))
    f.orders = [
        va_order(draft=False, planned=NOW + timedelta(days=20)),
        va_order(draft=False, resource_type="Appointment", planned=NOW + timedelta(days=10)),
        va_order(draft=False, resource_type="Appointment", planned=NOW + timedelta(days=12)),
    ]
    a = _anchor(f)
    assert a.start == NOW + timedelta(days=10) and a.source == "the booked appointment"
    f.orders = [va_order(draft=False, planned=NOW + timedelta(days=20))]
    assert _anchor(f).start == NOW + timedelta(days=20)


def test_no_date_at_all_measures_to_now_and_is_imminent_only_when_urgent_or_inpatient() -> None:
    routine = _anchor(ready_facts(va=va_order(planned=None)))
    assert routine.start is None and routine.at == NOW and not routine.imminent
    assert _anchor(ready_facts(va=va_order(planned=None, priority="stat"))).imminent
    assert _anchor(ready_facts(va=va_order(planned=None)), encounter_class="IMP").imminent
    assert not _anchor(ready_facts(va=va_order(planned=None)), encounter_class="AMB").imminent


def test_within_48_hours_or_in_the_past_is_imminent() -> None:
    assert _anchor(ready_facts(va=va_order(planned=NOW + timedelta(hours=47)))).imminent
    assert not _anchor(ready_facts(va=va_order(planned=NOW + timedelta(hours=49)))).imminent
    assert _anchor(ready_facts(va=va_order(planned=NOW - timedelta(days=1)))).imminent


def test_inpatient_encounter_in_context_makes_an_undated_order_imminent_end_to_end() -> None:
    f = ready_facts(va=va_order(planned=None))
    f.measurements = [m for m in f.measurements if m.kind != "inr"]
    f.encounters = [
        EncounterFact(ev("Encounter", "inpatient stay"), "enc-1", "in-progress", NOW, None, "IMP")
    ]
    card = by_rule(run(f))[CHECKLIST]
    assert card.indicator == "warning" and "INR not done" in card.summary


def test_work_up_further_away_than_its_window_is_scheduled_not_missing() -> None:
    # VA in 40 days: a 30-day INR cannot be current yet → scheduled row, no labs-missing finding.
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=40)))
    cards = run(f)
    assert "pre.coag.labs-missing" not in carried(cards)
    checklist = by_rule(cards)[CHECKLIST]
    assert "draw INR within 30 days before the VA on 31 Dec" in checklist.detail
    assert checklist.indicator == "info"
    assert not any(s.label.startswith("Order INR") for s in checklist.suggestions)


def test_currency_is_measured_to_the_anchor_not_to_the_order() -> None:
    # INR drawn 25 days ago, VA in 10 days: 35 days before the VA → not current for it.
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=10)))
    f.measurements = [m for m in f.measurements if m.kind != "inr"] + [meas("inr", 1.0, timedelta(days=25))]
    assert carried(run(f))["pre.coag.labs-missing"] == CHECKLIST
    # the same INR with the VA in 3 days is current
    f.draft_orders = [va_order(planned=NOW + timedelta(days=3))]
    assert "pre.coag.labs-missing" not in carried(run(f))


def test_hold_is_shown_against_the_anchor() -> None:
    f = ready_facts()  # VA on 28 Nov
    f.medications.append(med("warfarin"))
    card = by_rule(run(f))["pre.coag.antithrombotic-active"]
    assert "last dose on or before 23 Nov" in card.summary
    assert "up to" not in all_text(card)


def test_a_hold_already_past_is_never_given_as_an_instruction() -> None:
    f = ready_facts(va=va_order(planned=NOW + timedelta(days=3)))  # 24 Nov; warfarin hold 5 days → 19 Nov
    f.medications.append(med("warfarin"))
    text = all_text(by_rule(run(f))["pre.coag.antithrombotic-active"])
    assert "allows less than the 5-day warfarin hold" in text
    assert "confirm the last dose was on or before 19 Nov, or reschedule" in text
    assert "last dose on or before 19 Nov" not in text.replace("was on or before", "")


def test_undated_procedure_gives_the_hold_without_a_date() -> None:
    f = ready_facts(va=va_order(planned=None))
    f.medications.append(med("clopidogrel", "antiplatelet"))
    card = by_rule(run(f))["pre.coag.antithrombotic-active"]
    assert "hold clopidogrel 5 days before the VA" in card.summary


def test_temperature_is_never_a_missing_data_finding() -> None:
    f = ready_facts(va=va_order(planned=NOW + timedelta(hours=20)))
    f.measurements = [m for m in f.measurements if m.kind != "temperature"]
    cards = run(f)
    assert "pre.infection.screen-missing" not in carried(cards)
    assert "record temperature on arrival" in by_rule(cards)[CHECKLIST].detail
    assert by_rule(cards)[CHECKLIST].indicator == "info"  # temperature never escalates
    assert "record temperature on arrival" in rows(f)["infection"].evidence
