"""Start-up checks on the settings: fail closed on dangerous combinations, warn once about development ones.

Refused (start-up stops with a message naming the settings):

* authentication required without `VA_CDS_PUBLIC_BASE_URL`: the JWT `aud` would be compared with a URL built
  from the request's Host header, which the caller chooses;
* `VA_CDS_TRUST_FILE` together with `VA_CDS_TRUST_PRESET`: a development preset (public signing key) merged
  silently into a production trust file;
* a malformed `VA_CDS_FHIR_SERVERS` entry.

Warned about, once each: CORS open to any origin, authentication off (and the development trust preset, by
`warn_preset` once the preset is loaded, naming the FHIR servers it allows).
"""

from __future__ import annotations

import logging

from cds_service.auth.fhir_servers import allowed_bases
from cds_service.settings import Settings

__all__ = ["check_settings", "fhir_servers_when_auth_off", "warn_preset"]

log = logging.getLogger("va_cds.startup")


def check_settings(settings: Settings) -> None:
    """Raise ValueError for a configuration that must not start; log the development warnings."""
    if settings.auth_mode == "required" and not settings.public_base_url:
        raise ValueError(
            "VA_CDS_PUBLIC_BASE_URL is required when authentication is on (VA_CDS_AUTH_MODE=required): "
            "the JWT aud claim is checked against it, never against the request's Host header "
            "(e.g. VA_CDS_PUBLIC_BASE_URL=https://cds.example.org)"
        )
    if settings.public_base_url and not settings.public_base_url.startswith(("https://", "http://")):
        raise ValueError(f"VA_CDS_PUBLIC_BASE_URL must be an http(s) URL, not {settings.public_base_url!r}")
    if settings.trust_file is not None and settings.trust_preset != "none":
        raise ValueError(
            f"VA_CDS_TRUST_FILE ({settings.trust_file}) and VA_CDS_TRUST_PRESET={settings.trust_preset} are "
            "both set: use the trust file alone in production, or the preset alone for development"
        )
    servers = fhir_servers_when_auth_off(settings)

    if settings.auth_mode == "off":
        log.warning(
            "authentication is OFF (VA_CDS_AUTH_MODE=off): any caller can use this service",
            extra={"fhir_servers": sorted(servers)},
        )
    elif settings.fhir_servers:
        log.warning(
            "VA_CDS_FHIR_SERVERS is ignored while authentication is on: list fhir_servers per issuer in the "
            "trust file"
        )
    if "*" in settings.cors_origins:
        log.warning("CORS allows any origin (VA_CDS_CORS_ORIGINS=*): list the EHR origins in production")


def warn_preset(name: str, fhir_servers: list[str]) -> None:
    """The one start-up warning for a development trust preset, with the FHIR bases it lets calls name."""
    log.warning(
        "development trust preset in force: its signing key is public, so anyone can mint tokens it "
        "accepts; never use it with real patient data. FHIR fetches are allowed only from these loopback "
        "bases: " + ", ".join(fhir_servers),
        extra={"preset": name, "fhir_servers": fhir_servers},
    )


def fhir_servers_when_auth_off(settings: Settings) -> frozenset[str]:
    """`VA_CDS_FHIR_SERVERS` as canonical bases; ValueError naming the setting for a bad entry."""
    try:
        return allowed_bases(settings.fhir_servers)
    except ValueError as exc:
        raise ValueError(f"VA_CDS_FHIR_SERVERS: {exc}") from None
