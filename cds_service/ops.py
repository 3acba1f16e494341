"""Operational endpoints: `/health` (liveness), `/ready` (readiness) and `/metrics` (Prometheus).

Liveness answers 200 as long as the process can serve HTTP, whatever the database does: an
orchestrator restarting the pod would not bring the database back. Readiness is what should take
an instance out of the load balancer: database unreachable, policy or value sets not loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Response
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
) -> APIRouter:
    """Build the router. The callables are resolved per request, so the app may swap its store."""
    router = APIRouter(tags=["operations"])

    @router.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    # Plain `def`: ping() and the checks block on I/O, so FastAPI runs them in its threadpool.
    @router.get("/ready")
    def ready() -> JSONResponse:
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
        failed = sorted(name for name, ok in checks.items() if not ok)
        if failed:
            return JSONResponse(
                {"status": "unavailable", "checks": checks, "failed": failed},
                status_code=503,
                headers=_NO_STORE,
            )
        return JSONResponse({"status": "ready", "checks": checks}, headers=_NO_STORE)

    @router.get("/metrics")
    def metrics() -> Response:
        body, content_type = get_metrics().render()
        return Response(content=body, media_type=None, headers={"Content-Type": content_type, **_NO_STORE})

    return router
