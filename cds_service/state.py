"""The shared state of one app: settings, policy, value sets, services, store, writer, verifier, metrics.

Its own module so that the app, the checklist and the docs pages all import it from here: the routes
modules need `State`, and `cds_service.app` builds the routes, so keeping `State` in the app made an
import circle (app → docs pages → app).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx
from fastapi import Request
from sqlalchemy.engine import Connection

from cds_service.auth import JwtVerifier, load_trust
from cds_service.contracts import ServiceDefinition
from cds_service.fhir_client import FhirPool
from cds_service.memory.policy import MemoryPolicy
from cds_service.memory.recall import AlertMemory
from cds_service.metrics import Metrics
from cds_service.persistence import AuditRecord, Store, StoreUnavailable
from cds_service.persistence.jti import JtiStore
from cds_service.persistence.writer import GroupCommitWriter
from cds_service.prefetch import FetchLimits
from cds_service.scale import JtiPurger, SharedJti
from cds_service.settings import Settings
from cds_service.startup import fhir_servers_when_auth_off, warn_preset
from fhir_mappings.library import ValueSetLibrary
from hooks.policy import Policy

log = logging.getLogger("va_cds.app")


class State:
    """Everything the routes need, built once per app."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        library: ValueSetLibrary,
        services: list[ServiceDefinition],
        store: Store,
        clock: Callable[[], datetime],
        http: httpx.AsyncClient | None,
        jwt_clock: Callable[[], float] | None = None,
        memory_policy: MemoryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.library = library
        self.services = {s.id: s for s in services}
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        self._http = http
        self.limits = FetchLimits(
            settings.fhir_deadline_s,
            settings.fhir_max_pages,
            settings.fhir_max_bytes,
            settings.fhir_max_call_bytes,
            settings.fhir_call_concurrency,
        )
        # FHIR fetching has its own client, bounded and watched (cds_service.fhir_client); `http` stays for
        # JWKS retrieval, so a FHIR server's trouble can never touch authentication.
        self.fhir = FhirPool(
            settings.fhir_max_connections,
            client=http,
            on_recreate=lambda _n: self.metrics.fhir_client_recreated_total.inc(),
        )
        # With auth off the FHIR bases come from VA_CDS_FHIR_SERVERS; with auth on, per issuer (trust file).
        self.fhir_servers_auth_off = fhir_servers_when_auth_off(settings)
        self.hash_key = (settings.patient_hash_key or secrets.token_hex(32)).encode()
        # Checklist links are signed with a key derived from this (domain-separated, checklist/token.py).
        self.link_key = settings.checklist_link_key.encode() if settings.checklist_link_key else self.hash_key
        # The replay table every worker and replica shares (issue 17): the verifier claims each jti there.
        self.jti = JtiStore(store)
        self.shared_jti = SharedJti(self.jti)  # group-committed claims (persistence/jti.py JtiClaimer)
        # Alert memory (issue 19) needs patient hashes that stay the same across restarts: a configured key.
        self.memory = AlertMemory(
            store, memory_policy or MemoryPolicy(), self.metrics, stable_key=bool(settings.patient_hash_key)
        )
        # One writer thread (audit rows, checklist snapshots), many per transaction: written in arrival order,
        # drained at shutdown, and recreated on the next use, so an app object survives several lifespans.
        self._writer: GroupCommitWriter | None = None
        self._writer_lock = threading.Lock()
        self.audit_writes = AuditWrites(self.metrics)
        self.verifier: JwtVerifier | None = None
        if settings.auth_mode == "required":
            trust = load_trust(settings)  # a malformed trust file stops start-up with its problem named
            if settings.trust_preset != "none":
                servers = sorted({u for i in trust.issuers.values() for u in i.fhir_servers})
                warn_preset(settings.trust_preset, servers)
            if trust.is_empty:
                log.warning("authentication is required but no issuer is trusted: every call will get 401")
            self.verifier = JwtVerifier(
                trust, self.http, clock=jwt_clock or time.time, shared_replay=self.shared_jti
            )
        self.jti_purger = JtiPurger(self.jti, settings.jti_purge_interval_s, clock=jwt_clock or time.time)

    @property
    def writer(self) -> GroupCommitWriter:
        with self._writer_lock:
            if self._writer is None:
                self._writer = GroupCommitWriter(self.store, thread_name="va-cds-writer")
            return self._writer

    def close_writer(self) -> None:
        """Write everything queued, then stop the writer thread (the next use starts a new one)."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    @property
    def http(self) -> httpx.AsyncClient:
        # One shared client (connection reuse); created lazily so tests may inject a respx-mocked one.
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0), follow_redirects=False)
        return self._http

    def base_url(self, request: Request) -> str:
        # With auth on, public_base_url is required (cds_service.startup): the Host header is the caller's.
        return (self.settings.public_base_url or str(request.base_url)).rstrip("/")

    def allowed_fhir_servers(self, claims: dict[str, Any] | None) -> frozenset[str]:
        """The FHIR bases this caller may name: its issuer's `fhir_servers`, or the auth-off setting."""
        if self.verifier is None:
            return self.fhir_servers_auth_off
        issuer = self.verifier.trust.issuer(str((claims or {}).get("iss")))
        return issuer.fhir_servers if issuer is not None else frozenset()


class AuditWrites:
    """Audit records on the writer thread, after the response: the audit write never delays the clinician.

    Batched into the writer's transactions (`Store.write_audits`); one that cannot be stored even on its own
    is reported here.
    """

    what = "audit record"

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def write(self, store: Store, conn: Connection, records: Sequence[AuditRecord]) -> None:
        store.write_audits(conn, records)

    def failed(self, record: AuditRecord, exc: Exception) -> None:
        if isinstance(exc, StoreUnavailable):
            self._metrics.audit_write_failures_total.inc()
            # Degrade to the log so the record is not lost (no PHI in it: the patient id is a keyed hash).
            log.warning(
                "audit store unavailable; audit record logged instead",
                extra={"audit": {**record.__dict__, "received_at": record.received_at.isoformat()}},
            )
        else:  # a bug, not the database: say so, with the record's id, rather than lose it silently
            log.exception(
                "audit write failed", exc_info=exc, extra={"audit_hook_instance": record.hook_instance}
            )
