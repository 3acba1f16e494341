"""The shared replay table: a bearer token's `jti` is claimed by one atomic insert (issue 17).

Every worker and every replica that shares the database claims `(iss, jti)` here before it accepts a
token. The primary key makes the claim atomic: of two concurrent claims of the same key, on SQLite or
PostgreSQL, exactly one inserts and the other conflicts — so a replay is refused whichever process
receives it. The key is a SHA-256 of issuer and jti (bounded length, nothing of the token kept).

A row expires with its token (exp + leeway). Expired rows are purged in the background (`purge`); until
then a stale row must not refuse an issuer that reuses a jti after its token expired, so the insert is
`ON CONFLICT (key) DO UPDATE ... WHERE jti.expires_at <= now`: it takes over only an expired row, and
`RETURNING` tells a claim (a row came back) from a replay (none did). The schema comes from migration
0004 (`v0004_jti`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from cds_service.persistence.batching import next_batch
from cds_service.persistence.store import Store, StoreUnavailable
from cds_service.persistence.tables import metadata

__all__ = ["JtiClaimer", "JtiStore", "jti_table"]

log = logging.getLogger(__name__)

#: Most claims committed in one transaction.
MAX_BATCH = 256

# Registered on the shared metadata so `alembic revision --autogenerate` sees it as existing schema.
jti_table = sa.Table(
    "jti",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.BigInteger(), nullable=False, index=True),
)


def _claim_statement(dialect: str) -> sa.Insert:
    insert = postgresql.insert(jti_table) if dialect == "postgresql" else sqlite.insert(jti_table)
    return insert.on_conflict_do_update(
        index_elements=["key"],
        set_={"expires_at": insert.excluded.expires_at},
        where=jti_table.c.expires_at <= sa.bindparam("now", type_=sa.BigInteger()),
    ).returning(jti_table.c.key)


_PURGE = sa.delete(jti_table).where(jti_table.c.expires_at <= sa.bindparam("now", type_=sa.BigInteger()))


def jti_key(iss: str, jti: str) -> str:
    """The row key: issuer and jti, separated by a byte neither can contain unescaped in JSON text."""
    return hashlib.sha256(f"{iss}\x00{jti}".encode()).hexdigest()


class JtiStore:
    """Claims and purges `jti` rows through the app's Store (same engine, pragmas, error mapping).

    Both methods are synchronous and thread-safe (one pooled connection per call); the verifier calls
    `claim` through a worker thread. Database errors surface as `StoreUnavailable`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._claim = _claim_statement(store.url.get_backend_name())

    @property
    def store(self) -> Store:
        return self._store

    def claim(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        """True when this call recorded the pair; False when a live row already holds it (a replay).

        Committed before it returns: another process that claims the pair afterwards gets False.
        Raises StoreUnavailable (nothing is known then: the caller must refuse the token).
        """
        with self._store._transaction("claiming jti") as conn:
            row = conn.execute(
                self._claim,
                {"key": jti_key(iss, jti), "expires_at": math.ceil(expires_at), "now": math.floor(now)},
            ).first()
        return row is not None

    def claim_many(
        self, claims: Sequence[tuple[str, str, float, float]], conn: Connection | None = None
    ) -> list[bool]:
        """`claim` for each (iss, jti, expires_at, now), in order, in ONE committed transaction (on `conn`
        if given, else on a pooled connection).

        One INSERT for the whole batch (SQLAlchemy sends it as multi-row VALUES), `RETURNING` the keys it
        claimed. The same pair twice in `claims` is claimed by the first only. An expired row is taken over
        only if it had expired at the batch's earliest `now`. Raises StoreUnavailable (then none is known
        to be claimed: every caller must refuse its token).
        """
        if not claims:
            return []
        keys = [jti_key(iss, jti) for iss, jti, _exp, _now in claims]
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)  # a pair twice in one batch: one row (PostgreSQL refuses two)
        now = math.floor(min(c[3] for c in claims))
        rows = [{"key": key, "expires_at": math.ceil(claims[i][2]), "now": now} for key, i in first.items()]
        with self._store._transaction(f"claiming {len(claims)} jti", conn) as tx:
            claimed = set(tx.execute(self._claim, rows).scalars())
        return [key in claimed and first[key] == i for i, key in enumerate(keys)]

    def purge(self, now: float) -> int:
        """Delete rows whose token can no longer be accepted; how many went. Raises StoreUnavailable."""
        with self._store._transaction("purging expired jti rows") as conn:
            done = conn.execute(_PURGE, {"now": math.floor(now)})
        return int(done.rowcount or 0)

    def count(self) -> int:
        """Rows currently stored (live or not yet purged). Raises StoreUnavailable."""
        with self._store._transaction("counting jti rows") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(jti_table)).scalar_one())


_Claim = tuple[str, str, float, float]


class JtiClaimer:
    """Group commit for claims: one thread commits every claim queued meanwhile in one transaction.

    Under load every request of every worker claims a jti before it is answered. One transaction each
    means one fsync each and, on SQLite, every request thread of every worker queueing for the single write
    lock (and sleeping in SQLite's busy handler when it misses it). Here the requests of a process wait
    for their Future while one thread commits them together: the busier, the more claims per commit,
    exactly like the audit writer (`cds_service.persistence.writer`). A claim is answered only after its
    transaction committed, so a replay reaching another process afterwards is refused. If the transaction
    fails every Future in it fails (StoreUnavailable): the verifier then refuses those tokens.
    """

    def __init__(self, jti: JtiStore, *, max_batch: int = MAX_BATCH, thread_name: str = "va-cds-jti") -> None:
        self._jti = jti
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[_Claim, Future[bool]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._conn: Connection | None = None  # the claimer thread's own; only that thread touches it
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def submit(self, iss: str, jti: str, expires_at: float, now: float) -> Future[bool]:
        """Queue a claim; its Future: True (claimed), False (replay), or raises. RuntimeError once closed."""
        future: Future[bool] = Future()
        future.set_running_or_notify_cancel()  # a waiter that gives up cannot cancel the claim
        with self._lock:
            if self._closed:
                raise RuntimeError("the jti claimer is shut down")
            self._queue.put(((iss, jti, expires_at, now), future))
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the thread. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = next_batch(self._queue, self._max_batch)
            if not batch:
                continue
            try:
                results = self._claim_batch([claim for claim, _ in batch])
            except Exception as exc:  # StoreUnavailable, or a bug: either way nobody may be accepted
                if not isinstance(exc, StoreUnavailable):
                    log.exception("jti claim batch failed")
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), claimed in zip(batch, results, strict=True):
                future.set_result(claimed)
        self._drop_connection()

    def _claim_batch(self, claims: list[_Claim]) -> list[bool]:
        # The thread keeps one connection (no pool checkout and pre-ping per batch, as the audit writer);
        # a connection found dead (database restarted) is replaced and the batch tried once more.
        try:
            return self._jti.claim_many(claims, self._connection())
        except StoreUnavailable as exc:
            self._drop_connection()
            cause = exc.__cause__
            if not (isinstance(cause, DBAPIError) and cause.connection_invalidated):
                raise
            return self._jti.claim_many(claims, self._connection())

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._jti.store.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                log.debug("closing the jti claimer's connection failed: %s", exc)
