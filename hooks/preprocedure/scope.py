"""When does va-preprocedure apply? Cheap checks on the raw hook context, and the scope decision on facts.

`quick_scope` runs before any prefetch or FHIR fetch, on the untyped `context` dict: on order hooks it
answers False (→ `{"cards": []}` at once) when the draft orders hold neither a VA request nor an
antithrombotic, and None whenever it cannot be sure, so the full evaluation decides. It errs towards None:
a false None costs one fetch; a false False would hide a safety card.

`scope_of` makes the real decision on typed facts (catalog "Services" table and "Resolved details › Scope"),
and `anchor_of` the time anchor every pre-procedure window is measured to (catalog V2.3 as amended by V2.12).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from fhir_mappings.facts import ClinicalFacts, MedicationFact, OrderFact

ORDER_HOOKS = frozenset({"order-select", "order-sign"})
ANTITHROMBOTIC_CLASSES = frozenset({"anticoagulant", "antiplatelet"})

CPT = "http://www.ama-assn.org/go/cpt"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"

# terminology.md §1: CPT 22510–22515 (current) and the legacy 22520–22525; ICD-10-PCS supplement codes;
# LOINC guidance studies. Systems are compared loosely in quick_scope (a code match on any system only
# leads to a full evaluation, never to a card).
_VA_CODES = frozenset(
    {
        "22510",
        "22511",
        "22512",
        "22513",
        "22514",
        "22515",
        "22520",
        "22521",
        "22522",
        "22523",
        "22524",
        "22525",
        "0PU33JZ",
        "0PU43JZ",
        "0QU03JZ",
        "0QU13JZ",
        "0PU34JZ",
        "0PU44JZ",
        "0QU04JZ",
        "35933-1",
        "35934-9",
        "35935-6",
        "35936-4",
        "70923-8",
        "70924-6",
        "70925-3",
        "72552-3",
        "72553-1",
        "87091-5",
        "87124-4",
        "87003-0",
    }
)
_VA_TEXT = re.compile(
    r"vertebroplast|kyphoplast|vertebral (body )?augment|cement augment|sacroplast|vertebral body stent"
    r"|\b(pvp|pkp|bkp)\b|pmma",
    re.IGNORECASE,
)

# terminology.md §2: RxNorm ingredient codes and the product codes it lists (verified rows).
_ANTITHROMBOTIC_RXNORM = frozenset(
    {
        "11289",
        "114194",
        "855332",
        "1364430",
        "1364445",
        "1364435",
        "1114195",
        "1232086",
        "2059015",
        "1037042",
        "1037041",
        "1037045",
        "1599538",
        "1599564",
        "1599555",
        "67108",
        "221095",
        "854235",
        "67109",
        "82137",
        "5224",
        "314659",
        "1361615",
        "321208",
        "322154",
        "32968",
        "236991",
        "309362",
        "613391",
        "847020",
        "855812",
        "1116632",
        "1116635",
        "1191",
        "243670",
        "308416",
        "3521",
        "309955",
        "21107",
        "242461",
    }
)
_ANTITHROMBOTIC_TEXT = re.compile(
    r"warfarin|coumadin|jantoven|apixaban|eliquis|rivaroxaban|xarelto|dabigatran|pradaxa|edoxaban|savaysa"
    r"|enoxaparin|lovenox|dalteparin|fragmin|heparin|fondaparinux|arixtra|clopidogrel|plavix|prasugrel"
    r"|effient|ticagrelor|brilinta|aspirin|acetylsalicyl|aggrenox|dipyridamole|cilostazol|pletal",
    re.IGNORECASE,
)
# Catheter flush / lock solutions are not systemic anticoagulation (catalog, Resolved details).
FLUSH_OR_LOCK = re.compile(r"\b(flush|lock)\b", re.IGNORECASE)

_MEDICATION_TYPES = frozenset({"MedicationRequest", "MedicationOrder", "MedicationStatement"})
_PROCEDURE_REQUEST_TYPES = frozenset({"ServiceRequest", "ProcedureRequest", "DeviceRequest"})


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    raw = concept.get("coding")
    return [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []


def _texts(concept: Any) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    out = [concept["text"]] if isinstance(concept.get("text"), str) else []
    out += [c["display"] for c in _codings(concept) if isinstance(c.get("display"), str)]
    return out


def _request_may_be_va(resource: Mapping[str, Any]) -> bool:
    code = resource.get("code")
    if any(str(c.get("code", "")).strip().upper() in _VA_CODES for c in _codings(code)):
        return True
    return any(_VA_TEXT.search(t) for t in _texts(code))


def _medication_verdict(resource: Mapping[str, Any]) -> bool | None:
    """True: antithrombotic; False: certainly not; None: cannot tell without the full mapping."""
    if isinstance(resource.get("medicationReference"), Mapping):
        return None  # the Medication is elsewhere (contained or on the server): let extraction decide
    concept = resource.get("medicationCodeableConcept")
    codings = _codings(concept)
    texts = _texts(concept)
    if not codings and not texts:
        return False  # no medication at all (the sandbox's empty Rx View draft)
    if any(FLUSH_OR_LOCK.search(t) for t in texts):
        return False
    for coding in codings:
        code = str(coding.get("code", "")).strip()
        if code in _ANTITHROMBOTIC_RXNORM or code.upper().startswith("B01A"):
            return True
    if any(_ANTITHROMBOTIC_TEXT.search(t) for t in texts):
        return True
    if any(not isinstance(c.get("display"), str) for c in codings) and not texts:
        return None  # a bare product code we do not list (e.g. another SCD): not provably irrelevant
    return False


def quick_scope(hook: str, context: Mapping[str, Any]) -> bool | None:
    """False when an order hook's draftOrders hold neither a VA request nor an antithrombotic; else None."""
    if hook not in ORDER_HOOKS:
        return None  # patient-view needs the record (a planned VA) to decide
    bundle = context.get("draftOrders")
    if not isinstance(bundle, Mapping):
        return None  # malformed context: the core's validation answers, not us
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return False
    undecided = False
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        rtype = resource.get("resourceType")
        if rtype in _PROCEDURE_REQUEST_TYPES and _request_may_be_va(resource):
            return None
        if rtype in _MEDICATION_TYPES:
            verdict = _medication_verdict(resource)
            if verdict is True:
                return None
            if verdict is None:
                undecided = True
    return None if undecided else False


