"""When va-discharge applies: the discharged encounter holds a VA Procedure, or a VA was performed within
the policy's recent days (`discharge_recent_va_days`) before the request. A deceased patient gets no cards
(catalog V2.4); a VA dated after now is a data error and never in scope (V2.10).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cds_service.contracts import HookInput
from fhir_mappings.facts import ProcedureFact
from hooks.common.timing import VA_DONE_STATUSES, va_time
from hooks.policy import Policy


def in_encounter(proc: ProcedureFact, inp: HookInput) -> bool:
    """The VA names the discharged encounter, or (naming none) falls inside its period."""
    if inp.encounter_id is None:
        return False
    if proc.encounter:
        return proc.encounter.rsplit("/", 1)[-1] == inp.encounter_id
    start = va_time(proc)
    for enc in inp.facts.encounters:
        if enc.id != inp.encounter_id or enc.start is None or start is None:
            continue
        if enc.start <= start <= (enc.end or inp.now):
            return True
    return False


def discharge_va(inp: HookInput, policy: Policy) -> ProcedureFact | None:
    """The VA this discharge is about: the latest in the encounter, else the latest within the recent days."""
    vas = [
        p
        for p in inp.facts.procedures
        if p.is_va and p.status in VA_DONE_STATUSES and (t := va_time(p)) is not None and t <= inp.now
    ]
    oldest = datetime.min.replace(tzinfo=inp.now.tzinfo)
    in_enc = [p for p in vas if in_encounter(p, inp)]
    if in_enc:
        return max(in_enc, key=lambda p: va_time(p) or oldest)
    since = inp.now - timedelta(days=policy.value("discharge_recent_va_days"))
    recent = [p for p in vas if since <= (va_time(p) or oldest)]
    return max(recent, key=lambda p: va_time(p) or oldest) if recent else None
