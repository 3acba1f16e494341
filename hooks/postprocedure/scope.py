"""When the post-procedure services apply, and the VA that anchors them.

They apply while the most recent completed (or in-progress) VA started within the policy look-back
(`post_lookback_days`) and not in the future. A chart without a VA answers `{"cards": []}`: no noise.
A deceased patient gets no cards (catalog V2.4). When the procedure source failed, whether a VA is in
scope is unknown, so the only card is `sys.data-unavailable` naming the checks that could not run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fhir_mappings.facts import ProcedureFact
from hooks.common.timing import VaTimeline, va_time
from hooks.policy import Policy


def latest_va_in_lookback(timeline: VaTimeline, now: datetime, policy: Policy) -> ProcedureFact | None:
    """The most recent VA when it started within the look-back; None otherwise (the service is silent)."""
    latest = timeline.latest
    start = va_time(latest) if latest is not None else None
    if latest is None or start is None:
        return None
    if now - start > timedelta(days=policy.value("post_lookback_days")):
        return None
    return latest
