"""The three in-process subjects of the evaluation-floor case, each starting from the raw request bytes.

* `parse_floor`: `orjson.loads` of the body — nothing can answer faster than reading it;
* `VaCds.run`: what the app does per call, minus HTTP: orjson parse, `HookRequest` validation, context
  check, `invoke` (prefetch resolution, facts, rules, cards) and the orjson response;
* `naive`: orjson parse, then every prefetched resource validated with fhir.resources (R4B) models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from cds_service.gc_tuning import settle_heap
from cds_service.hook_contexts import context_problems
from cds_service.invocation import InvocationResult, invoke
from cds_service.models import HookRequest, HookResponse
from cds_service.prefetch import FetchLimits
from fhir_mappings.library import load_library
from hooks import build_services
from hooks.policy import load_policy

BASE_URL = "http://127.0.0.1:8080"


def parse_floor(body: bytes) -> Any:
    return orjson.loads(body)


@dataclass(slots=True)
class NaiveCount:
    validated: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)


def _prefetched_resources(prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for value in prefetch.values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            out.extend(e["resource"] for e in value.get("entry") or () if isinstance(e.get("resource"), dict))
        else:
            out.append(value)
    return out


def naive(body: bytes, count: NaiveCount | None = None) -> NaiveCount:
    """The naive service's first step: every prefetched resource through fhir.resources R4B."""
    from fhir.resources.R4B import get_fhir_model_class

    count = count if count is not None else NaiveCount()
    raw = orjson.loads(body)
    for res in _prefetched_resources(raw.get("prefetch") or {}):
        rtype = str(res.get("resourceType"))
        try:
            get_fhir_model_class(rtype).model_validate(res)
            count.validated += 1
        except Exception:  # a resource R4B refuses (Synthea writes R4): skipped, but counted
            count.failed += 1
            count.failures[rtype] = count.failures.get(rtype, 0) + 1
    return count


class VaCds:
    """va-cds' per-call work with everything built once, as `create_app` does."""

    def __init__(
        self, service_id: str = "va-preprocedure-order-sign", limits: FetchLimits | None = None
    ) -> None:
        self.policy = load_policy()
        self.library = load_library()
        services = {s.id: s for s in build_services(self.policy)}
        self.service = services[service_id]
        self.limits = limits or FetchLimits()
        self.loop = asyncio.new_event_loop()
        # Never used when the prefetch is complete (the fetch case passes real requests through it).
        self.client = self.loop.run_until_complete(self._make_client())
        self.last: InvocationResult | None = None
        settle_heap()  # as the app's lifespan does once everything is loaded

    @staticmethod
    async def _make_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0), follow_redirects=False)

    async def handle(self, body: bytes, limits: FetchLimits | None = None) -> bytes:
        raw = orjson.loads(body)
        req = HookRequest.model_validate(raw)
        problems = context_problems(req.hook, req.context)
        if problems:
            raise ValueError("; ".join(problems))
        result = await invoke(
            self.service,
            req,
            client=self.client,
            limits=limits or self.limits,
            now=datetime.now(UTC),
            base_url=BASE_URL,
            library=self.library,
        )
        self.last = result
        return HookResponse(cards=result.cards).to_json()

    def run(self, body: bytes) -> bytes:
        return self.loop.run_until_complete(self.handle(body))

    def run_coro(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def rules(self) -> list[str]:
        return self.last.rule_ids if self.last else []

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
