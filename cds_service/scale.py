"""Running as several processes: what must be shared, checked at start-up, and the jti table's upkeep.

Several workers (`va-cds serve --workers N`) or several replicas behind a load balancer (a PostgreSQL URL
is the sign of that) each build their own app. Two things must then agree across them (issue 17):

* the database — replay table, audit, feedback, checklist snapshots — which the URL already shares;
* the keys: the patient hash key (audit rows and logs must hash one patient to one value on every
  process) and the checklist link key (a link issued by one process must open on another). A key left
  unset is random per process, which is right for one process and silently wrong for several: start-up
  is refused instead, naming each missing key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import anyio.to_thread

from cds_service.persistence.jti import JtiClaimer, JtiStore
from cds_service.persistence.store import StoreUnavailable
from cds_service.settings import Settings

log = logging.getLogger("va_cds.scale")

__all__ = [
    "JtiPurger",
    "MissingSharedKeys",
    "SharedJti",
    "check_shared_keys",
    "missing_shared_keys",
    "runs_shared",
]


class MissingSharedKeys(RuntimeError):
    """Start-up refused: more than one process may answer and a key they must share is not set."""


def runs_shared(settings: Settings, workers: int | None = None) -> bool:
    """True when more than one process may answer: several workers, or a PostgreSQL database."""
    n = settings.workers if workers is None else workers
    return n > 1 or settings.database_url.lower().startswith(("postgresql", "postgres:"))


def missing_shared_keys(settings: Settings) -> list[str]:
    """Each key several processes must agree on that is unset, as `VA_CDS_NAME (what it keys)`."""
    missing = []
    if not (settings.patient_hash_key or "").strip():
        missing.append("VA_CDS_PATIENT_HASH_KEY (keyed hash of patient ids in audit rows and logs)")
    if not (settings.checklist_link_key or "").strip() and not (settings.patient_hash_key or "").strip():
        # Without its own key the link key is derived from the patient hash key: either one will do.
        missing.append(
            "VA_CDS_CHECKLIST_LINK_KEY (checklist link signatures; derived from VA_CDS_PATIENT_HASH_KEY "
            "when only that is set)"
        )
    return missing


def check_shared_keys(settings: Settings, workers: int | None = None) -> None:
    """Raise MissingSharedKeys when more than one process may answer and a shared key is missing."""
    if not runs_shared(settings, workers):
        return
    missing = missing_shared_keys(settings)
    if missing:
        n = settings.workers if workers is None else workers
        why = f"{n} workers" if n > 1 else "a PostgreSQL database (shared by replicas)"
        raise MissingSharedKeys(
            f"refusing to start with {why}: every process must use the same keys, and these are not set: "
            + "; ".join(missing)
            + ". Set them to the same random secret on every worker and replica "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )


class SharedJti:
    """The verifier's `SharedReplay`: claims go through a group-commit `JtiClaimer`, started on first use
    and stopped (after committing what is queued) by `close()`; the next use starts a new one, so an app
    object survives several lifespans, as the audit writer does."""

    def __init__(self, jti: JtiStore) -> None:
        self._jti = jti
        self._claimer: JtiClaimer | None = None
        self._lock = threading.Lock()

    def _current(self) -> JtiClaimer:
        with self._lock:
            if self._claimer is None:
                self._claimer = JtiClaimer(self._jti)
            return self._claimer

    async def claim(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        return await asyncio.wrap_future(self._current().submit(iss, jti, expires_at, now))

    def close(self) -> None:
        with self._lock:
            claimer, self._claimer = self._claimer, None
        if claimer is not None:
            claimer.close()


class JtiPurger:
    """Deletes expired rows of the shared jti table every `interval_s`, off the event loop.

    Every process runs one; the DELETE is idempotent, so replicas purging at once only repeat each other's
    work. A failure is logged and retried at the next interval: stale rows cost space, never safety (an
    expired token is refused before its jti is looked at).
    """

    def __init__(self, jti: JtiStore, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self._jti = jti
        self._interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def purge_once(self) -> int:
        return await anyio.to_thread.run_sync(self._jti.purge, self._clock())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                gone = await self.purge_once()
            except StoreUnavailable as exc:
                log.warning("jti purge failed; retried at the next interval", extra={"error": str(exc)})
                continue
            if gone:
                log.info("expired jti rows purged", extra={"rows": gone})

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="va-cds-jti-purge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
