"""Discharge checklist after vertebral augmentation (rule catalog, `discharge.*` rules).

Same layout as the other families: `scope` (is a VA in scope for this discharge), `prefetch` (templates and
the checks each key feeds), `rules` (one function per rule id), `present` (findings → cards), `docs` (rule
pages), `service` (the `va-discharge` ServiceDefinition on encounter-discharge).
"""

from hooks.discharge.service import SERVICE_ID, services

__all__ = ["SERVICE_ID", "services"]
