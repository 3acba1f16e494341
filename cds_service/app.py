"""The FastAPI application: discovery, hook invocation, feedback, docs and ops routes.

`create_app(settings)` builds everything once (policy, value sets, services, store, verifier, metrics) so
nothing is re-loaded per request. Every call is authenticated first (unless auth is explicitly off), then
read strictly at the CDS envelope and leniently inside FHIR. Client mistakes get a 4xx with an
OperationOutcome saying what is wrong; the service never answers client input with a 500.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from cds_service.auth import REASONS, AuthError, www_authenticate
from cds_service.auth.fhir_servers import FhirServerRefused, check_fhir_server
from cds_service.checklist import attach_checklist_link
from cds_service.contracts import ServiceDefinition
from cds_service.database_url import ensure_folder
from cds_service.docs_pages import docs_router
from cds_service.errors import ClientError, outcome_response
from cds_service.gc_tuning import settle_heap
from cds_service.hook_contexts import context_problems
from cds_service.invocation import InvocationResult, invoke
from cds_service.logs import configure_logging, log_request, patient_hash
from cds_service.memory.apply import MemoryOutcome, suggestion_keys
from cds_service.memory.fingerprint import FINGERPRINT_KEY
from cds_service.memory.policy import load_memory_policy
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
from cds_service.persistence.writer import write_now
from cds_service.prefetch import PrefetchUnobtainable, check_template
from cds_service.scale import check_shared_keys
from cds_service.settings import Settings
from cds_service.startup import check_settings
from cds_service.state import State
from fhir_mappings.library import default_library
from hooks import build_services
from hooks.policy import load_policy

log = logging.getLogger("va_cds.app")
access_log = logging.getLogger("va_cds.access")

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "openapi.yaml"
JSON_TYPES = ("application/json", "application/fhir+json", "application/cds-hooks+json")
# Hook and feedback answers are about one patient and one caller: no shared or browser cache may keep them.
NO_STORE = {"Cache-Control": "no-store"}
#: Largest feedback body (issue 16 item 4): a report is a few short fields per card (bounds in models.py).
MAX_FEEDBACK_BODY_BYTES = 256_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _pretty_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as memory and feedback care: the JWT issuer and tenant ("" when none)."""

    issuer: str = ""
    tenant: str = ""

    @classmethod
    def from_claims(cls, claims: dict[str, Any] | None) -> Caller:
        """From verified claims; with authentication off (None) one anonymous caller, memory still works."""
        if claims is None:
            return cls()
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
    check_settings(settings)  # fail closed on dangerous combinations; warn once about development ones
    # Several processes answering with per-process random keys would break links and patient hashes
    # silently: refuse to start instead, naming the missing keys (cds_service/scale.py).
    check_shared_keys(settings)
    policy = load_policy(settings.policy_file)  # a malformed policy stops start-up here, naming the key
    library = default_library(settings.valueset_dir)
    services = build_services(policy) if services is None else services
    for svc in services:
        for template in svc.prefetch.values():
            check_template(template, (svc.hook,))
    ensure_folder(settings.database_url)  # ./var of the default SQLite file on a fresh checkout
    pool = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow}
    store = Store(settings.database_url, **pool)
    try:
        store.upgrade()  # migrations on start-up; `va-cds db upgrade` does the same by hand
    except StoreUnavailable:
        log.error("database unavailable at start-up: feedback will answer 503 until it returns")
    memory_policy = load_memory_policy(policy.path)  # the `memory:` block; malformed → start-up stops
    state = State(settings, policy, library, services, store, clock, http_client, jwt_clock, memory_policy)
    state.memory.announce()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settle_heap()  # everything is loaded: freeze it out of the collector's way (see gc_tuning)
        if state.verifier is not None:
            state.jti_purger.start()
        yield
        await state.jti_purger.stop()
        await anyio.to_thread.run_sync(state.shared_jti.close)
        await anyio.to_thread.run_sync(state.close_writer)  # drain queued audit rows and snapshots
        await state.fhir.aclose()
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
        return outcome_response(exc.status_code, reason, {**NO_STORE, **(exc.headers or {})})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return outcome_response(400, "invalid request", NO_STORE)

    @app.exception_handler(ClientError)
    async def _client_error(_request: Request, exc: ClientError) -> Response:
        # Errors carry the caller's situation (why it was refused): never cached by a proxy or browser.
        return outcome_response(exc.status, exc.reason, {**NO_STORE, **exc.headers})

    async def authenticate(request: Request, audiences: list[str]) -> dict[str, Any] | None:
        """The caller's verified JWT claims; None with auth off. Raises ClientError(401) with the reason."""
        if state.verifier is None:
            return None
        try:
            return await state.verifier.verify(request.headers.get("authorization"), audiences)
        except AuthError as exc:
            state.metrics.jwt_rejections_total.labels(reason=exc.reason).inc()
            # reason/detail never contain token bytes; they tell the operator why a caller was refused
            log.info(
                "JWT rejected", extra={"reason": exc.reason, "detail": exc.detail, "path": request.url.path}
            )
            raise ClientError(
                401,
                f"authentication failed: {REASONS[exc.reason]}",  # fixed phrases only, never token bytes
                {"WWW-Authenticate": www_authenticate(exc.reason)},
            ) from None

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
        body = DiscoveryResponse(services=_descriptors(state.services))
        return Response(
            orjson.dumps(body.model_dump(mode="json", exclude_none=True)), media_type="application/json"
        )

    @app.post("/cds-services/{service_id}")
    async def call_service(service_id: str, request: Request) -> Response:
        started = time.perf_counter()
        received = state.clock()
        base = state.base_url(request)
        claims = await authenticate(request, [f"{base}/cds-services/{service_id}"])
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
        allowed = state.allowed_fhir_servers(claims)
        if req.fhirServer is not None:
            # Before anything is fetched: a base this caller may not name is refused outright (issue 16).
            try:
                check_fhir_server(req.fhirServer, allowed, token=req.fhirAuthorization is not None)
            except FhirServerRefused as exc:
                raise ClientError(exc.status, exc.reason) from None
        try:
            result = await invoke(
                svc,
                req,
                client=state.fhir,
                limits=state.limits,
                now=received,
                base_url=base,
                library=state.library,
                allowed_fhir_servers=allowed,
            )
        except PrefetchUnobtainable as exc:
            state.metrics.requests_total.labels(service=svc.id, hook=req.hook, status="412").inc()
            raise ClientError(
                412, f"prefetch keys missing and no fhirServer to fetch them from: {', '.join(exc.keys)}"
            ) from None
        # In memory only (signed token, card link); the snapshot row is written off the response path.
        attach_checklist_link(state, svc.id, result, base)
        caller = Caller.from_claims(claims)
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
        return Response(body, media_type="application/json", headers=NO_STORE)

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> Response:
        base = state.base_url(request)
        claims = await authenticate(
            request, [f"{base}/cds-services/{service_id}/feedback", f"{base}/cds-services/{service_id}"]
        )
        caller = Caller.from_claims(claims)
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
            orjson.dumps({"received": len(fb.feedback), "stored": new}),
            media_type="application/json",
            headers=NO_STORE,
        )

    @app.get("/openapi.yaml", include_in_schema=False)
    async def openapi_yaml() -> Response:
        if not OPENAPI_FILE.is_file():
            raise ClientError(404, "openapi.yaml is not shipped with this installation")
        return Response(OPENAPI_FILE.read_bytes(), media_type="application/yaml")

    app.include_router(
        ops_router(
            lambda: state.store,
            lambda: state.metrics,
            lambda: _readiness(state),
            fhir_check=state.fhir.check,
            metrics_token=settings.metrics_token,
        ),
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
        ignored=_ignored(result) or None,
        patient=patient_hash(state.hash_key, pid) if isinstance(pid, str) else None,
    )


def _ignored(result: InvocationResult) -> dict[str, int]:
    """Resources left out as evidence (V2.4/V2.10): another patient's, or dated after the request time."""
    facts = result.hook_input.facts if result.hook_input is not None else None
    if facts is None:
        return {}
    counts = {"other-patient": facts.wrong_patient, "future-dated": facts.future_dated}
    return {k: v for k, v in counts.items() if v}


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
        issuer=caller.issuer,
        tenant=caller.tenant,
        # The counts of ignored resources ride in the outcomes map (no schema change): "ignored:other-patient"
        # → "2". They are about the FHIR data the call read, which is what this map records.
        fhir_outcomes={
            **{k: o.label() for k, o in result.outcomes.items()},
            **{f"ignored:{k}": str(v) for k, v in _ignored(result).items()},
        },
    )


def __getattr__(name: str) -> Any:
    """`cds_service.app:app` for uvicorn, built on first access (import has no side effects)."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
