"""HTTP side of the demo data source: `GET {type}/{id}`, `GET {type}?…`, `POST {type}/_search`, `metadata`.

Mounted at `/demo/fhir` only when `VA_CDS_DEMO=1`. No authentication (the sandbox sends none to a FHIR
server and the data are synthetic); CORS and Private Network Access come from the app's middleware. The
records are built per request from the app clock, so "two days ago" stays two days ago.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qs, urlencode

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from cds_service.demo.patients import demo_resources
from cds_service.demo.search import TYPES, SearchError, capability_statement, read, search, searchset
from cds_service.errors import ClientError

PREFIX = "/demo/fhir"
FHIR_JSON = "application/fhir+json"
_FORM_LIMIT = 64_000  # a search form is a query string; anything larger is not one


def _fhir(body: object) -> Response:
    return Response(orjson.dumps(body), media_type=FHIR_JSON)


def _known(rtype: str) -> None:
    if rtype not in TYPES:
        raise ClientError(404, f"resource type '{rtype}' is not part of the demo data")


def demo_router(clock: Callable[[], datetime], base_url: Callable[[Request], str]) -> APIRouter:
    """The demo FHIR routes. `base_url(request)` is the service's external base (for fullUrl links)."""
    router = APIRouter(prefix=PREFIX)

    def base(request: Request) -> str:
        return base_url(request) + PREFIX

    def run(request: Request, rtype: str, params: dict[str, list[str]]) -> Response:
        _known(rtype)
        try:
            found = search(demo_resources(clock()), rtype, params)
        except SearchError as exc:
            raise ClientError(400, str(exc)) from None
        return _fhir(searchset(base(request), rtype, urlencode(params, doseq=True), found))

    @router.get("/metadata")
    async def metadata(request: Request) -> Response:
        return _fhir(capability_statement(base(request), clock().date().isoformat()))

    @router.get("/{resource_type}")
    async def search_get(resource_type: str, request: Request) -> Response:
        return run(request, resource_type, parse_qs(request.url.query))

    @router.post("/{resource_type}/_search")
    async def search_post(resource_type: str, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if body and ctype != "application/x-www-form-urlencoded":
            raise ClientError(415, "a _search body must be application/x-www-form-urlencoded")
        if len(body) > _FORM_LIMIT:
            raise ClientError(413, f"search form larger than {_FORM_LIMIT} bytes")
        params = parse_qs(request.url.query)
        for name, values in parse_qs(body.decode("utf-8", "replace")).items():
            params.setdefault(name, []).extend(values)
        return run(request, resource_type, params)

    @router.get("/{resource_type}/{resource_id}")
    async def read_one(resource_type: str, resource_id: str) -> Response:
        _known(resource_type)
        resource = read(demo_resources(clock()), resource_type, resource_id)
        if resource is None:
            raise ClientError(404, f"{resource_type}/{resource_id} is not in the demo data")
        return _fhir(resource)

    return router
