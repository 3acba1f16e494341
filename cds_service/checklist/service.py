"""Issuing checklist links on the hook response path, and finding their snapshots again.

`attach_checklist_link` is called by the app right after the rules ran. When the answer holds a
`pre.checklist` card it computes the checklist items from the same HookInput, signs a token and adds the
link to the card — all in memory, microseconds — and queues the snapshot row on the app's group-commit
writer (`State.writer`, `cds_service.persistence.writer`), so the clinician never waits for the database.
It is the same single thread that writes the audit rows, usually in the same transaction: SQLite takes one
writer at a time, and a second thread writing beside the audit row makes one of the two fail with
"database is locked". A failed write is logged; the link then opens the "not found" page. A page request
that races the write waits for it (its Future resolves once the batch committed) instead of reporting a
false "not found".
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import fields
from datetime import timedelta

import anyio.to_thread
from sqlalchemy.engine import Connection

from cds_service.checklist import token as tokens
from cds_service.checklist.storage import Snapshot, SnapshotStore
from cds_service.invocation import InvocationResult
from cds_service.logs import patient_hash
from cds_service.persistence import Store, StoreUnavailable
from cds_service.scale import runs_shared
from cds_service.smart.link import checklist_link
from cds_service.state import State
from hooks.preprocedure import ChecklistItem, checklist_items

log = logging.getLogger("va_cds.checklist")

CHECKLIST_RULE = "pre.checklist"
LINK_LABEL = "Open the pre-procedure checklist (consent and time-out)"
PENDING_WAIT_S = 5.0

_pending: dict[str, Future[bool]] = {}
_pending_lock = threading.Lock()


class SnapshotWrites:
    """Checklist snapshots on the writer thread, batched into its transactions (`write_many`)."""

    what = "checklist snapshot"

    def write(self, store: Store, conn: Connection, snaps: Sequence[Snapshot]) -> None:
        SnapshotStore(store).write_many(conn, snaps)

    def failed(self, snap: Snapshot, exc: Exception) -> None:
        if isinstance(exc, StoreUnavailable):
            log.warning(
                "checklist snapshot not stored; its link will show 'not found'",
                extra={"hook_instance": snap.hook_instance, "error": str(exc)},
            )
        else:  # a bug, not the database: log it, with what was lost
            log.exception(
                "checklist snapshot write failed", exc_info=exc, extra={"hook_instance": snap.hook_instance}
            )


SNAPSHOT_WRITES = SnapshotWrites()


_ITEM_FIELDS = tuple(f.name for f in fields(ChecklistItem))


def _row(item: ChecklistItem) -> dict[str, object]:
    # Not dataclasses.asdict: it deep-copies field by field, and this runs on the hook's response path.
    return {name: getattr(item, name) for name in _ITEM_FIELDS}


def signing_key(state: State) -> bytes:
    # `link_key` is VA_CDS_CHECKLIST_LINK_KEY, else the patient hash key: shared by every worker and replica
    # (start-up refuses otherwise, cds_service/scale.py), so a link issued by one opens on any other.
    return tokens.derive_key(state.link_key)


def _forget(snapshot_id: str) -> None:
    with _pending_lock:
        _pending.pop(snapshot_id, None)


def attach_checklist_link(state: State, service_id: str, result: InvocationResult, base_url: str) -> None:
    """Add the checklist link to the `pre.checklist` card (if any) and queue its snapshot write."""
    inp = result.hook_input
    card = next(
        (c for c in result.cards if (c.extension or {}).get("org.va-cds.rule") == CHECKLIST_RULE), None
    )
    if card is None or inp is None:
        return
    created = state.clock()
    expires = created + timedelta(seconds=state.settings.checklist_ttl_s)
    sid = tokens.new_snapshot_id()
    snap = Snapshot(
        id=sid,
        hook_instance=inp.hook_instance,
        service=service_id,
        hook=inp.hook,
        card_uuid=str(card.uuid),
        created_at=created,
        expires_at=expires,
        patient_hash=patient_hash(state.hash_key, inp.patient_id) if inp.patient_id else None,
        items=[_row(item) for item in checklist_items(inp, state.policy)],
    )
    token = tokens.issue(signing_key(state), sid, expires)
    # SMART launch link when a SMART client is configured (issue 20), else the absolute page link.
    card.links = [*(card.links or []), checklist_link(state.settings, base_url, token, LINK_LABEL)]
    try:
        future = state.writer.submit(SNAPSHOT_WRITES, snap)
    except RuntimeError:  # the writer is shut down: the app is stopping; the link will say "not found"
        log.warning("checklist snapshot not queued: service shutting down")
        return
    with _pending_lock:
        _pending[sid] = future
    future.add_done_callback(lambda _f: _forget(sid))


async def wait_pending(snapshot_id: str) -> None:
    """If this snapshot's write is still queued or running here, wait (bounded) for it to finish."""
    with _pending_lock:
        future = _pending.get(snapshot_id)
    if future is None:
        return
    try:
        await asyncio.wait_for(asyncio.wrap_future(future), PENDING_WAIT_S)
    except TimeoutError:
        log.warning("checklist snapshot write still pending after %.0f s", PENDING_WAIT_S)


def load_snapshot(state: State, snapshot_id: str) -> Snapshot | None:
    """Synchronous (call through a thread). Raises StoreUnavailable."""
    return SnapshotStore(state.store).load(snapshot_id)


# A link issued this recently by *another* process may be opened before that process's writer committed
# its snapshot (the write is off the response path). How long after issue such a miss is re-checked.
FRESH_LINK_S = 10.0
_RECHECK_EVERY_S = 0.1


async def find_snapshot(state: State, claims: tokens.TokenClaims) -> Snapshot | None:
    """The snapshot of a genuine token, waiting (bounded) for a write in flight. Raises StoreUnavailable.

    In this process the pending write's Future says when it is done (`wait_pending`). With several workers or
    replicas (issue 17) the link may have been issued elsewhere: a fresh genuine token whose row is not there
    yet is looked up again for up to PENDING_WAIT_S instead of answering a false "not found".
    """
    await wait_pending(claims.snapshot_id)
    snap = await anyio.to_thread.run_sync(load_snapshot, state, claims.snapshot_id)
    if snap is not None or not runs_shared(state.settings):
        return snap
    issued = claims.expires_at - timedelta(seconds=state.settings.checklist_ttl_s)
    deadline = time.monotonic() + PENDING_WAIT_S
    while snap is None and state.clock() - issued < timedelta(seconds=FRESH_LINK_S):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(_RECHECK_EVERY_S)
        snap = await anyio.to_thread.run_sync(load_snapshot, state, claims.snapshot_id)
    return snap
