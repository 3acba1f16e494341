"""Prefetch: render 2.0 templates, read what the client sent, fetch what it did not.

One service, as in HAPI's CdsPrefetchSvc: for every key the service declares, decide whether the client's
prefetch answers it (`null` = known empty; an OperationOutcome = unavailable), fetch the missing keys from
`fhirServer` concurrently under ONE per-request deadline with bounded paging and a byte limit, and report
an outcome per key. A key that cannot be obtained at all (no `fhirServer`) raises `PrefetchUnobtainable`,
which the app answers with 412 as the spec requires.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from cds_service.hook_contexts import HOOKS, USER_TOKENS

TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A service declared a prefetch template that is not CDS Hooks 2.0 (a programming error)."""


class PrefetchUnobtainable(Exception):
    """Required prefetch keys are absent and there is no fhirServer to fetch them from (→ 412)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


def check_template(template: str, hooks: tuple[str, ...]) -> None:
    """Refuse anything but 2.0 tokens: `context.<root primitive token field>` or a user token."""
    for token in TOKEN.findall(template):
        if token in USER_TOKENS:
            continue
        if token.startswith("context."):
            name = token.removeprefix("context.")
            if all(name in HOOKS[h].tokens for h in hooks if h in HOOKS):
                continue
        raise TemplateError(f"prefetch token '{{{{{token}}}}}' is not a CDS Hooks 2.0 token for {hooks}")
    if "{{" in TOKEN.sub("", template) or "}}" in TOKEN.sub("", template):
        raise TemplateError(f"malformed token in prefetch template {template!r}")


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """Fill a template from the context; None when a token has no value in this call (e.g. no encounterId)."""
    user = context.get("userId") if isinstance(context.get("userId"), str) else ""
    kind, _, user_id = str(user).partition("/")
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        token = match.group(1)
        if token in USER_TOKENS:
            if USER_TOKENS[token] == kind and user_id:
                return user_id
            missing = True
            return ""
        raw = context.get(token.removeprefix("context."))
        if not isinstance(raw, str) or not raw:
            missing = True
            return ""
        return raw

    out = TOKEN.sub(value, template)
    return None if missing else out


@dataclass(slots=True)
class KeyOutcome:
    """What became of one prefetch key."""

    status: str  # prefetched | fetched | null | skipped | operation-outcome | failed
    reason: str | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.status not in ("operation-outcome", "failed")

    def label(self) -> str:
        return f"{self.status}:{self.reason}" if self.reason else self.status


@dataclass(frozen=True, slots=True)
class FetchLimits:
    deadline_s: float = 3.0
    max_pages: int = 5
    max_bytes: int = 20_000_000


def _is_error_outcome(resource: Mapping[str, Any]) -> bool:
    issues = resource.get("issue")
    if not isinstance(issues, list) or not issues:
        return True  # an OperationOutcome with no issues still says "this is not your data"
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues)


def _bundle_entries(bundle: Mapping[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Resources of a Bundle, and whether it carried an error OperationOutcome entry."""
    out: list[dict[str, Any]] = []
    errored = False
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return out, errored
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        res = entry.get("resource")
        if not isinstance(res, dict):
            continue
        if res.get("resourceType") == "OperationOutcome":
            search = entry.get("search")
            mode = search.get("mode") if isinstance(search, dict) else None
            # search.mode "outcome" entries are informational unless they carry errors
            if mode != "outcome" or _is_error_outcome(res):
                errored = errored or _is_error_outcome(res)
            continue
        out.append(res)
    return out, errored


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def read_prefetched(value: Any) -> KeyOutcome:
    """Interpret one prefetch value the client sent."""
    if value is None:
        return KeyOutcome("null")
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return KeyOutcome("failed", "not-fhir")
    if value["resourceType"] == "OperationOutcome":
        return KeyOutcome("operation-outcome")
    if value["resourceType"] == "Bundle":
        resources, errored = _bundle_entries(value)
        if errored:
            return KeyOutcome("operation-outcome", resources=resources)
        return KeyOutcome("prefetched", resources=resources)
    return KeyOutcome("prefetched", resources=[value])


