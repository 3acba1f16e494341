"""The clinical CDS services of va-cds: one package per family (facts it needs, rules, cards)."""

from __future__ import annotations

from cds_service.contracts import ServiceDefinition
from hooks.policy import Policy


def build_services(policy: Policy) -> list[ServiceDefinition]:
    """Every clinical service, configured with the institution's policy."""
    from hooks import discharge, postprocedure, preprocedure

    return [
        *preprocedure.services(policy),
        *postprocedure.services(policy),
        *discharge.services(policy),
    ]
