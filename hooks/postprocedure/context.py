"""What every post-procedure rule reads and returns: the `RuleContext` (facts, policy, VA timeline, with the
look-ups rules share) and the `PostFinding` (a catalog `Finding` plus the orders it asks for and where it
folds), with the small text helpers that keep card wording consistent (V2.8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cds_service.contracts import Finding, Indicator, OverrideReasonSpec, SuggestionSpec, md_escape
from fhir_mappings.facts import ClinicalFacts, ConditionFact, Evidence, Measurement, ProcedureFact
from hooks.common import fmt_date
from hooks.common.timing import VaTimeline, describe_va, level_text, va_time
from hooks.policy import Policy

# The results that make a lab order redundant when one is current (a CBC reports WBC and Hb).
RESULT_KINDS: Mapping[str, tuple[str, ...]] = {"cbc": ("wbc", "hemoglobin"), "crp": ("crp",), "esr": ("esr",)}


@dataclass(frozen=True, slots=True)
class Order:
    """An order a finding asks for (a concept of `hooks.orders.ORDERABLES`)."""

    concept: str
    recommended: bool = False
    note: str | None = None  # order detail for the performer, e.g. "Include a STIR sequence; level T12"
    label: str | None = None  # button text when it must say more than the orderable's label


POST_OVERRIDES = (
    OverrideReasonSpec("already-evaluated", "Already evaluated — complication excluded or being managed"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient"),
    OverrideReasonSpec("patient-declined", "Patient declined the work-up — documented"),
)
BONE_OVERRIDES = (
    OverrideReasonSpec("therapy-elsewhere", "Osteoporosis therapy documented outside this EHR"),
    OverrideReasonSpec("contraindicated", "Therapy contraindicated or declined — documented"),
    OverrideReasonSpec("data-outdated", "Data outdated or incorrect in the EHR"),
    OverrideReasonSpec("not-applicable", "Not applicable to this patient (e.g. non-osteoporotic indication)"),
)
MAX_EVIDENCE_ITEMS = 3
MAX_STEPS = 4
MAX_DETAIL_LINES = 8  # V2.8, the core's "*Source: …*" line included


@dataclass(frozen=True, slots=True)
class PostFinding(Finding):
    """A post-procedure `Finding` plus what presentation needs: the anchoring VA, the orders it asks for
    (allocated once per response by `present.py`), and where it folds when it shares another card's evidence.
    """

    anchor: ProcedureFact | None = None
    lines: tuple[str, ...] = ()  # Markdown-safe evidence items (the first three are shown)
    steps: tuple[str, ...] = ()  # what to do, in order (the first four are shown)
    orders: tuple[Order, ...] = ()
    extra_suggestions: tuple[SuggestionSpec, ...] = ()  # non-order suggestions (an AllergyIntolerance)
    fold_into: tuple[str, ...] = ()  # host rule ids, in preference order; empty → a card of its own
    reason: str = ""  # reasonCode text of the orders


def compose_detail(
    anchor: ProcedureFact | None, lines: Sequence[str], steps: Sequence[str], budget: int
) -> str:
    """The evidence in one line, then at most `budget` numbered steps (V2.8: short, no policy block)."""
    where = f"After the {describe_va(anchor)}" if anchor is not None else "After the VA"
    items = [line.rstrip(".") for line in lines[:MAX_EVIDENCE_ITEMS]]
    out = [f"{where}: {'; '.join(items)}." if items else f"{where}."]
    out += [f"{i}. {step}" for i, step in enumerate(steps[: max(budget, 0)], 1)]
    return "\n\n".join(out)


def make_finding(
    rule_id: str,
    indicator: Indicator,
    summary: str,
    lines: tuple[str, ...],
    steps: tuple[str, ...],
    evidence: tuple[Evidence, ...],
    policy: Mapping[str, Any],
    citation: str,
    anchor: ProcedureFact | None,
    orders: tuple[Order, ...] = (),
    extra_suggestions: tuple[SuggestionSpec, ...] = (),
    *,
    fold_into: tuple[str, ...] = (),
    fold_line: str = "",
    reason: str = "",
    overrides: tuple[OverrideReasonSpec, ...] = POST_OVERRIDES,
) -> PostFinding:
    """A rule's finding: trigger, facts and words; the card text is composed here, once."""
    return PostFinding(
        rule_id=rule_id,
        indicator=indicator,
        summary=summary,
        detail=compose_detail(anchor, lines, steps, MAX_STEPS),
        citation=citation,
        evidence=evidence,
        policy_used=policy,
        override_reasons=None if indicator == "info" else overrides,
        line=fold_line,
        anchor=anchor,
        lines=lines,
        steps=steps,
        orders=orders,
        extra_suggestions=extra_suggestions,
        fold_into=fold_into,
        reason=reason,
    )


