"""The `pre.checklist` card's link: a SMART launch when a SMART client is configured, else the absolute
capability URL of the checklist page.

Kept apart from the routes so the hook response path imports nothing of the OAuth machinery.
"""

from __future__ import annotations

from cds_service.models import Link
from cds_service.settings import Settings

LAUNCH_PATH = "/smart/launch"


def launch_url(settings: Settings, base_url: str) -> str:
    """Where the EHR launches the app: `VA_CDS_SMART_LAUNCH_URL`, else `{public base}/smart/launch`."""
    if settings.smart_launch_url:
        return settings.smart_launch_url
    return f"{(settings.public_base_url or base_url).rstrip('/')}{LAUNCH_PATH}"


def checklist_link(settings: Settings, base_url: str, token: str, label: str) -> Link:
    """The card link for checklist `token`.

    With a SMART client the link is `type: smart` and its `appContext` is the token alone (no PHI): the
    EHR hands it back in the token response, and the app finds the snapshot with it.
    """
    if settings.smart_client_id:
        return Link(label=label, url=launch_url(settings, base_url), type="smart", appContext=token)
    return Link(label=label, url=f"{base_url.rstrip('/')}/checklist/{token}", type="absolute")