class Fetcher:
    """GETs FHIR queries from one fhirServer with the client's bearer token (never logged or kept)."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str | None, limits: FetchLimits) -> None:
        self._client = client
        self._base = base.rstrip("/") + "/"
        self._origin = urlsplit(self._base)[:2]
        self._headers = {"Accept": "application/fhir+json, application/json;q=0.9"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._limits = limits

    def _same_server(self, url: str) -> bool:
        # Never send the access token to another host, even if a `next` link points there.
        return urlsplit(url)[:2] == self._origin

    async def _get_json(self, url: str) -> tuple[Any, str | None]:
        async with self._client.stream("GET", url, headers=self._headers) as resp:
            if resp.status_code != 200:
                return None, f"http-{resp.status_code}"
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self._limits.max_bytes:
                return None, "too-large"
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > self._limits.max_bytes:
                    return None, "too-large"
                chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks)), None
        except orjson.JSONDecodeError:
            return None, "malformed-json"

    async def fetch(self, query: str) -> KeyOutcome:
        url = urljoin(self._base, query.lstrip("/"))
        resources: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _page in range(self._limits.max_pages):
            seen.add(url)
            try:
                body, problem = await self._get_json(url)
            except httpx.TimeoutException:
                return KeyOutcome("failed", "timeout")
            except httpx.HTTPError as exc:
                return KeyOutcome("failed", type(exc).__name__)
            if problem:
                return KeyOutcome("failed", problem)
            if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
                return KeyOutcome("failed", "not-fhir")
            if body["resourceType"] == "OperationOutcome":
                return KeyOutcome("operation-outcome")
            if body["resourceType"] != "Bundle":
                return KeyOutcome("fetched", resources=[body])
            page, errored = _bundle_entries(body)
            if errored:
                return KeyOutcome("operation-outcome", resources=resources + page)
            resources.extend(page)
            nxt = _next_link(body)
            if nxt is None:
                return KeyOutcome("fetched", resources=resources)
            nxt = urljoin(self._base, nxt)
            if nxt in seen:
                return KeyOutcome("failed", "paging-loop")
            if not self._same_server(nxt):
                return KeyOutcome("failed", "paging-off-server")
            url = nxt
        # More pages than we follow: what we have is incomplete, so say so rather than judge on part of it.
        return KeyOutcome("failed", "too-many-pages", resources=resources)


async def resolve(
    prefetch_templates: Mapping[str, str],
    hook: str,
    context: Mapping[str, Any],
    sent: Mapping[str, Any] | None,
    fhir_server: str | None,
    access_token: str | None,
    client: httpx.AsyncClient,
    limits: FetchLimits,
) -> dict[str, KeyOutcome]:
    """Resolve every declared key: from the client's prefetch, else from fhirServer, under one deadline."""
    outcomes: dict[str, KeyOutcome] = {}
    to_fetch: dict[str, str] = {}
    sent = sent or {}
    for key, template in prefetch_templates.items():
        query = render(template, context)
        if query is None:
            outcomes[key] = KeyOutcome("skipped", "token-not-in-context")
            continue
        if key in sent:
            outcomes[key] = read_prefetched(sent[key])
        else:
            to_fetch[key] = query
    if to_fetch and not fhir_server:
        raise PrefetchUnobtainable(sorted(to_fetch))
    if to_fetch and fhir_server:
        fetcher = Fetcher(client, fhir_server, access_token, limits)
        tasks = {key: asyncio.ensure_future(fetcher.fetch(q)) for key, q in to_fetch.items()}
        done, pending = await asyncio.wait(tasks.values(), timeout=limits.deadline_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for key, task in tasks.items():
            if task in done and not task.cancelled() and task.exception() is None:
                outcomes[key] = task.result()
            elif task in done and task.exception() is not None:
                outcomes[key] = KeyOutcome("failed", type(task.exception()).__name__)
            else:
                outcomes[key] = KeyOutcome("failed", "timeout")
    return outcomes


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