def with_note(f: PostFinding, note: str) -> PostFinding:
    """The same finding with one more evidence item (e.g. "some checks could not run")."""
    lines = (*f.lines, note)
    return replace(f, lines=lines, detail=compose_detail(f.anchor, lines, f.steps, MAX_STEPS))


@dataclass(frozen=True, slots=True)
class RuleContext:
    inp_facts: ClinicalFacts
    now: datetime
    patient_id: str
    policy: Policy
    timeline: VaTimeline
    unavailable: frozenset[str] = field(default_factory=frozenset)

    def v(self, key: str) -> float:
        return self.policy.value(key)

    def window(self, rule_id: str) -> float:
        return self.policy.window_days(rule_id)

    def conditions(
        self, concepts: Iterable[str], rule_id: str, *, current_only: bool = True
    ) -> list[tuple[ConditionFact, ProcedureFact]]:
        """Conditions of these concepts dated after a VA and inside the rule's window from it.

        Acute-complication rules read only current conditions; event rules (a reaction, a new fracture)
        count the event whatever its status, because its consequence outlives the episode.
        """
        out: list[tuple[ConditionFact, ProcedureFact]] = []
        for cond in self.inp_facts.conditions_with(concepts):
            if current_only and not cond.active:
                continue
            proc = self.timeline.anchor_in_window(
                onset_of(cond), self.window(rule_id), self.now, same_day_date_only=True
            )
            if proc is not None:
                out.append((cond, proc))
        return out

    def latest(self, kind: str, rule_id: str) -> tuple[Measurement, ProcedureFact] | None:
        """The latest usable value of a kind (never one dated after now), if it lies in the rule's window.

        The latest value governs (V2.12): an older abnormal value followed by a normal one is not a finding.
        """
        for m in self.inp_facts.measurements_of(kind, until=self.now):
            if m.value is None:
                continue
            proc = self.timeline.anchor_in_window(m.time, self.window(rule_id), self.now)
            return (m, proc) if proc is not None else None
        return None

    def lab_orders(self, *orders: Order) -> list[Order]:
        """These lab orders, less those with a current readable result (V2.7: no order for a fresh result)."""
        since = self.now - timedelta(hours=self.v("post_result_current_hours"))
        return [
            o
            for o in orders
            if not any(
                m.value is not None
                for k in RESULT_KINDS.get(o.concept, ())
                for m in self.inp_facts.measurements_of(k, since, self.now)
            )
        ]

    def baseline(self, kind: str, proc: ProcedureFact, days: float) -> Measurement | None:
        """The latest value of a kind in the `days` before the VA's start (the patient's own baseline)."""
        start = va_time(proc)
        if start is None:
            return None
        for m in self.inp_facts.measurements_of(kind, since=start - timedelta(days=days), until=start):
            if m.value is not None and m.time is not None and m.time < start:
                return m
        return None


def onset_of(cond: ConditionFact) -> datetime | None:
    """When a condition began: its onset, else its recordedDate (V2.12)."""
    return cond.onset or cond.recorded


def num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def day_after(c: RuleContext, proc: ProcedureFact, when: datetime | None) -> str:
    """ "on day 3 after the VA", or "on the day of the VA" (within 24 h of its start)."""
    start = va_time(proc)
    if start is None or when is None:
        return "after the VA"
    days = max((when - start).days, 0)
    return "on the day of the VA" if days == 0 else f"on day {days} after the VA"


def cond_line(cond: ConditionFact) -> str:
    return f"{md_escape(cond.display or 'Condition')} (onset {fmt_date(onset_of(cond))})"


def meas_line(label: str, m: Measurement, unit: str) -> str:
    return f"{label} {num(m.value)}{unit} on {fmt_date(m.time)}"


def evidence_of(proc: ProcedureFact | None, *items: Evidence) -> tuple[Evidence, ...]:
    out: list[Evidence] = [proc.evidence] if proc is not None else []
    for ev in items:
        if ev not in out:
            out.append(ev)
    return tuple(out)


def reason(text: str, proc: ProcedureFact | None) -> str:
    when = fmt_date(va_time(proc)) if proc is not None else "date unknown"
    return f"{text} after vertebral augmentation on {when}"


def stir_mri(proc: ProcedureFact | None, recommended: bool = True) -> Order:
    """MRI spine whose order text names the STIR sequence and the treated level (V2.7)."""
    level = level_text(proc) if proc is not None else "the treated level"
    return Order(
        "mri-spine-stir",
        recommended,
        note=f"Include a STIR (or T2 fat-saturated) sequence; treated level {level} and the adjacent levels.",
        label=f"Order MRI spine with STIR ({level})",
    )


def ct_leak(proc: ProcedureFact | None, recommended: bool = True) -> Order:
    level = level_text(proc) if proc is not None else "the treated level"
    return Order(
        "ct-spine",
        recommended,
        note=f"Look for cement leakage (canal, foramina, veins) at {level}.",
        label=f"Order CT spine for cement leak ({level})",
    )
