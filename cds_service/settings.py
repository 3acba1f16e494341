"""Settings from `VA_CDS_*` environment variables (and an optional env file), via pydantic-settings.

Every setting is documented in the README's Configuration table. Defaults are production-safe:
authentication is required and no issuer is trusted until a trust file or the sandbox preset is chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: One default for every command (serve, evaluate, report, db upgrade); `make serve` uses it too.
DEFAULT_DATABASE_URL = "sqlite:///./var/va-cds.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VA_CDS_",
        env_file=os.environ.get("VA_CDS_SETTINGS_FILE"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the audit/feedback DB"
    )
    policy_file: Path | None = Field(
        default=None, description="Institutional policy.yaml (packaged default if unset)"
    )
    valueset_dir: Path | None = Field(default=None, description="Directory of local value-set extensions")
    trust_file: Path | None = Field(default=None, description="Trusted JWT issuers (YAML)")
    trust_preset: Literal["none", "sandbox"] = Field(
        default="none", description="'sandbox' trusts the public CDS Hooks Sandbox (development only)"
    )
    auth_mode: Literal["required", "off"] = Field(
        default="required", description="JWT verification on every call"
    )
    public_base_url: str | None = Field(
        default=None, description="External base URL (behind a proxy); used for JWT aud and card links"
    )
    fhir_deadline_s: float = Field(default=3.0, gt=0, le=60, description="One deadline for all FHIR fetches")
    fhir_max_pages: int = Field(default=5, ge=1, le=100, description="Pages followed per prefetch search")
    fhir_max_bytes: int = Field(default=20_000_000, ge=1_000, description="Largest FHIR response read")
    # Issue 16: one hook call may not read more than this from FHIR, across all keys and pages.
    fhir_max_call_bytes: int = Field(
        default=40_000_000, ge=1_000, description="Most FHIR bytes read for one hook call, all keys and pages"
    )
    fhir_max_connections: int = Field(
        default=64, ge=1, le=1000, description="FHIR fetches in flight per process (= connection pool size)"
    )
    fhir_call_concurrency: int = Field(
        default=16, ge=1, le=100, description="FHIR fetches in flight for one hook call"
    )
    fhir_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        # Hook calls' fhirServer and SMART launches' iss (issue 20) alike.
        description="FHIR base URLs calls may name when auth is off (comma-separated; trust file otherwise)",
    )
    metrics_token: str | None = Field(
        default=None, description="If set, GET /metrics requires 'Authorization: Bearer <this token>'"
    )
    max_body_bytes: int = Field(default=16_000_000, ge=1_000, description="Largest request body accepted")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed browser origins, comma-separated; '*' allows any"
    )
    patient_hash_key: str | None = Field(
        default=None,
        description="Secret for the keyed hash of patient ids in audit/logs (random per start if unset)",
    )
    checklist_ttl_s: int = Field(default=8 * 3600, ge=60, description="Lifetime of checklist page links")
    # --- running at scale (issue 17; see cds_service/scale.py) ---
    checklist_link_key: str | None = Field(
        default=None,
        description="Secret signing checklist links (derived from the patient hash key if unset)",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes (`va-cds serve --workers` sets it for them)"
    )
    db_pool_size: int = Field(
        default=5, ge=1, le=100, description="PostgreSQL connections kept open per worker process"
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=100, description="Extra PostgreSQL connections a worker may open under load"
    )
    jti_purge_interval_s: float = Field(
        default=300.0, gt=0, le=86_400, description="How often expired rows leave the shared jti table"
    )
    # SMART App Launch (issue 20): the checklist as a SMART app; off unless a client id is set.
    smart_client_id: str | None = Field(default=None, description="OAuth client id registered with the EHR")
    smart_client_secret: str | None = Field(
        default=None, description="Client secret (confidential client); unset = public client with PKCE"
    )
    smart_launch_url: str | None = Field(
        default=None, description="Launch URL put in smart links (default {public base}/smart/launch)"
    )
    smart_launch_ttl_s: int = Field(default=600, ge=30, description="Time to finish the EHR authorization")
    smart_session_ttl_s: int = Field(default=3600, ge=60, description="Lifetime of a launched checklist")
    log_level: str = Field(default="INFO")
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8080, ge=1, le=65535)
    demo: bool = Field(
        default=False,
        description="Serve the packaged synthetic demo patients read-only at /demo/fhir (make serve sets it)",
    )

    @field_validator("cors_origins", "fhir_servers", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v
