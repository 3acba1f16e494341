"""The clinical CDS services of va-cds: one module per service (facts it needs, its rules, its cards)."""

from __future__ import annotations

from cds_service.contracts import ServiceDefinition
from hooks.policy import Policy


def build_services(policy: Policy) -> list[ServiceDefinition]:
    """Every clinical service, configured with the institution's policy."""
    from hooks import discharge, postprocedure, va_preprocedure

    return [va_preprocedure.service(policy), *postprocedure.services(policy), discharge.service(policy)]
