"""Which vertebral augmentation anchors a finding: the timing rules shared by post-procedure and discharge.

Read by `hooks.postprocedure` and `hooks.discharge` (no family imports another). Time separates a
complication from history. A finding counts only when it is dated after a VA's start and
inside the rule's window from the most recent VA before it (the anchor); anything before the VA is
baseline, and anything dated after now is a data error that is never evidence (catalog V2.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from cds_service.contracts import md_escape
from fhir_mappings.facts import ClinicalFacts, ProcedureFact
from hooks.common.cards import fmt_date

# Procedure statuses that mean the VA actually happened (the catalog: completed or in-progress).
VA_DONE_STATUSES = frozenset({"completed", "in-progress"})


def va_time(proc: ProcedureFact) -> datetime | None:
    """When the VA started (its end when the start is not recorded)."""
    return proc.start or proc.end


def va_end(proc: ProcedureFact) -> datetime | None:
    """When the VA ended (its start when the end is not recorded)."""
    return proc.end or proc.start


def is_date_only(when: datetime) -> bool:
    """A FHIR date without a time arrives as midnight UTC; we cannot tell it from a real midnight."""
    return when.timetz().replace(tzinfo=None) == time(0, 0)


def describe_va(proc: ProcedureFact) -> str:
    """ "VA on 2026-11-02 at T12" — Markdown-safe."""
    where = f" at {md_escape(proc.level)}" if proc.level else ""
    return f"VA on {fmt_date(va_time(proc))}{where}"


def level_text(proc: ProcedureFact) -> str:
    """The treated level for order text ("T12"), or "the treated level" when the record does not say."""
    return proc.level or "the treated level"


def thoracic_or_unknown(proc: ProcedureFact) -> bool:
    """Thoracic (T1–T12) or unknown level → the pleura may have been at risk (unknown counts, for safety)."""
    if proc.region is not None:
        return proc.region == "thoracic"
    if proc.level:
        return proc.level.strip().upper().startswith("T")
    return True


@dataclass(frozen=True, slots=True)
class VaTimeline:
    """The dated VA procedures (completed or in-progress, not in the future), oldest first."""

    vas: tuple[ProcedureFact, ...]

    @classmethod
    def from_procedures(cls, procedures: list[ProcedureFact], now: datetime) -> VaTimeline:
        dated = [
            p
            for p in procedures
            if p.is_va and p.status in VA_DONE_STATUSES and (t := va_time(p)) is not None and t <= now
        ]
        dated.sort(key=lambda p: va_time(p) or now)
        return cls(tuple(dated))

    @classmethod
    def from_facts(cls, facts: ClinicalFacts, now: datetime) -> VaTimeline:
        return cls.from_procedures(facts.procedures, now)

    @property
    def latest(self) -> ProcedureFact | None:
        return self.vas[-1] if self.vas else None

    def anchor(self, when: datetime, *, same_day_date_only: bool = False) -> ProcedureFact | None:
        """The most recent VA that started before `when` (None: the finding is baseline, not a complication).

        With `same_day_date_only`, a date-only time (midnight) on the VA's own calendar day is taken as
        after the VA: a condition coded with a date but no time on the procedure day is far more likely a
        complication of that procedure than a pre-existing one, and missing it would be the unsafe error.
        """
        found: ProcedureFact | None = None
        for proc in self.vas:
            start = va_time(proc)
            if start is None:  # from_procedures keeps dated VAs only
                continue
            after = start < when
            if not after and same_day_date_only and is_date_only(when) and when.date() == start.date():
                after = True
            if after:
                found = proc
        return found

    def anchor_in_window(
        self, when: datetime | None, window_days: float, now: datetime, *, same_day_date_only: bool = False
    ) -> ProcedureFact | None:
        """The anchoring VA when `when` is after it, within `window_days` of its start, and not after now."""
        if when is None or when > now:
            return None
        proc = self.anchor(when, same_day_date_only=same_day_date_only)
        if proc is None:
            return None
        start = va_time(proc)
        if start is None or when - start > timedelta(days=window_days):
            return None
        return proc


def is_deceased(facts: ClinicalFacts, now: datetime) -> bool:
    """The record says the patient died (deceasedBoolean true, or a deceasedDateTime not after now): V2.4."""
    patient = facts.patient
    if patient is None or not patient.deceased:
        return False
    return patient.deceased_on is None or patient.deceased_on <= now
