"""Prometheus metrics for va-cds.

Each app instance owns a `Metrics` with its own `CollectorRegistry` (not the global default), so
several apps in one test process never collide on metric names and `/metrics` shows only this
app's series. Label values are bounded sets we control (service ids, hook names, rule ids, reason
keywords): never put patient ids, URLs or free text into a label.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

#: Hook latency buckets (seconds): EHRs typically give a CDS service a budget of a few seconds,
#: so the resolution is around 10 ms - 5 s, matching the FHIR fetch deadline (3 s by default).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    """The service's counters and histograms, registered in a dedicated registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests_total = Counter(
            "va_cds_requests", "CDS Hooks requests answered", ["service", "hook", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "va_cds_request_seconds",
            "Time to answer a CDS Hooks request",
            ["service", "hook"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cards_total = Counter("va_cds_cards", "Cards returned", ["rule", "indicator"], registry=r)
        self.fhir_fetch_failures_total = Counter(
            "va_cds_fhir_fetch_failures",
            "FHIR fetches that failed, by prefetch key and reason (timeout, http-<status>, ...)",
            ["key", "reason"],
            registry=r,
        )
        self.fhir_client_recreated_total = Counter(
            "va_cds_fhir_client_recreated",
            "FHIR clients replaced by the watchdog because their connection pool had leaked slots",
            registry=r,
        )
        self.jwt_rejections_total = Counter(
            "va_cds_jwt_rejections", "Requests refused by JWT verification", ["reason"], registry=r
        )
        self.feedback_total = Counter(
            "va_cds_feedback", "Feedback items stored (new ones only)", ["outcome"], registry=r
        )
        self.audit_write_failures_total = Counter(
            "va_cds_audit_write_failures",
            "Audit records that could not be written to the database (logged instead)",
            registry=r,
        )

        # Alert memory (cds_service.memory): what it spared clinicians, by rule, and when it could not look.
        self.memory_demoted_total = Counter(
            "va_cds_memory_demoted",
            "Warnings alert memory returned as info (overridden, or repeated on the same data)",
            ["rule"],
            registry=r,
        )
        self.memory_suggestions_withheld_total = Counter(
            "va_cds_memory_suggestions_withheld",
            "Suggestions alert memory withheld because the same order was accepted on the same data",
            ["rule"],
            registry=r,
        )
        self.memory_omitted_total = Counter(
            "va_cds_memory_omitted",
            "Overridden warnings alert memory left out of patient-view (only when the policy says so)",
            ["rule"],
            registry=r,
        )
        self.memory_lookup_failures_total = Counter(
            "va_cds_memory_lookup_failures",
            "Hook calls answered without alert memory: the lookup failed (unavailable, timeout, error)",
            ["reason"],
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
