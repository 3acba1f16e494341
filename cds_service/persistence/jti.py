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
import math

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cds_service.persistence.store import Store
from cds_service.persistence.tables import metadata

__all__ = ["JtiStore", "jti_table"]

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

    def purge(self, now: float) -> int:
        """Delete rows whose token can no longer be accepted; how many went. Raises StoreUnavailable."""
        with self._store._transaction("purging expired jti rows") as conn:
            done = conn.execute(_PURGE, {"now": math.floor(now)})
        return int(done.rowcount or 0)

    def count(self) -> int:
        """Rows currently stored (live or not yet purged). Raises StoreUnavailable."""
        with self._store._transaction("counting jti rows") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(jti_table)).scalar_one())
