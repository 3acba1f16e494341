"""Operational endpoints: `/health` (liveness), `/ready` (readiness) and `/metrics` (Prometheus).

Liveness answers 200 as long as the process can serve HTTP, whatever the database does: an
orchestrator restarting the pod would not bring the database back. Readiness is what should take
an instance out of the load balancer: database unreachable, policy or value sets not loaded, or the
FHIR client found with leaked pool slots (it is replaced then; the probe after that sees the new one).

`/metrics` is open unless `VA_CDS_METRICS_TOKEN` is set; then it needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cds_service.metrics import Metrics
from cds_service.persistence import Store

log = logging.getLogger(__name__)

# Probes and scrapes must always see the current state, never a cached answer.
_NO_STORE = {"Cache-Control": "no-store"}


def ops_router(
    get_store: Callable[[], Store],
    get_metrics: Callable[[], Metrics],
    readiness_checks: Callable[[], dict[str, bool]],
    *,
    fhir_check: Callable[[], Awaitable[bool]] | None = None,
    metrics_token: str | None = None,
) -> APIRouter:
    """Build the router. The callables are resolved per request, so the app may swap its store."""
    router = APIRouter(tags=["operations"])

    @router.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    def blocking_checks() -> dict[str, bool]:
        checks: dict[str, bool] = {}
        try:
            checks["database"] = bool(get_store().ping())
        except Exception:
            log.exception("readiness: database check raised")
            checks["database"] = False
        try:
            checks.update({name: bool(ok) for name, ok in readiness_checks().items()})
        except Exception:
            # A crashing check is a failed check: report not-ready rather than a 500.
            log.exception("readiness checks raised")
            checks["readiness_checks"] = False
        return checks

    @router.get("/ready")
    async def ready() -> JSONResponse:
        # ping() and the checks block on I/O: a worker thread. The FHIR check runs on the event loop, where
        # the client lives (it may replace the client, which must happen there).
        checks = await anyio.to_thread.run_sync(blocking_checks)
        if fhir_check is not None:
            try:
                checks["fhir_client"] = bool(await fhir_check())
            except Exception:
                log.exception("readiness: FHIR client check raised")
                checks["fhir_client"] = False
        failed = sorted(name for name, ok in checks.items() if not ok)
        if failed:
            return JSONResponse(
                {"status": "unavailable", "checks": checks, "failed": failed},
                status_code=503,
                headers=_NO_STORE,
            )
        return JSONResponse({"status": "ready", "checks": checks}, headers=_NO_STORE)

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        if metrics_token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # Constant-time comparison: the token must not be guessable byte by byte from response times.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), metrics_token):
                return JSONResponse(
                    {
                        "status": "unauthorized",
                        "reason": "metrics need the bearer token VA_CDS_METRICS_TOKEN",
                    },
                    status_code=401,
                    headers={**_NO_STORE, "WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        body, content_type = get_metrics().render()
        return Response(content=body, media_type=None, headers={"Content-Type": content_type, **_NO_STORE})

    return router
