"""The group-commit writer: audit rows and checklist snapshots, many to a transaction, after the response.

Why it exists: every hook call leaves an audit record (and, with a pre-procedure checklist card, a
snapshot) to store once the answer has gone to the EHR. Written one transaction each, every write paid a
pool checkout with its pre-ping, statement construction and compilation, BEGIN IMMEDIATE and an fsynced
COMMIT; under load the writer thread took ~40 % of the process's profile samples, and with them the GIL
from the event loop that answers the EHR. Here one thread takes everything queued (up to `MAX_BATCH`
items) and writes it in one transaction, so those costs are paid per batch, not per write, and batches
grow with the load: the busier the service, the cheaper each write.

What it guarantees:

* One writer, arrival order. SQLite takes one writer at a time. Items leave the queue in the order they
  were submitted; inside a batch each kind's rows are inserted in that order (audit ids grow with
  arrival) and the batch is one transaction, so readers see all of it or none of it.
* Nothing silently lost. If a batch's transaction fails, its connection is dropped; if the connection
  itself was lost, the batch is written again once on a fresh one. Otherwise (or if that fails too) the
  items are written again one by one, each in a transaction of its own, so one bad item cannot sink the
  others. An item that fails on its own too goes to its kind's `failed` (which logs it, and for audit
  records counts it), with `StoreUnavailable` for a database error and the original exception otherwise.
* Every item's Future resolves once its fate is known: True when its transaction committed, False when it
  was reported as failed (checklist pages wait on it, see `checklist.service.wait_pending`). Futures are
  marked running from submission, so a waiter that gives up cannot cancel the write.
* `close()` drains: everything submitted before it is written before it returns. `submit` afterwards
  raises RuntimeError, as a shut-down executor does, so callers can fall back (`write_now`).
* The writer keeps one connection instead of checking one out, pre-pinging and resetting it per write. A
  connection that fails is dropped and the retry checks out a fresh (pinged) one: the pre-ping is paid
  where it can help, after a failure, and a dead connection costs a retry, never a record.

Durability is the Store's: each batch commits with the same settings as any other transaction (SQLite
`synchronous=FULL`, PostgreSQL `synchronous_commit=on`). Nothing written here was acknowledged to anyone;
acknowledged feedback never goes through the writer (`Store.save_feedback` commits before the 200).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from cds_service.persistence.batching import next_batch
from cds_service.persistence.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

#: Most items written in one transaction: bounds a batch's duration (and its retry, one by one).
MAX_BATCH = 256

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class WriteKind(Protocol[T_contra]):
    """One kind of row the writer stores: how to write a group of them, and whom to tell when one fails."""

    #: what one item is, for log lines and error messages ("audit record")
    @property
    def what(self) -> str: ...

    def write(self, store: Store, conn: Connection, items: Sequence[T_contra]) -> None:
        """Write `items`, in order, in the transaction open on `conn` (do not commit); raise on failure."""

    def failed(self, item: T_contra, exc: Exception) -> None:
        """`item` could not be stored, even in a transaction of its own: report it. Should not raise."""


@dataclass(frozen=True, slots=True)
class _Item(Generic[T]):
    kind: WriteKind[T]
    value: T
    future: Future[bool]


class GroupCommitWriter:
    """One thread that writes queued items to the Store in batches (see the module docstring)."""

    def __init__(
        self, store: Store, *, max_batch: int = MAX_BATCH, thread_name: str = "va-cds-writer"
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._conn: Connection | None = None  # the writer thread's own; only that thread touches it
        # A daemon thread never holds up interpreter exit; the atexit hook drains it first when the
        # app's shutdown did not (a script that never ran the lifespan, for instance).
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def submit(self, kind: WriteKind[T], item: T) -> Future[bool]:
        """Queue `item`; the Future says whether it was stored. Raises RuntimeError once closed."""
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:  # one lock with close(): nothing can be queued behind the stop marker
            if self._closed:
                raise RuntimeError("the writer is shut down")
            self._queue.put(_Item(kind, item, future))
        return future

    def close(self) -> None:
        """Write everything queued, stop the thread and release its connection. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        atexit.unregister(self.close)

    # ---------------------------------------------------------------------------------------------
    # The writer thread
    # ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = next_batch(self._queue, self._max_batch)  # wait, then take what is queued
            if batch:
                try:
                    self._write_batch(batch)
                except Exception:  # a bug here must not kill the thread with futures left unresolved
                    log.exception("writer failed on a batch of %d", len(batch))
                    for item in batch:
                        if not item.future.done():
                            item.future.set_result(False)
        self._drop_connection()

    def _write_batch(self, batch: list[_Item[Any]]) -> None:
        try:
            self._commit(batch)
        except Exception as exc:
            # Rolled back as a whole. The connection may be what failed, so it is replaced either way.
            self._drop_connection()
            failure = exc
            if _lost_connection(exc):  # a stale connection (server restart, idle timeout): try once more
                log.warning("the writer's database connection was lost (%s); writing the batch again", exc)
                try:
                    self._commit(batch)
                except Exception as again:
                    self._drop_connection()
                    failure = again
                else:
                    _resolve(batch, True)
                    return
            # Every item in a transaction of its own, so that only a bad one is lost.
            log.warning(
                "a batch of %d queued writes failed (%s); retrying each in a transaction of its own",
                len(batch),
                failure,
            )
            for item in batch:
                self._write_alone(item)
            return
        _resolve(batch, True)

    def _commit(self, batch: list[_Item[Any]]) -> None:
        with self._store._transaction(f"writing {len(batch)} queued items", self._connection()) as conn:
            for kind, values in _by_kind(batch):
                kind.write(self._store, conn, values)

    def _write_alone(self, item: _Item[Any]) -> None:
        try:
            with self._store._transaction(f"writing {item.kind.what}", self._connection()) as conn:
                item.kind.write(self._store, conn, [item.value])
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                self._drop_connection()
            _report(item.kind, item.value, exc)
            item.future.set_result(False)
        else:
            item.future.set_result(True)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._store.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()  # back to the pool, which discards it if it was found broken
        except Exception as exc:
            log.debug("closing the writer's connection failed: %s", exc)


def write_now(store: Store, kind: WriteKind[T], item: T) -> bool:
    """Write one item in a transaction of its own on the calling thread: the fallback when the writer is
    shut down. Reports a failure exactly as the writer does; True when stored."""
    try:
        with store._transaction(f"writing {kind.what}") as conn:
            kind.write(store, conn, [item])
    except Exception as exc:
        _report(kind, item, exc)
        return False
    return True


def _resolve(batch: Sequence[_Item[Any]], stored: bool) -> None:
    for item in batch:
        item.future.set_result(stored)


def _lost_connection(exc: Exception) -> bool:
    """Did this fail because the connection died (SQLAlchemy recognised a disconnect), not the data?"""
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
    return isinstance(cause, DBAPIError) and cause.connection_invalidated


def _by_kind(batch: Sequence[_Item[Any]]) -> list[tuple[WriteKind[Any], list[Any]]]:
    # Grouped so each kind is one executemany; kinds in order of first arrival, items in arrival order.
    groups: dict[int, tuple[WriteKind[Any], list[Any]]] = {}
    for item in batch:
        groups.setdefault(id(item.kind), (item.kind, []))[1].append(item.value)
    return list(groups.values())


def _report(kind: WriteKind[T], item: T, exc: Exception) -> None:
    try:
        kind.failed(item, exc)
    except Exception:
        log.exception("reporting a failed %s write failed", kind.what)
