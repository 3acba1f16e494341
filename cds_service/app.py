"""The FastAPI application: discovery, hook invocation, feedback, docs and ops routes.

`create_app(settings)` builds everything once (policy, value sets, services, store, verifier, metrics) so
nothing is re-loaded per request. Every call is authenticated first (unless auth is explicitly off), then
read strictly at the CDS envelope and leniently inside FHIR. Client mistakes get a 4xx with an
OperationOutcome saying what is wrong; the service never answers client input with a 500.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from cds_service.auth import AuthError, JwtVerifier, load_trust, www_authenticate
from cds_service.checklist import attach_checklist_link
from cds_service.contracts import ServiceDefinition
from cds_service.database_url import ensure_folder
from cds_service.errors import ClientError, outcome_response
from cds_service.gc_tuning import settle_heap
from cds_service.hook_contexts import context_problems
from cds_service.invocation import InvocationResult, invoke
from cds_service.logs import configure_logging, log_request, patient_hash
from cds_service.memory.apply import MemoryOutcome, suggestion_keys
from cds_service.memory.fingerprint import FINGERPRINT_KEY
from cds_service.memory.policy import MemoryPolicy, load_memory_policy
from cds_service.memory.recall import AlertMemory
from cds_service.metrics import Metrics
from cds_service.models import (
    Card,
    DiscoveryResponse,
    FeedbackRequest,
    HookRequest,
    HookResponse,
    ServiceDescriptor,
)
from cds_service.ops import ops_router
from cds_service.persistence import AuditRecord, InvalidFeedback, Store, StoreUnavailable
from cds_service.persistence.writer import GroupCommitWriter, write_now
from cds_service.prefetch import FetchLimits, PrefetchUnobtainable, check_template
from cds_service.settings import Settings
from fhir_mappings.library import ValueSetLibrary, default_library
from hooks import build_services
from hooks.policy import Policy, load_policy

log = logging.getLogger("va_cds.app")
access_log = logging.getLogger("va_cds.access")

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "openapi.yaml"
JSON_TYPES = ("application/json", "application/fhir+json", "application/cds-hooks+json")
#: Largest feedback body (issue 16): a report is a few short fields per card (see the bounds in models.py).
MAX_FEEDBACK_BODY_BYTES = 256_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _pretty_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


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
        self.limits = FetchLimits(settings.fhir_deadline_s, settings.fhir_max_pages, settings.fhir_max_bytes)
        self.hash_key = (settings.patient_hash_key or secrets.token_hex(32)).encode()
        # Alert memory needs patient hashes that stay the same across restarts, hence a configured key.
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
            if trust.is_empty:
                log.warning("authentication is required but no issuer is trusted: every call will get 401")
            self.verifier = (
                JwtVerifier(trust, self.http, clock=jwt_clock) if jwt_clock else JwtVerifier(trust, self.http)
            )

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
        return (self.settings.public_base_url or str(request.base_url)).rstrip("/")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as memory and feedback care: the JWT issuer and tenant ("" when none)."""

    issuer: str = ""
    tenant: str = ""

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Caller:
        tenant = claims.get("tenant")
        return cls(issuer=str(claims.get("iss") or ""), tenant=tenant if isinstance(tenant, str) else "")


def _descriptors(services: dict[str, ServiceDefinition]) -> list[ServiceDescriptor]:
    out = []
    # One entry per id (catalog V2.1): the sandbox and many EHRs keep one hook per service URL.
    for svc in services.values():
        out.append(
            ServiceDescriptor(
                hook=svc.hook,
                id=svc.id,
                title=svc.title,
                description=svc.description,
                prefetch=dict(svc.prefetch) or None,
                usageRequirements=svc.usage_requirements or None,
            )
        )
    return out


