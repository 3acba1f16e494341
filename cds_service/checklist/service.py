"""Issuing checklist links on the hook response path, and finding their snapshots again.

`attach_checklist_link` is called by the app right after the rules ran. When the answer holds a
`pre.checklist` card it computes the checklist items from the same HookInput, signs a token and adds the
link to the card — all in memory, microseconds. The snapshot row is written by a small thread pool
after the call returns, so a slow or unavailable database never delays the clinician (a failed write
is logged; the link then opens the "not found" page). A page request that races the write waits for
it instead of reporting a false "not found".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cds_service.checklist import token as tokens
from cds_service.checklist.storage import Snapshot, SnapshotStore
from cds_service.invocation import InvocationResult
from cds_service.logs import patient_hash
from cds_service.models import Link
from cds_service.persistence import StoreUnavailable
from hooks.preprocedure import checklist_items

if TYPE_CHECKING:
    from cds_service.app import State

log = logging.getLogger("va_cds.checklist")

CHECKLIST_RULE = "pre.checklist"
LINK_LABEL = "Open the pre-procedure checklist (consent and time-out)"
PENDING_WAIT_S = 5.0

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_pending: dict[str, Future[None]] = {}
_pending_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    # One small pool per process, created on first use: snapshot writes are rare and short, and two
    # workers keep a burst of calls from queueing behind one slow commit.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="va-cds-checklist")
        return _executor


def signing_key(state: State) -> bytes:
    return tokens.derive_key(state.hash_key)


def _write(store: SnapshotStore, snap: Snapshot) -> None:
    try:
        store.save(snap)
    except StoreUnavailable as exc:
        log.warning(
            "checklist snapshot not stored; its link will show 'not found'",
            extra={"hook_instance": snap.hook_instance, "error": str(exc)},
        )
    except Exception:  # a background thread must log, never die silently
        log.exception("checklist snapshot write failed", extra={"hook_instance": snap.hook_instance})


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
    fired = {spec.rule_id for spec in result.specs} | set(result.rule_ids)
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
        items=[asdict(item) for item in checklist_items(inp, fired)],
    )
    token = tokens.issue(signing_key(state), sid, expires)
    card.links = [
        *(card.links or []),
        Link(label=LINK_LABEL, url=f"{base_url.rstrip('/')}/checklist/{token}", type="absolute"),
    ]
    future = _pool().submit(_write, SnapshotStore(state.store), snap)
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


def now(state: State) -> datetime:
    return state.clock()
