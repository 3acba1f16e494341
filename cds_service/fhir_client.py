"""The process's FHIR HTTP client, built so that no caller can wedge it (issue 16).

The failure it prevents: hook calls whose fetches outnumber the connection pool queue inside httpcore; at the
call's deadline the old code cancelled every task, including those waiting for a pooled connection, and a
request cancelled just after the pool handed it a fresh connection leaves that connection's slot taken for
ever (encode/httpcore#1093). Enough of them and every later fetch, for every caller, times out.

So, here:

* **No cancellation.** Every request carries its own httpx timeouts (connect, read, write, pool), computed
  from the time left before the call's deadline; a body read stops at the deadline between chunks. The call
  answers at its deadline and leaves a late fetch to end on its own timeouts (`detach`).
* **No queueing in the pool.** A process-wide semaphore admits at most `max_connections` fetches, the pool's
  own size, so requests never wait inside httpcore; a per-call semaphore (in `prefetch`) keeps one call from
  taking all of them.
* **A watchdog.** `check()` (run before each call's fetches and by `/ready`) counts pool connections that are
  busy without a fetch of ours in flight — slots leaked by the bug above or one like it. When any are found
  the client is replaced by a fresh one (the old one is closed once its late fetches are over), and `/ready`
  reports that probe as failed.
* **Huge bodies take turns.** A body past 1 MB streams only while holding one of 4 process-wide slots, so
  a server answering 19 MB pages cannot fill every event-loop iteration with its chunks.
* **Parsing off the loop.** JSON bodies above 64 KB are parsed on a small dedicated thread pool, so the event
  loop keeps answering `/health` and other calls between parses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

__all__ = ["FhirPool", "detach", "parse_json"]

log = logging.getLogger("va_cds.fhir")

# Above this size a body is parsed on a worker thread. Two workers: orjson holds the GIL while it parses, so
# more threads would not parse faster, and two bound the memory of bodies being parsed at once.
THREAD_PARSE_BYTES = 64 * 1024
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="va-cds-json")
# How long a replaced client stays open for the fetches still running on it (they end on their timeouts).
_RETIRE_AFTER_S = 30.0

# Bodies past this size stream only while holding one of `BIG_TRANSFERS` process-wide slots: a FHIR server
# answering huge pages would otherwise keep dozens of streams busy at once, and every event-loop iteration
# would run all their chunk handlers before answering anyone else (/health, other callers). Ordinary FHIR
# answers (kilobytes) never wait; huge ones take turns, which costs no throughput since they are CPU-bound.
BIG_BODY_BYTES = 1024 * 1024
BIG_TRANSFERS = 4

_detached: set[asyncio.Task[Any]] = set()


async def parse_json(body: bytes | bytearray) -> Any:
    """orjson.loads, on a worker thread for large bodies; raises orjson.JSONDecodeError."""
    if len(body) < THREAD_PARSE_BYTES:
        return orjson.loads(body)
    return await asyncio.get_running_loop().run_in_executor(_PARSER, orjson.loads, body)


def detach(task: asyncio.Task[Any]) -> None:
    """Let a late fetch finish on its own timeouts instead of cancelling it (see module docstring)."""
    _detached.add(task)

    def _done(t: asyncio.Task[Any]) -> None:
        _detached.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved, so asyncio does not log "exception was never retrieved"

    task.add_done_callback(_done)


class FhirPool:
    """The shared httpx client, the process-wide fetch bound and the watchdog.

    `client` may be injected (tests mock FHIR with it); the watchdog then replaces it with one built by
    `factory`, which defaults to a plain client with the pool size set here.
    """

    def __init__(
        self,
        max_connections: int = 64,
        *,
        client: httpx.AsyncClient | None = None,
        factory: Callable[[int], httpx.AsyncClient] | None = None,
        on_recreate: Callable[[int], None] | None = None,
    ) -> None:
        self.max_connections = max_connections
        self._factory = factory or _new_client
        self._client = client
        self._owned = client is None
        self._on_recreate = on_recreate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._big: asyncio.Semaphore | None = None
        self.inflight = 0
        self.recreated = 0
        self.suspect = False  # a pool timeout happened although we never over-filled the pool

    # -- the client and its slots --------------------------------------------------------------------------
    def _bind(self) -> None:
        # asyncio primitives belong to one event loop; an app may serve several in turn (tests, lifespans).
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and self._owned:
                self._client = None  # connections of a finished loop cannot be reused
            self._loop = loop
            self._slots = asyncio.Semaphore(self.max_connections)
            self._big = asyncio.Semaphore(BIG_TRANSFERS)
            self.inflight = 0

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._factory(self.max_connections)
            self._owned = True
        return self._client

    @asynccontextmanager
    async def slot(self, timeout_s: float) -> AsyncIterator[httpx.AsyncClient]:
        """One of the process's fetch slots and the client to use in it; TimeoutError if none in time."""
        self._bind()
        assert self._slots is not None
        # wait_for on our own semaphore is safe to time out (asyncio releases a cancelled waiter's turn).
        await asyncio.wait_for(self._slots.acquire(), timeout=max(timeout_s, 0.001))
        self.inflight += 1
        try:
            yield self.client
        finally:
            self.inflight -= 1
            self._slots.release()

    async def big_transfer(self, timeout_s: float) -> asyncio.Semaphore:
        """Wait (at most `timeout_s`) for a big-body slot; the caller releases the returned semaphore."""
        assert self._big is not None, "slot() binds the pool first"
        await asyncio.wait_for(self._big.acquire(), timeout=max(timeout_s, 0.001))
        return self._big

    # -- watchdog --------------------------------------------------------------------------------------------
    def leaked_connections(self) -> int:
        """Pool connections busy (not idle, not closed) beyond the fetches we have in flight."""
        connections = _pool_connections(self._client)
        if connections is None:
            return 0
        busy = sum(1 for c in connections if not c.is_idle() and not c.is_closed())
        return max(0, busy - self.inflight)

    async def check(self) -> bool:
        """Replace the client if its pool has leaked slots; True when it was healthy as found."""
        self._bind()
        leaked = self.leaked_connections()
        if leaked == 0 and not self.suspect:
            return True
        log.warning(
            "FHIR connection pool had leaked slots; client replaced",
            extra={"leaked": leaked, "max_connections": self.max_connections, "pool_timeout": self.suspect},
        )
        self._replace()
        return False

    def note_pool_timeout(self) -> None:
        """A fetch waited for a pooled connection in vain: with our semaphore that means leaked slots."""
        self.suspect = True

    def _replace(self) -> None:
        old, self._client = self._client, None
        self._owned = True
        self.suspect = False
        self.recreated += 1
        if self._on_recreate is not None:
            self._on_recreate(self.recreated)
        if old is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(_RETIRE_AFTER_S, _close_later, old)

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _close_later(client: httpx.AsyncClient) -> None:
    coro: Awaitable[None] = client.aclose()
    detach(asyncio.ensure_future(coro))


def _new_client(max_connections: int) -> httpx.AsyncClient:
    # Timeouts are set per request from the call's deadline; these are only an outer bound.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, connect=2.0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=min(20, max_connections)
        ),
        follow_redirects=False,
    )


def _pool_connections(client: httpx.AsyncClient | None) -> list[Any] | None:
    """The httpcore pool's connections (its public `connections` list), or None for a mock transport.

    httpx keeps the transport and its pool in private attributes; read them defensively so an httpx upgrade
    that moves them only turns the watchdog off, never breaks fetching.
    """
    transport = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    connections = getattr(pool, "connections", None)
    return list(connections) if isinstance(connections, list) else None