# ---- scope on typed facts -------------------------------------------------------------------------------

_PLANNED_SR_STATUSES = frozenset({"active", "on-hold"})
# "booked" per the catalog; arrived/checked-in are the same planned VA on the day itself.
_PLANNED_APPOINTMENT_STATUSES = frozenset({"booked", "arrived", "checked-in"})
_DEAD_STATUSES = frozenset({"revoked", "entered-in-error", "completed", "cancelled"})


@dataclass(frozen=True, slots=True)
class PlannedVa:
    """A VA being ordered now (draft) or already planned (active order / booked appointment)."""

    order: OrderFact
    start: datetime | None  # None: no date set on the order/appointment


@dataclass(frozen=True, slots=True)
class Scope:
    mode: Literal["none", "full", "antithrombotic-order"]
    drafted_va: tuple[PlannedVa, ...]
    planned_va: tuple[PlannedVa, ...]  # on the record
    drafted_antithrombotics: tuple[MedicationFact, ...]

    @property
    def all_va(self) -> tuple[PlannedVa, ...]:
        return self.drafted_va + self.planned_va

    @property
    def target(self) -> PlannedVa | None:
        """The VA the readiness review is about: the drafted one, else the earliest planned."""
        if self.drafted_va:
            return self.drafted_va[0]
        dated = sorted((p for p in self.planned_va if p.start), key=lambda p: p.start or datetime.min)
        return dated[0] if dated else (self.planned_va[0] if self.planned_va else None)


def is_systemic_antithrombotic(med: MedicationFact) -> bool:
    return med.drug_class in ANTITHROMBOTIC_CLASSES and not FLUSH_OR_LOCK.search(med.display)


def antithrombotics(meds: Iterable[MedicationFact]) -> list[MedicationFact]:
    return [m for m in meds if is_systemic_antithrombotic(m)]


