"""Group commit's one shared step: wait for one queued item, then take what else is already queued.

Both background writers (audit rows and snapshots in `writer.py`, replay claims in `jti.py`) commit what
piled up while the previous transaction ran as one batch; `None` on the queue means "stop after this batch".
"""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def next_batch(source: queue.SimpleQueue[T | None], max_batch: int) -> tuple[list[T], bool]:
    """Block for the first item, then drain without waiting up to `max_batch`: (batch, stop requested)."""
    batch: list[T] = []
    item = source.get()
    while True:
        if item is None:
            return batch, True
        batch.append(item)
        if len(batch) >= max_batch:
            return batch, False
        try:
            item = source.get_nowait()
        except queue.Empty:
            return batch, False
