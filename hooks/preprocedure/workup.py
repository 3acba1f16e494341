"""The pre-procedure work-up, item by item: current, scheduled, missing, unreadable or unknown.

Catalog V2.3/V2.4/V2.12: a result is current when it is dated no later than now and no earlier than
anchor − window; when the lead time exceeds the window the item is *scheduled* (due later, never missing);
the latest result governs even when it cannot be read; a failed source makes the item *unknown* (the
`sys.data-unavailable` card names it). Temperature is never missing: it is recorded on arrival.

The three folded `*-missing` findings are built here, from the same items the checklist card shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from cds_service.contracts import Finding
from fhir_mappings.facts import Evidence
from hooks.preprocedure import prefetch as keys
from hooks.preprocedure import rules as r

State = Literal["current", "scheduled", "missing", "unreadable", "unknown"]
RENAL_HOLD_AGENTS = r.DOAC | {"fondaparinux"}
# The folded findings that restate open work-up items (the checklist card's table shows those items).
MISSING_RULES = frozenset({r.LABS_MISSING, r.SCREEN_MISSING, r.CONCORDANCE_MISSING})


@dataclass(frozen=True, slots=True)
class WorkItem:
    key: str  # "inr", "platelets", "inr-day-of", "infection-labs", "imaging", "renal", "temperature"
    name: str  # how the checklist names it: "INR", "CBC", "spine MRI"...
    state: State
    text: str  # one line: "INR 1.1 on 18 Nov", "no CBC within 30 days before the VA on 3 Dec"
    orders: tuple[str, ...] = ()  # orderable concepts that close it when open
    escalates: bool = True  # a work-up row: open + imminent makes the checklist a warning (V2.12)
    evidence: tuple[Evidence, ...] = ()

    @property
    def open(self) -> bool:
        return self.state in ("missing", "unreadable")


def _window_text(c: r.RuleContext, days: float) -> str:
    return f"within {days:g} days {r.before_va(c)}" if c.anchor.start else f"within the last {days:g} days"


def _lab(
    c: r.RuleContext, key: str, kind: str, name: str, window_key: str, source: str, orders: tuple[str, ...]
) -> WorkItem:
    days = c.policy.value(window_key)
    if c.failed(source):
        return WorkItem(key, name, "unknown", f"{name} could not be retrieved", orders)
    m = r.latest_result(c, kind, timedelta(days=days))
    if m is not None and r.readable(m) is not None:
        unit = {"platelets": "×10⁹/L", "wbc": "×10⁹/L", "crp": "mg/L"}.get(kind, "")
        label = "platelets" if kind == "platelets" else kind.upper()
        return WorkItem(
            key, name, "current", r.value_text(m, label, unit, c.now), orders, evidence=(m.evidence,)
        )
    if m is not None:
        why = f"latest {name} on {r.day(m.time, c.now)} could not be read"
        return WorkItem(key, name, "unreadable", why, orders, evidence=(m.evidence,))
    if c.anchor.scheduled(timedelta(days=days)):
        return WorkItem(key, name, "scheduled", f"draw {name} {_window_text(c, days)}", orders)
    return WorkItem(key, name, "missing", f"no {name} {_window_text(c, days)}", orders)


def _day_of_inr(c: r.RuleContext) -> WorkItem | None:
    """On a vitamin K antagonist the INR is rechecked within 2 days of the VA: a work-up row when imminent."""
    vka = [m for m in r.antithrombotic_meds(c) if m.ingredient in r.VKA]
    if not vka:
        return None
    name = f"INR on {vka[0].ingredient}"
    if not c.anchor.imminent:
        days = c.policy.value("inr_window_on_warfarin_days")
        return WorkItem(
            "inr-day-of", name, "scheduled", f"recheck INR within {days:g} days {r.before_va(c)}", ("inr",)
        )
    item = _lab(c, "inr-day-of", "inr", name, "inr_window_on_warfarin_days", keys.COAG_LABS, ("inr",))
    return item


def _infection_labs(c: r.RuleContext) -> WorkItem:
    wbc = _lab(c, "wbc", "wbc", "WBC", "infection_lab_window_days", keys.INFECTION_LABS, ("cbc", "crp"))
    crp = _lab(c, "crp", "crp", "CRP", "infection_lab_window_days", keys.INFECTION_LABS, ("cbc", "crp"))
    pair = (wbc, crp)
    current = [i for i in pair if i.state == "current"]
    evidence = tuple(e for i in pair for e in i.evidence)
    if current:
        return WorkItem(
            "infection-labs", "WBC/CRP", "current", "; ".join(i.text for i in current), (), evidence=evidence
        )
    order: tuple[State, ...] = ("unknown", "unreadable", "scheduled")
    for state in order:
        found = [i for i in pair if i.state == state]
        if found:
            text = "; ".join(i.text for i in found)
            if state == "scheduled":
                days = c.policy.value("infection_lab_window_days")
                text = f"draw WBC/CRP {_window_text(c, days)}"
            return WorkItem("infection-labs", "WBC/CRP", state, text, ("cbc", "crp"), evidence=evidence)
    days = c.policy.value("infection_lab_window_days")
    return WorkItem(
        "infection-labs", "WBC/CRP", "missing", f"no WBC or CRP {_window_text(c, days)}", ("cbc", "crp")
    )


def _imaging(c: r.RuleContext) -> WorkItem:
    weeks = c.policy.value("imaging_window_weeks")
    orders = ("mri-spine-stir",)
    if c.failed(keys.IMAGING):
        return WorkItem("imaging", "spine MRI", "unknown", "spine imaging could not be retrieved", orders)
    found = r.current_imaging(c)
    if found:
        study = found[0]
        text = f"{study.modality.upper()} of {r.day(study.time, c.now)}"
        return WorkItem("imaging", "spine MRI", "current", text, (), evidence=(study.evidence,))
    if c.anchor.scheduled(timedelta(weeks=weeks)):
        return WorkItem(
            "imaging", "spine MRI", "scheduled", f"spine MRI within {weeks:g} weeks {r.before_va(c)}", orders
        )
    older = r.spine_studies(c.inp.facts.imaging)
    when = f" (latest {older[0].modality.upper()} {r.day(older[0].time, c.now)})" if older else ""
    return WorkItem(
        "imaging",
        "spine MRI",
        "missing",
        f"no spine MRI or CT within {weeks:g} weeks{when}",
        orders,
        evidence=tuple(i.evidence for i in older[:1]),
    )


def _renal(c: r.RuleContext) -> WorkItem | None:
    """Creatinine/CrCl is a work-up row for a patient on a DOAC or fondaparinux (it sets the hold)."""
    if not any(m.ingredient in RENAL_HOLD_AGENTS for m in r.antithrombotic_meds(c)):
        return None
    name = "creatinine/CrCl"
    if c.renal.crcl is not None:
        return WorkItem("renal", name, "current", c.renal.basis, (), evidence=c.renal.evidence)
    if c.failed(keys.RENAL_LABS):
        return WorkItem("renal", name, "unknown", "renal labs could not be retrieved")
    return WorkItem("renal", name, "missing", c.renal.basis, (), evidence=c.renal.evidence)


def workup(c: r.RuleContext) -> list[WorkItem]:
    """Every work-up item of the checklist, in the order a clinician would chase them (once per call)."""
    found: list[WorkItem] | None = c.memo.get("workup")
    if found is None:
        found = c.memo["workup"] = _workup(c)
    return found


def _workup(c: r.RuleContext) -> list[WorkItem]:
    window = "coag_lab_window_days"
    items: list[WorkItem | None] = [
        _day_of_inr(c),
        _lab(c, "inr", "inr", "INR", window, keys.COAG_LABS, ("inr",)),
        _lab(c, "platelets", "platelets", "CBC", window, keys.COAG_LABS, ("cbc",)),
        _infection_labs(c),
        _renal(c),
        _imaging(c),
        WorkItem("temperature", "temperature", "scheduled", "record temperature on arrival", escalates=False),
    ]
    return [i for i in items if i is not None]


def _missing(c: r.RuleContext, rule_id: str, item_keys: set[str]) -> Finding | None:
    open_items = [i for i in workup(c) if i.key in item_keys and i.open]
    if not open_items:
        return None
    text = "; ".join(i.text for i in open_items)
    evidence = [e for i in open_items for e in i.evidence]
    return r.finding(
        c, rule_id, "warning", f"To obtain before the VA: {text}", text + ".", evidence=evidence, line=text
    )


def labs_missing(c: r.RuleContext) -> Finding | None:
    return _missing(c, r.LABS_MISSING, {"inr", "platelets", "inr-day-of"})


def screen_missing(c: r.RuleContext) -> Finding | None:
    return _missing(c, r.SCREEN_MISSING, {"infection-labs"})


def concordance_missing(c: r.RuleContext) -> Finding | None:
    return _missing(c, r.CONCORDANCE_MISSING, {"imaging"})
