"""Garbage-collector settings for a long-running server, applied once per process at start-up.

Every hook call parses a prefetch into thousands of short-lived dicts and lists. With CPython's default
first-generation threshold (700 allocations) a 100-resource order-sign triggers several collections, and
every tenth second-generation pass walks the whole heap, including the ~60,000 long-lived objects of the
value sets, policy, services and imported modules: a multi-millisecond pause that lands on a random
request's latency. So, once everything is loaded:

* `gc.freeze()` moves the start-up objects out of the collector's sight (they live as long as the process);
* a first-generation threshold of 10,000 lets a typical request finish before a collection starts (request
  data is acyclic JSON, freed by reference counting; the collector only matters for rare cycles).

Measured in `benchmarks/` (HTTP case); applied by the app's lifespan, so it holds under `va-cds serve` and
plain `uvicorn cds_service.app:app` alike. Tests that build many apps pay for it once.
"""

from __future__ import annotations

import gc
import threading

GEN0_THRESHOLD = 10_000

_lock = threading.Lock()
_done = False


def settle_heap() -> bool:
    """Collect, freeze what survives and raise the first threshold; once per process. True if it ran now."""
    global _done
    with _lock:
        if _done:
            return False
        gc.collect()
        gc.freeze()
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
        _done = True
        return True
