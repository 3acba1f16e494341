"""Rules run isolated (catalog V2.9): one rule that fails on unexpected data never hides the others.

A family runs its rules through `run_isolated`; a rule that raises is logged with its id and becomes one
`sys.check-failed` warning naming the check, while every other rule still answers. `sys.check-failed` is only
for an unexpected failure inside a rule, never for data the catalog describes (V2.11): missing or unreadable
data is a finding of the rule itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from cds_service.contracts import CardSpec, RuleDoc

CHECK_FAILED = "sys.check-failed"
CITE_CHECK_FAILED = "va-cds rule catalog V2.9, system rule sys.check-failed"

log = logging.getLogger("va_cds.rules")

CHECK_FAILED_DOC = RuleDoc(
    CHECK_FAILED,
    "A safety check could not complete",
    "warning",
    "Fires when one rule stopped on data it could not handle (an unexpected failure inside the rule, never "
    "missing or unreadable data, which the rule reports itself). The other rules still ran; this card names "
    "the check that did not, so its silence is never read as an all-clear.",
    ("Which rule failed (the failure is logged for the va-cds team)",),
    ("Review the named item in the chart by hand", "Report the case to the va-cds team"),
    CITE_CHECK_FAILED,
    (),
    ("order-sign", "order-select", "patient-view", "encounter-start", "encounter-discharge"),
)

C = TypeVar("C")
R = TypeVar("R")


def run_isolated(rules: Iterable[tuple[str, Callable[[C], R | None]]], ctx: C) -> tuple[list[R], list[str]]:
    """Run every (rule id, rule) on `ctx`: the results that fired, and the ids of rules that raised."""
    fired: list[R] = []
    failed: list[str] = []
    for rule_id, rule in rules:
        try:
            result = rule(ctx)
        except Exception:
            # Logged with the traceback for the va-cds team; the clinician gets a card, not an error page.
            log.exception("rule failed", extra={"rule": rule_id})
            failed.append(rule_id)
            continue
        if result is not None:
            fired.append(result)
    return fired, failed


def check_failed_card(failed: Sequence[str], titles: dict[str, str] | None = None) -> CardSpec | None:
    """`sys.check-failed` (warning) naming the checks that could not complete, or None when none failed."""
    if not failed:
        return None
    names = [f"- {(titles or {}).get(rule_id, rule_id)} (`{rule_id}`)" for rule_id in failed]
    return CardSpec(
        rule_id=CHECK_FAILED,
        indicator="warning",
        summary=f"{len(failed)} safety check(s) could not complete: review these items by hand",
        detail=(
            "These checks stopped on data they could not handle. **They were not performed — no warning "
            "from them is not an all-clear.** The other checks ran normally; the failure was logged.\n\n"
            + "\n".join(names)
        ),
        citation=CITE_CHECK_FAILED,
    )
