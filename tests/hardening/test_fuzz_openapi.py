"""Fuzz the API from its contract: schemathesis generates requests from openapi.yaml and sends them to the
real app in-process (ASGI, no network), checking that nothing answers 5xx, every status code is one the
document lists for the operation, and every response body conforms to the documented schema.

Both generation modes run (schemathesis 4 default): positive (schema-valid requests: real hook envelopes,
feedback, probes) and negative (requests that violate the schema: they must get a documented 4xx, never a
500). The app runs with `auth_mode="off"` and a temporary SQLite database. `fhirServer` values the fuzzer
invents are never contacted: the app's HTTP client is an `httpx.MockTransport` that plays a FHIR server
answering empty searchsets (and a Patient for reads), so generated hook calls reach the real rules.

`service_id` is drawn from the real services (plus one unknown id) instead of arbitrary text, otherwise
almost every hook call would stop at 404 before reaching the envelope checks and the rules.

Bounded for CI: `VA_CDS_FUZZ_EXAMPLES` examples per operation (default 25), derandomized (the same cases on
every run), no hypothesis deadline. The longer release run (a few minutes on 2 cores):

    VA_CDS_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q tests/hardening/test_fuzz_openapi.py

or, against a running server (`make serve` with VA_CDS_AUTH_MODE=off on 127.0.0.1:8080):

    .venv/bin/schemathesis run openapi.yaml --url http://127.0.0.1:8080 --max-examples 2000 \
        --checks not_a_server_error,status_code_conformance,response_schema_conformance

Nothing is excluded silently; the per-operation adjustments are in `OPERATION_NOTES` below, with why.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.app import create_app
from cds_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "openapi.yaml"
EXAMPLES = int(os.environ.get("VA_CDS_FUZZ_EXAMPLES", "25"))
SERVICE_IDS = [
    "va-preprocedure-order-sign",
    "va-preprocedure-order-select",
    "va-preprocedure-patient-view",
    "va-postprocedure-encounter-start",
    "va-postprocedure-patient-view",
    "va-discharge",
    "no-such-service",
]
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

# Why an operation does not get every check (nothing else is adjusted):
OPERATION_NOTES = {
    # The document declares `application/yaml` with `schema: {type: string}`; schemathesis deserialises a
    # YAML body before validating it, so it compares the parsed *mapping* with `type: string`. We still
    # run not_a_server_error and status_code_conformance, and instead of the schema check assert that the
    # body is exactly openapi.yaml (test below). A contract nit for openapi.yaml's owner: declaring the
    # schema as `type: object` (or no schema) would let the generic check run.
    "GET /openapi.yaml": "yaml-body",
    # /docs/rules pages come with their own issue (cds_service.docs_pages). Until that module ships the
    # app answers 404 there, which the document does not list for /docs/rules: the operations are skipped
    # (visibly, with this reason) only while the module is absent.
    "GET /docs/rules": "docs-pages",
    "GET /docs/rules/{rule_id}": "docs-pages",
}
DOCS_PAGES_SHIPPED = importlib.util.find_spec("cds_service.docs_pages") is not None


def _fake_fhir(request: httpx.Request) -> httpx.Response:
    """A well-behaved FHIR server for whatever fhirServer the fuzzer invents (never on the network)."""
    path = request.url.path.rstrip("/")
    last = path.rsplit("/", 2)
    if len(last) >= 2 and last[-2] in ("Patient", "Encounter") and not request.url.query:
        body: dict[str, Any] = {"resourceType": last[-2], "id": last[-1]}
        if last[-2] == "Patient":
            body.update(gender="female", birthDate="1948-03-02")
        else:
            body.update(status="in-progress", **{"class": {"code": "IMP"}})
        return httpx.Response(200, json=body)
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "total": 0})


_TMP = Path(tempfile.mkdtemp(prefix="va-cds-fuzz-"))
APP = create_app(
    Settings(  # type: ignore[call-arg]
        auth_mode="off", database_url=f"sqlite:///{_TMP}/fuzz.db", log_level="WARNING", demo=True
    ),
    http_client=httpx.AsyncClient(transport=httpx.MockTransport(_fake_fhir)),
)


async def one_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """APP as uvicorn runs it: one lifespan per process. schemathesis' ASGI transport starts and stops the
    lifespan around every operation (restarting is covered by test_lifespan.py); this wrapper answers
    lifespan events itself and the module runs APP's real lifespan once (fixture below)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await APP(scope, receive, send)


schema = schemathesis.openapi.from_path(OPENAPI)
schema.app = one_lifespan_app


@schema.hook
def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
    """Call the real services (and one unknown id) rather than random text that always 404s."""
    if context.operation is not None and "{service_id}" in context.operation.path:
        return st.fixed_dictionaries({"service_id": st.sampled_from(SERVICE_IDS)})
    return strategy


@pytest.fixture(scope="module", autouse=True)
def _app_lifespan() -> Iterator[None]:
    with TestClient(APP):  # APP's one real lifespan: startup now, shutdown (audit drain) at module end
        yield
    shutil.rmtree(_TMP, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Any) -> None:
    key = f"{case.operation.method.upper()} {case.operation.path}"
    note = OPERATION_NOTES.get(key)
    if note == "docs-pages" and not DOCS_PAGES_SHIPPED:
        pytest.skip("cds_service.docs_pages is not shipped yet (its own issue): the app 404s there")
    if note == "yaml-body":
        response = case.call_and_validate(checks=[not_a_server_error, status_code_conformance])
        if response.status_code == 200:
            assert yaml.safe_load(response.content) == yaml.safe_load(OPENAPI.read_bytes())
        return
    case.call_and_validate(checks=CHECKS)
