"""JWKS retrieval from allowlisted `jku` URLs: cached per URL, refreshed on TTL or once on an unknown
kid, rate-limited, bounded in time and size.

Callers must only pass URLs already checked against the issuer's allowlist; this module never decides
trust. The rate limit (one network attempt per URL per `min_refetch_s`, successful or not) is what
stops a stream of tokens with random kids from turning us into a fetch amplifier against the issuer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .errors import AuthError
from .keys import JwkError, PublicJwk, parse_jwks

__all__ = ["JwksCache"]

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    keys: dict[str, PublicJwk] = field(default_factory=dict)
    fetched_at: float | None = None  # last successful fetch
    attempted_at: float | None = None  # last network attempt, successful or not
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _FetchError(Exception):
    pass


class JwksCache:
    """Keys from allowlisted JWKS URLs, by URL then kid."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float],
        timeout_s: float = 2.0,
        ttl_s: float = 3600.0,
        min_refetch_s: float = 30.0,
        max_stale_s: float = 86400.0,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self._http = http
        self._clock = clock
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._max_stale_s = max_stale_s
        self._max_bytes = max_bytes
        self._entries: dict[str, _Entry] = {}

    async def get_key(self, url: str, kid: str) -> PublicJwk | None:
        """The key `kid` published at `url`, or None if it is not there even after one refetch.

        Raises `AuthError("jwks-unavailable")` when no usable copy of the JWKS exists (never fetched
        successfully, or too stale after failed refreshes).
        """
        entry = self._entries.setdefault(url, _Entry())
        now = self._clock()
        if entry.fetched_at is None or now - entry.fetched_at >= self._ttl_s:
            await self._refresh(url, entry)
        if entry.fetched_at is None or self._clock() - entry.fetched_at >= self._max_stale_s:
            raise AuthError("jwks-unavailable", f"no usable JWKS from {url}")
        key = entry.keys.get(kid)
        if key is None:
            # Key rotation: the issuer may have published a new key since we cached. One refetch,
            # subject to the rate limit.
            await self._refresh(url, entry)
            key = entry.keys.get(kid)
        return key

    async def _refresh(self, url: str, entry: _Entry) -> None:
        async with entry.lock:
            # Re-read the clock inside the lock: a concurrent caller may have just refreshed, in which
            # case the rate limit makes us reuse its result instead of fetching again.
            now = self._clock()
            if entry.attempted_at is not None and now - entry.attempted_at < self._min_refetch_s:
                return
            entry.attempted_at = now
            try:
                doc = await self._fetch(url)
                keys, problems = parse_jwks(doc, strict=False)
            except (_FetchError, JwkError) as exc:
                log.warning("jwks fetch failed", extra={"jku": url, "error": str(exc)})
                return
            for problem in problems:
                log.warning("jwks key skipped", extra={"jku": url, "error": problem})
            entry.keys = keys
            entry.fetched_at = now

    async def _fetch(self, url: str) -> object:
        try:
            # asyncio.timeout bounds the whole exchange; httpx's own timeout is per read, so a server
            # dribbling one byte at a time could otherwise hold a request open indefinitely.
            async with asyncio.timeout(self._timeout_s):
                async with self._http.stream(
                    "GET",
                    url,
                    headers={"Accept": "application/json, application/jwk-set+json"},
                    timeout=self._timeout_s,
                    # An allowlisted URL redirecting elsewhere would bypass the allowlist.
                    follow_redirects=False,
                ) as resp:
                    if resp.status_code != 200:
                        raise _FetchError(f"HTTP {resp.status_code}")
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise _FetchError(f"JWKS larger than {self._max_bytes} bytes")
        except TimeoutError as exc:
            raise _FetchError("timeout") from exc
        except httpx.HTTPError as exc:
            raise _FetchError(type(exc).__name__) from exc
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _FetchError("JWKS is not JSON") from exc