def scope_of(hook: str, facts: ClinicalFacts) -> Scope:
    """Decide which rule set applies (catalog: Services table; Resolved details › Scope)."""
    drafted = tuple(
        PlannedVa(o, o.planned)
        for o in facts.draft_orders
        if o.is_va and o.resource_type == "ServiceRequest" and o.status not in _DEAD_STATUSES
    )
    planned = tuple(
        PlannedVa(o, o.planned)
        for o in facts.orders
        if o.is_va
        and (
            (o.resource_type == "ServiceRequest" and o.status in _PLANNED_SR_STATUSES)
            or (o.resource_type == "Appointment" and o.status in _PLANNED_APPOINTMENT_STATUSES)
        )
    )
    drafted_at = tuple(antithrombotics(facts.draft_medications))
    if hook in ORDER_HOOKS:
        if drafted:
            mode: Literal["none", "full", "antithrombotic-order"] = "full"
        elif planned and drafted_at:
            mode = "antithrombotic-order"
        else:
            mode = "none"
    elif hook == "patient-view":
        mode = "full" if planned else "none"
    else:
        mode = "none"
    return Scope(mode, drafted, planned, drafted_at)


# ---- the time anchor (catalog V2.3, V2.12) ----------------------------------------------------------------

_URGENT_PRIORITIES = frozenset({"urgent", "asap", "stat"})
# v3 ActCode classes (and the plain words some EHRs send) of an inpatient or emergency encounter.
_ACUTE_ENCOUNTER_CLASSES = frozenset({"IMP", "ACUTE", "NONAC", "EMER", "inpatient", "emergency"})
# A booked appointment or planned order whose start passed more than a day ago is not "the" upcoming VA.
_STALE_PLAN = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Anchor:
    """The planned procedure start, and how the pre-procedure windows read against it.

    `start` None = no date anywhere: windows are measured to now. Findings that something is *active*
    (fever, culture, onsets) are measured back from `now` by the rules; work-up currency from `at`.
    """

    now: datetime
    start: datetime | None
    source: str  # "the draft order", "the booked appointment", "the planned order" or "" (unknown)
    imminent: bool
    why_imminent: str = ""  # "VA tomorrow", "urgent order", "inpatient encounter"

    @property
    def at(self) -> datetime:
        return self.start if self.start is not None else self.now

    @property
    def lead(self) -> timedelta | None:
        return None if self.start is None else self.start - self.now

    def since(self, window: timedelta) -> datetime:
        """The oldest time a work-up result may have and still be current for the procedure."""
        return self.at - window

    def scheduled(self, window: timedelta) -> bool:
        """True when the lead time exceeds the window: the item cannot be current yet, it is due later."""
        return self.start is not None and self.start - window > self.now


def _first_start(items: Iterable[PlannedVa], now: datetime) -> datetime | None:
    starts = sorted(p.start for p in items if p.start is not None and p.start >= now - _STALE_PLAN)
    return starts[0] if starts else None


def anchor_of(
    scope: Scope,
    now: datetime,
    *,
    imminent_hours: float,
    encounter_class: str | None = None,
) -> Anchor:
    """Planned start: the draft order's occurrence, else the earliest booked VA Appointment, else the earliest
    planned VA ServiceRequest; imminent when the lead time is ≤ `imminent_hours` or the date has passed, or
    — with no date at all — when the draft order is urgent/asap/stat or the encounter is inpatient/emergency.
    """
    drafted = next((d for d in scope.drafted_va if d.start is not None), None)
    start: datetime | None = drafted.start if drafted else None
    source = "the draft order" if drafted else ""
    if start is None:
        booked = [p for p in scope.planned_va if p.order.resource_type == "Appointment"]
        ordered = [p for p in scope.planned_va if p.order.resource_type != "Appointment"]
        for items, label in ((booked, "the booked appointment"), (ordered, "the planned order")):
            start = _first_start(items, now)
            if start is not None:
                source = label
                break
    if start is not None:
        hours = (start - now).total_seconds() / 3600.0
        if hours <= imminent_hours:
            when = (
                "date passed" if hours < 0 else ("VA today" if start.date() == now.date() else "VA imminent")
            )
            if 0 <= hours and start.date() == (now + timedelta(days=1)).date():
                when = "VA tomorrow"
            return Anchor(now, start, source, True, when)
        return Anchor(now, start, source, False)
    urgent = any((d.order.priority or "").lower() in _URGENT_PRIORITIES for d in scope.drafted_va)
    if urgent:
        return Anchor(now, None, "", True, "urgent order")
    if encounter_class is not None and encounter_class in _ACUTE_ENCOUNTER_CLASSES:
        return Anchor(now, None, "", True, "inpatient or emergency encounter")
    return Anchor(now, None, "", False)
