"""Checklist snapshots: what the pre-procedure rules concluded for one hook call, kept for the page.

One row per hook call that produced a `pre.checklist` card, keyed by a random snapshot id and tied to
the audit trail by hookInstance and the card's uuid. It holds the item statuses and our evidence
summaries (no patient identifiers; the patient is only the keyed hash the audit table also uses) and is
deleted once its link has expired. The schema comes from migration 0002 (`v0002_checklist_snapshot`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from cds_service.persistence import Store
from cds_service.persistence.tables import UTCDateTime, metadata

# Registered on the shared metadata so `alembic revision --autogenerate` sees it as existing schema.
checklist_snapshot = sa.Table(
    "checklist_snapshot",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hook_instance", sa.String(64), nullable=False, index=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("hook", sa.String(100), nullable=False),
    sa.Column("card_uuid", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("patient_hash", sa.String(128), nullable=True),
    sa.Column("items", sa.JSON(), nullable=False),
)

# Built once (see Store.__init__). The id is random (token.new_snapshot_id), so a conflict can only be
# this very snapshot, committed by a write whose outcome was unclear and now retried: not an error.
_INSERT = {
    "sqlite": sqlite.insert(checklist_snapshot).on_conflict_do_nothing(index_elements=["id"]),
    "postgresql": postgresql.insert(checklist_snapshot).on_conflict_do_nothing(index_elements=["id"]),
}
_PURGE_EXPIRED = sa.delete(checklist_snapshot).where(
    checklist_snapshot.c.expires_at < sa.bindparam("now", type_=UTCDateTime())
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    hook_instance: str
    service: str
    hook: str
    card_uuid: str | None
    created_at: datetime
    expires_at: datetime
    patient_hash: str | None
    #: [{"id", "label", "status", "rule_id", "evidence"}] as from `hooks.preprocedure.checklist_items`
    items: list[dict[str, Any]] = field(default_factory=list)


class SnapshotStore:
    """Reads and writes snapshots through the app's Store (same engine, pragmas and error mapping)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def save(self, snap: Snapshot) -> None:
        """Insert one snapshot and drop expired ones, in a transaction of its own. Raises StoreUnavailable."""
        # The Store's transaction helper is reused on purpose: it carries the SQLite pragmas and turns
        # every database error into StoreUnavailable, exactly as for audit records.
        with self._store._transaction("writing checklist snapshot") as conn:
            self.write_many(conn, [snap])

    @staticmethod
    def write_many(conn: Connection, snaps: Sequence[Snapshot]) -> None:
        """Insert snapshots inside the transaction open on `conn` (a writer batch), then drop expired ones.

        One executemany for the rows and one DELETE per call, not per snapshot. Raises SQLAlchemyError.
        """
        if not snaps:
            return
        conn.execute(
            _INSERT[conn.dialect.name],
            [
                {
                    "id": snap.id,
                    "hook_instance": snap.hook_instance,
                    "service": snap.service,
                    "hook": snap.hook,
                    "card_uuid": snap.card_uuid,
                    "created_at": snap.created_at,
                    "expires_at": snap.expires_at,
                    "patient_hash": snap.patient_hash,
                    "items": snap.items,
                }
                for snap in snaps
            ],
        )
        # Housekeeping rides on writes (indexed, usually deletes nothing): an expired link can never be
        # opened again, so its snapshot has no reason to stay. "Now" is the newest snapshot's creation.
        conn.execute(_PURGE_EXPIRED, {"now": max(snap.created_at for snap in snaps)})

    def load(self, snapshot_id: str) -> Snapshot | None:
        """The snapshot, or None. Raises StoreUnavailable."""
        with self._store._transaction("reading checklist snapshot") as conn:
            row = conn.execute(
                sa.select(checklist_snapshot).where(checklist_snapshot.c.id == snapshot_id)
            ).first()
        if row is None:
            return None
        return Snapshot(
            id=row.id,
            hook_instance=row.hook_instance,
            service=row.service,
            hook=row.hook,
            card_uuid=row.card_uuid,
            created_at=row.created_at,
            expires_at=row.expires_at,
            patient_hash=row.patient_hash,
            items=list(row.items),
        )
