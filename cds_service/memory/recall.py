"""Alert memory on the hook's response path: one lookup, a time budget, and "no memory" on any failure.

`AlertMemory.apply` reads this chart's earlier cards (same keyed patient hash, issuer and tenant) with
one indexed query (`Store.recall`: on the event loop for SQLite, in a worker thread with a time budget
for PostgreSQL), then applies `apply_memory`. Nothing is kept in
the process between calls: every worker and replica reads the same database, so they remember alike.

A slow, failing or unreachable database never costs a card: after `budget_s` (or on any error) the call
goes on with the cards exactly as the rules built them. Memory is off altogether without a stable
patient hash key (`VA_CDS_PATIENT_HASH_KEY`): a key made up at start-up would change at the next start,
and memory would silently restart empty while looking as if it worked.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from datetime import datetime, timedelta

import anyio
import anyio.to_thread

from cds_service.memory.apply import (
    DEMOTED,
    OMITTED,
    PATIENT_VIEW,
    MemoryOutcome,
    apply_memory,
    fingerprint_in,
    rule_of,
)
from cds_service.memory.policy import MemoryPolicy
from cds_service.metrics import Metrics
from cds_service.models import Card
from cds_service.persistence import Store, StoreUnavailable
from cds_service.persistence.store import RecalledCard

log = logging.getLogger("va_cds.memory")

#: Longest a lookup may add to a hook response; past it the cards go out as the rules built them.
DEFAULT_BUDGET_S = 0.25
#: Lookups in flight at once (per process); an abandoned lookup holds its slot until the database answers.
MAX_CONCURRENT_LOOKUPS = 8


class AlertMemory:
    """Memory for one app: the store it reads, its policy, whether it is on, and its counters."""

    def __init__(
        self,
        store: Store,
        policy: MemoryPolicy,
        metrics: Metrics,
        *,
        stable_key: bool,
        budget_s: float = DEFAULT_BUDGET_S,
    ) -> None:
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.budget_s = budget_s
        self.enabled = stable_key and policy.enabled
        self.off_reason = (
            ""
            if self.enabled
            else ("no VA_CDS_PATIENT_HASH_KEY" if not stable_key else "switched off in policy")
        )
        self._limiter: anyio.CapacityLimiter | None = None  # made inside the event loop, on first use
        self._failing = False  # only to log an outage once, not on every call

    def announce(self) -> None:
        """Say once, at start-up, whether memory is on and why not."""
        if not self.enabled and not self.policy.enabled:
            log.warning("alert memory is OFF: switched off in the policy file (memory.enabled)")
        elif not self.enabled:
            log.warning(
                "alert memory is OFF: VA_CDS_PATIENT_HASH_KEY is not set, so patient hashes change at every "
                "start; set a stable secret to let va-cds remember overrides and accepted orders"
            )

    async def apply(
        self,
        cards: list[Card],
        *,
        patient_hash: str | None,
        issuer: str,
        tenant: str,
        hook: str,
        now: datetime,
    ) -> MemoryOutcome:
        """`cards` as memory leaves them (see `cds_service.memory.apply`). Never raises."""
        if not self.enabled or patient_hash is None:
            return MemoryOutcome(cards=cards)
        # Memory can only change a warning, a critical (noted) or a card with suggestions: an info card
        # without any is left out of the lookup, and a call with nothing else makes none.
        current = {
            rule_of(c): fp
            for c in cards
            if (fp := fingerprint_in(c)) is not None
            and (c.indicator != "info" or c.suggestions)
            and self.policy.applies_to(rule_of(c))
        }
        if not current:
            return MemoryOutcome(cards=cards)  # nothing memory could change: no query
        recalled = await self._recall(patient_hash, issuer, tenant, current, now, hook == PATIENT_VIEW)
        if recalled is None:
            return MemoryOutcome(cards=cards)
        try:
            outcome = apply_memory(cards, recalled, hook, now, self.policy)
        except Exception:  # a bug in memory must never cost a card
            log.exception("applying alert memory failed; cards returned as built")
            self.metrics.memory_lookup_failures_total.labels(reason="error").inc()
            return MemoryOutcome(cards=cards)
        self._count(outcome)
        return outcome

    async def _recall(
        self,
        patient_hash: str,
        issuer: str,
        tenant: str,
        current: dict[str, str],
        now: datetime,
        repeats: bool,
    ) -> list[RecalledCard] | None:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_LOOKUPS)
        since = now - timedelta(days=self.policy.lookback_days)
        # Only a chart opening (patient-view) can be a repeat; other hooks read feedback alone.
        repeat_since = now - timedelta(hours=self.policy.repeat_memory_hours) if repeats else None
        lookup = functools.partial(
            self.store.recall,
            patient_hash,
            issuer,
            tenant,
            current,
            since,
            repeat_since,
            max_calls=self.policy.max_calls,
        )
        try:
            if self.store.reads_inline:  # SQLite: cheaper than a thread hop, and fails fast (Store._read)
                found = lookup()
                self._recovered()
                return found
            with anyio.move_on_after(self.budget_s):
                # abandon_on_cancel: past the budget the response goes on; the thread finishes on its own.
                found = await anyio.to_thread.run_sync(lookup, abandon_on_cancel=True, limiter=self._limiter)
                self._recovered()
                return found
        except StoreUnavailable as exc:
            self._report("unavailable", str(exc))
            return None
        except Exception:
            log.exception("alert memory lookup failed; cards returned as built")
            self.metrics.memory_lookup_failures_total.labels(reason="error").inc()
            return None
        self._report("timeout", f"no answer within {self.budget_s * 1000:.0f} ms")
        return None

    def _recovered(self) -> None:
        if self._failing:
            log.warning("alert memory answers again")
            self._failing = False

    def _report(self, reason: str, detail: str) -> None:
        self.metrics.memory_lookup_failures_total.labels(reason=reason).inc()
        if not self._failing:
            log.warning("alert memory unavailable (%s): cards are returned in full until it answers", detail)
        self._failing = True

    def _count(self, outcome: MemoryOutcome) -> None:
        m = self.metrics
        by_rule: dict[str, str] = {str(c.uuid): rule_of(c) for c in [*outcome.cards, *outcome.omitted]}
        demoted: Counter[str] = Counter()
        for uid, actions in outcome.actions.items():
            if DEMOTED in actions:
                demoted[by_rule[uid]] += 1
            if OMITTED in actions:
                m.memory_omitted_total.labels(rule=by_rule[uid]).inc()
        for rule, n in demoted.items():
            m.memory_demoted_total.labels(rule=rule).inc(n)
        for rule, n in outcome.withheld.items():
            m.memory_suggestions_withheld_total.labels(rule=rule).inc(n)