def create_app(
    settings: Settings | None = None,
    *,
    services: list[ServiceDefinition] | None = None,
    clock: Callable[[], datetime] = _utcnow,
    http_client: httpx.AsyncClient | None = None,
    jwt_clock: Callable[[], float] | None = None,
) -> FastAPI:
    """Build the app. `services` replaces the clinical services (tests of the core register their own).

    `clock` is the request time the rules see; `jwt_clock` the verifier's (tests replay recorded tokens).
    """
    settings = settings or Settings()
    configure_logging(settings.log_level)
    policy = load_policy(settings.policy_file)  # a malformed policy stops start-up here, naming the key
    library = default_library(settings.valueset_dir)
    services = build_services(policy) if services is None else services
    for svc in services:
        for template in svc.prefetch.values():
            check_template(template, (svc.hook,))
    ensure_folder(settings.database_url)  # ./var of the default SQLite file on a fresh checkout
    store = Store(settings.database_url)
    try:
        store.upgrade()  # migrations on start-up; `va-cds db upgrade` does the same by hand
    except StoreUnavailable:
        log.error("database unavailable at start-up: feedback will answer 503 until it returns")
    memory_policy = load_memory_policy(policy.path)  # the `memory:` block; malformed → start-up stops
    state = State(settings, policy, library, services, store, clock, http_client, jwt_clock, memory_policy)
    state.memory.announce()
    if settings.auth_mode == "off":
        log.warning("authentication is OFF (VA_CDS_AUTH_MODE=off): any caller can use this service")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settle_heap()  # everything is loaded: freeze it out of the collector's way (see gc_tuning)
        yield
        await anyio.to_thread.run_sync(state.close_writer)  # drain queued audit rows and snapshots
        if http_client is None and state._http is not None:
            await state._http.aclose()
        await anyio.to_thread.run_sync(store.close)

    app = FastAPI(
        title="va-cds",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the hand-written openapi.yaml is the contract; served at /openapi.yaml
        lifespan=lifespan,
    )
    app.state.va = state

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            # Chrome asks before a public page (the https sandbox) calls loopback: a preflight with
            # Access-Control-Request-Private-Network gets the grant, for allowed origins only.
            allow_private_network=True,
            max_age=600,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return outcome_response(exc.status_code, reason)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return outcome_response(400, "invalid request")

    @app.exception_handler(ClientError)
    async def _client_error(_request: Request, exc: ClientError) -> Response:
        return outcome_response(exc.status, exc.reason, exc.headers)

    async def authenticate(request: Request, audiences: list[str]) -> Caller:
        if state.verifier is None:
            return Caller()  # authentication off: one anonymous caller (memory and feedback still work)
        try:
            claims = await state.verifier.verify(request.headers.get("authorization"), audiences)
        except AuthError as exc:
            state.metrics.jwt_rejections_total.labels(reason=exc.reason).inc()
            # reason/detail never contain token bytes; they tell the operator why a caller was refused
            log.info(
                "JWT rejected", extra={"reason": exc.reason, "detail": exc.detail, "path": request.url.path}
            )
            raise ClientError(
                401, "authentication failed", {"WWW-Authenticate": www_authenticate(exc.reason)}
            ) from None
        return Caller.from_claims(claims)

    async def read_json(request: Request, limit: int | None = None) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES and not ctype.endswith("+json"):
            raise ClientError(415, "Content-Type must be application/json")
        declared = request.headers.get("content-length")
        limit = settings.max_body_bytes if limit is None else min(limit, settings.max_body_bytes)
        if declared and declared.isdigit() and int(declared) > limit:
            raise ClientError(413, f"request body larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ClientError(413, f"request body larger than {limit} bytes")
            chunks.append(chunk)
        if size == 0:
            raise ClientError(400, "request body is empty")
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise ClientError(400, f"request body is not valid JSON ({exc.msg})") from None

    def service_or_404(service_id: str) -> ServiceDefinition:
        svc = state.services.get(service_id)
        if svc is None:
            raise ClientError(404, f"no CDS service with id '{service_id}'")
        return svc

    @app.get("/cds-services")
    async def discovery(request: Request) -> Response:
        await authenticate(request, [f"{state.base_url(request)}/cds-services"])
        if settings.auth_mode == "off":
            log.warning("discovery served with authentication OFF")
        body = DiscoveryResponse(services=_descriptors(state.services))
        return Response(
            orjson.dumps(body.model_dump(mode="json", exclude_none=True)), media_type="application/json"
        )

    @app.post("/cds-services/{service_id}")
    async def call_service(service_id: str, request: Request) -> Response:
        started = time.perf_counter()
        received = state.clock()
        base = state.base_url(request)
        caller = await authenticate(request, [f"{base}/cds-services/{service_id}"])
        svc = service_or_404(service_id)
        raw = await read_json(request)
        if not isinstance(raw, dict):
            raise ClientError(400, "request body must be a JSON object")
        try:
            req = HookRequest.model_validate(raw)
        except ValidationError as exc:
            raise ClientError(400, f"invalid CDS Hooks request: {_pretty_errors(exc)}") from None
        if req.hook != svc.hook:
            raise ClientError(
                400, f"service '{svc.id}' does not answer hook '{req.hook}' (it answers '{svc.hook}')"
            )
        problems = context_problems(req.hook, req.context)
        if problems:
            raise ClientError(400, "; ".join(problems))
        try:
            result = await invoke(
                svc,
                req,
                client=state.http,
                limits=state.limits,
                now=received,
                base_url=base,
                library=state.library,
            )
        except PrefetchUnobtainable as exc:
            state.metrics.requests_total.labels(service=svc.id, hook=req.hook, status="412").inc()
            raise ClientError(
                412, f"prefetch keys missing and no fhirServer to fetch them from: {', '.join(exc.keys)}"
            ) from None
        # In memory only (signed token, card link); the snapshot row is written off the response path.
        attach_checklist_link(state, svc.id, result, base)
        pid = req.context.get("patientId")
        patient = patient_hash(state.hash_key, pid) if isinstance(pid, str) else None
        remembered = await state.memory.apply(
            result.cards,
            patient_hash=patient,
            issuer=caller.issuer,
            tenant=caller.tenant,
            hook=req.hook,
            now=received,
        )
        result.cards = remembered.cards
        duration = time.perf_counter() - started
        body = HookResponse(cards=result.cards).to_json()
        _observe(state, svc, req, result, duration)
        record = _audit_record(svc, req, result, remembered, received, duration, patient, caller)
        # Off the request cycle entirely: a BackgroundTask would hold the keep-alive connection (and so the
        # EHR's next call) until the database write finished.
        try:
            state.writer.submit(state.audit_writes, record)
        except RuntimeError:  # shutting down this very moment: write it here rather than lose it
            await anyio.to_thread.run_sync(write_now, state.store, state.audit_writes, record)
        return Response(body, media_type="application/json")

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> Response:
        base = state.base_url(request)
        caller = await authenticate(
            request, [f"{base}/cds-services/{service_id}/feedback", f"{base}/cds-services/{service_id}"]
        )
        svc = service_or_404(service_id)
        raw = await read_json(request, MAX_FEEDBACK_BODY_BYTES)
        try:
            fb = FeedbackRequest.model_validate(raw)
        except ValidationError as exc:
            raise ClientError(400, f"invalid feedback: {_pretty_errors(exc)}") from None
        # Stored under the caller: it counts only for a card this service sent to this issuer and tenant
        # (report and memory join on all three), so a report from anyone else is kept exactly like one
        # about an unknown card and can never turn the genuine report into a "duplicate".
        save = functools.partial(
            state.store.save_feedback,
            svc.id,
            fb.feedback,
            state.clock(),
            issuer=caller.issuer,
            tenant=caller.tenant,
        )
        try:
            new = await anyio.to_thread.run_sync(save)
        except InvalidFeedback as exc:
            raise ClientError(400, f"invalid feedback: {exc}") from None
        except StoreUnavailable:
            # Acknowledge only what is committed: 503 makes the EHR retry instead of losing the feedback.
            raise ClientError(503, "feedback store unavailable; retry later", {"Retry-After": "5"}) from None
        for item in fb.feedback:
            state.metrics.feedback_total.labels(outcome=item.outcome).inc()
        access_log.info("feedback stored", extra={"service": svc.id, "items": len(fb.feedback), "new": new})
        return Response(
            orjson.dumps({"received": len(fb.feedback), "stored": new}), media_type="application/json"
        )

    @app.get("/openapi.yaml", include_in_schema=False)
    async def openapi_yaml() -> Response:
        if not OPENAPI_FILE.is_file():
            raise ClientError(404, "openapi.yaml is not shipped with this installation")
        return Response(OPENAPI_FILE.read_bytes(), media_type="application/yaml")

    app.include_router(
        ops_router(lambda: state.store, lambda: state.metrics, lambda: _readiness(state)),
    )
    _include_docs(app, state)
    if settings.demo:
        _include_demo(app, state)
    return app


def _include_demo(app: FastAPI, state: State) -> None:
    from cds_service.demo import demo_router

    app.include_router(demo_router(state.clock, state.base_url))
    log.warning("demo data source on: synthetic patients served read-only at /demo/fhir (VA_CDS_DEMO=1)")


def _include_docs(app: FastAPI, state: State) -> None:
    from cds_service.docs_pages import docs_router

    app.include_router(docs_router(state))
    from cds_service.smart.routes import smart_router  # issue 20: the checklist as a SMART app

    app.include_router(smart_router(state))


def _readiness(state: State) -> dict[str, bool]:
    return {
        "policy": bool(state.policy.thresholds),
        "valuesets": len(state.library.ids()) > 0,
        "services": True,
    }


def _observe(
    state: State, svc: ServiceDefinition, req: HookRequest, result: InvocationResult, duration: float
) -> None:
    m = state.metrics
    m.requests_total.labels(service=svc.id, hook=req.hook, status="200").inc()
    m.request_seconds.labels(service=svc.id, hook=req.hook).observe(duration)
    for card in result.cards:
        rule = str((card.extension or {}).get("org.va-cds.rule"))
        m.cards_total.labels(rule=rule, indicator=card.indicator).inc()
    for key, outcome in result.outcomes.items():
        if not outcome.available:
            m.fhir_fetch_failures_total.labels(key=key, reason=outcome.reason or outcome.status).inc()
    if not access_log.isEnabledFor(logging.INFO):
        return  # the request line is off (log level WARNING or above): build none of it
    pid = req.context.get("patientId")
    log_request(
        access_log,
        request_id=str(uuid.uuid4()),
        service=svc.id,
        hook=req.hook,
        hook_instance=req.hookInstance,
        status=200,
        duration_ms=round(duration * 1000, 2),
        rules=result.rule_ids,
        fhir={k: o.label() for k, o in result.outcomes.items()},
        patient=patient_hash(state.hash_key, pid) if isinstance(pid, str) else None,
    )


def _audit_record(
    svc: ServiceDefinition,
    req: HookRequest,
    result: InvocationResult,
    remembered: MemoryOutcome,
    received: datetime,
    duration: float,
    patient: str | None,
    caller: Caller,
) -> AuditRecord:
    def row(c: Card) -> dict[str, Any]:
        ext = c.extension or {}
        actions = remembered.actions.get(str(c.uuid))
        return {
            "uuid": str(c.uuid),
            "rule": ext.get("org.va-cds.rule"),
            "indicator": c.indicator,
            "suggestions": [str(s.uuid) for s in c.suggestions or ()],
            "fingerprint": ext.get(FINGERPRINT_KEY),
            "memory": ",".join(actions) if actions else None,
            "suggestion_keys": suggestion_keys(c),
        }

    return AuditRecord(
        hook_instance=req.hookInstance,
        service_id=svc.id,
        hook=req.hook,
        received_at=received,
        duration_ms=round(duration * 1000, 3),
        patient_hash=patient,
        # Cards memory left out are kept (marked "omitted"): the report counts what memory spared.
        cards=[row(c) for c in [*result.cards, *remembered.omitted]],
        fhir_outcomes={k: o.label() for k, o in result.outcomes.items()},
        issuer=caller.issuer,
        tenant=caller.tenant,
    )


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


def __getattr__(name: str) -> Any:
    """`cds_service.app:app` for uvicorn, built on first access (import has no side effects)."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
