"""Replay protection for `jti` (CDS Hooks 2.0 §Trusting CDS Clients: jti is a nonce).

`ReplayCache` is the in-process cache; `SharedReplay` is what the verifier also asks when more than one
process can answer (issue 17): an atomic claim in a store every worker and replica shares (the `jti` table,
`cds_service.persistence.jti`). The cache then stays in front only as a fast path for replays that reach
the same process; the shared claim is always made.

Keyed by (iss, jti) because two issuers may pick the same jti. An entry lives until its token could no
longer be accepted anyway (exp + leeway), so memory is bounded by request rate × token lifetime; the
hard size cap makes a burst fail closed instead of either growing without bound or forgetting a live
jti (which would re-open a replay window). Per process: several workers each keep their own cache, which
is why it is never the only check once a shared store is configured.
"""

from __future__ import annotations

import heapq
from typing import Protocol

from .errors import AuthError

__all__ = ["ReplayCache", "SharedReplay"]


class SharedReplay(Protocol):
    """A replay store shared by every process that can answer (the database's `jti` table)."""

    async def claim(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        """Atomically record the pair; False when a live record already holds it. May raise anything when
        the store cannot answer (the verifier then refuses the token)."""
        ...


class ReplayCache:
    """Remembers (iss, jti) pairs until they expire."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max_entries = max_entries
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            self._expiry.pop(key, None)

    def check_and_add(self, iss: str, jti: str, expires_at: float, now: float) -> None:
        """Record the pair, or raise `AuthError("replayed")` if it is already live.

        Synchronous on purpose: with no await between the check and the insert, two concurrent
        requests carrying the same token cannot both pass on one event loop.
        """
        self._purge(now)
        key = (iss, jti)
        if key in self._expiry:
            raise AuthError("replayed", "jti already seen")
        if len(self._expiry) >= self._max_entries:
            raise AuthError("replay-cache-full", f"{self._max_entries} live jti entries")
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))

    def forget(self, iss: str, jti: str) -> None:
        """Drop a pair recorded by a token that was refused after all (its heap entry expires by itself)."""
        self._expiry.pop((iss, jti), None)
