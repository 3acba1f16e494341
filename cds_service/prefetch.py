"""Prefetch: render 2.0 templates, read what the client sent, fetch what it did not.

One service, as in HAPI's CdsPrefetchSvc: for every key the service declares, decide whether the client's
prefetch answers it (`null` = known empty; an OperationOutcome = unavailable), fetch the missing keys from
`fhirServer` concurrently under ONE per-request deadline with bounded paging and a byte limit, and report
an outcome per key. A key that cannot be obtained at all (no `fhirServer`) raises `PrefetchUnobtainable`,
which the app answers with 412 as the spec requires.

Issue 16: only an allowed FHIR base is fetched from (`auth.fhir_servers`; the app refuses others before
calling in), template ids must be FHIR ids and are URL-encoded, `next` links stay under the base path, one
call reads at most `max_call_bytes`, and nothing is ever cancelled (`cds_service.fhir_client` says why).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson

from cds_service.auth.fhir_servers import Base, check_fhir_server, is_fhir_id, parse_base, under_base
from cds_service.fhir_client import BIG_BODY_BYTES, FhirPool, detach, parse_json
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
    """Fill a template from the context; None when a token has no value in this call (e.g. no encounterId).

    Raises InvalidId when a value is not a FHIR id.
    """
    user = context.get("userId") if isinstance(context.get("userId"), str) else ""
    kind, _, user_id = str(user).partition("/")
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        token = match.group(1)
        if token in USER_TOKENS:
            if USER_TOKENS[token] == kind and user_id:
                return _id(token, user_id)
            missing = True
            return ""
        raw = context.get(token.removeprefix("context."))
        if not isinstance(raw, str) or not raw:
            missing = True
            return ""
        return _id(token, raw)

    out = TOKEN.sub(value, template)
    return None if missing else out


def _id(token: str, raw: str) -> str:
    # Every 2.0 token is an id (patientId, encounterId, the user's id). Checked, then encoded anyway: a value
    # like "1&_count=99999" or ".." would otherwise add search parameters or walk up the URL path.
    if not is_fhir_id(raw):
        raise InvalidId(f"{token} is not a FHIR id")
    return quote(raw, safe="")


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
    max_bytes: int = 20_000_000  # one response
    max_call_bytes: int = 40_000_000  # the whole call: every key, every page
    call_concurrency: int = 16  # fetches in flight for one call


class InvalidId(ValueError):
    """A context value used in a query is not a FHIR id (it would change the query, not just fill it)."""


class _Budget:
    """Bytes one call may still read from FHIR, shared by all its keys and pages."""

    __slots__ = ("left",)

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, n: int) -> bool:
        self.left -= n
        return self.left >= 0


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
    """GETs FHIR queries from one fhirServer with the client's bearer token (never logged or kept).

    Nothing here is ever cancelled: each request's timeouts are the time left before `deadline` (loop time),
    and body reads stop at the deadline, so a fetch always ends by itself (see `cds_service.fhir_client`).
    """

    def __init__(
        self, pool: FhirPool, base: Base, token: str | None, limits: FetchLimits, deadline: float
    ) -> None:
        self._pool = pool
        self._base = base
        self._base_url = str(base) + "/"
        self._headers = {"Accept": "application/fhir+json, application/json;q=0.9"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._limits = limits
        self._deadline = deadline
        self._budget = _Budget(limits.max_call_bytes)
        self._call_slots = asyncio.Semaphore(limits.call_concurrency)

    def _left(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    async def _get_json(self, url: str) -> tuple[Any, str | None]:
        left = self._left()
        if left <= 0:
            return None, "timeout"
        timeout = httpx.Timeout(left, connect=min(left, 2.0), pool=left)
        async with self._pool.slot(left) as client:
            left = self._left()
            if left <= 0:
                return None, "timeout"
            async with client.stream("GET", url, headers=self._headers, timeout=timeout) as resp:
                if resp.status_code != 200:
                    return None, f"http-{resp.status_code}"
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit():
                    if int(declared) > self._limits.max_bytes:
                        return None, "too-large"
                    if int(declared) > self._budget.left:
                        return None, "call-too-large"
                # A list of chunks, joined once at the end: growing one buffer would copy it again and again
                # (CPU on the event loop, and twice the memory at each step).
                chunks: list[bytes] = []
                size = 0
                big: asyncio.Semaphore | None = None
                try:
                    async for chunk in resp.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > self._limits.max_bytes:
                            return None, "too-large"
                        if not self._budget.take(len(chunk)):
                            return None, "call-too-large"
                        if self._left() <= 0:
                            return None, "timeout"  # a server trickling bytes: stop at the deadline
                        if big is None and size > BIG_BODY_BYTES:
                            big = await self._pool.big_transfer(self._left())  # huge bodies take turns
                finally:
                    if big is not None:
                        big.release()
        body = b"".join(chunks)
        del chunks
        try:
            return await parse_json(body), None
        except orjson.JSONDecodeError:
            return None, "malformed-json"

    async def fetch(self, query: str) -> KeyOutcome:
        async with self._call_slots:
            return await self._fetch(query)

    async def _fetch(self, query: str) -> KeyOutcome:
        url = urljoin(self._base_url, query.lstrip("/"))
        resources: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _page in range(self._limits.max_pages):
            seen.add(url)
            try:
                body, problem = await self._get_json(url)
            except (TimeoutError, httpx.TimeoutException) as exc:
                if isinstance(exc, httpx.PoolTimeout):
                    self._pool.note_pool_timeout()
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
            nxt = urljoin(self._base_url, nxt)
            if nxt in seen:
                return KeyOutcome("failed", "paging-loop")
            if not under_base(nxt, self._base):
                # Never send the access token outside the base: another host, or another path on this one.
                same_origin = urlsplit(nxt)[:2] == urlsplit(self._base_url)[:2]
                return KeyOutcome("failed", "paging-off-base" if same_origin else "paging-off-server")
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
    client: FhirPool | httpx.AsyncClient,
    limits: FetchLimits,
    allowed: frozenset[str] | None = None,
) -> dict[str, KeyOutcome]:
    """Resolve every declared key: from the client's prefetch, else from fhirServer, under one deadline.

    `allowed`: the FHIR bases this caller may name (None: the app checked already, or an offline run).
    """
    outcomes: dict[str, KeyOutcome] = {}
    to_fetch: dict[str, str] = {}
    sent = sent or {}
    for key, template in prefetch_templates.items():
        try:
            query = render(template, context)
        except InvalidId:
            outcomes[key] = KeyOutcome("failed", "invalid-id")
            continue
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
        if allowed is None:  # offline and library use: the named server is the one to use, once well-formed
            allowed = frozenset({str(parse_base(fhir_server))})
        base = check_fhir_server(fhir_server, allowed, token=bool(access_token))
        pool = client if isinstance(client, FhirPool) else FhirPool(client=client)
        await pool.check()  # the watchdog: a pool with leaked slots is replaced before we use it
        loop = asyncio.get_running_loop()
        fetcher = Fetcher(pool, base, access_token, limits, loop.time() + limits.deadline_s)
        tasks = {key: asyncio.ensure_future(fetcher.fetch(q)) for key, q in to_fetch.items()}
        done, pending = await asyncio.wait(tasks.values(), timeout=limits.deadline_s)
        for task in pending:
            detach(task)  # never cancelled (httpcore#1093); it ends on its own timeouts
        for key, task in tasks.items():
            if task in done and task.exception() is None:
                outcomes[key] = task.result()
            elif task in done:
                outcomes[key] = KeyOutcome("failed", type(task.exception()).__name__)
            else:
                outcomes[key] = KeyOutcome("failed", "timeout")
    return outcomes


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
