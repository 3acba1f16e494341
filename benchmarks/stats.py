"""Small statistics: percentiles, medians, interleaved timing and a log-log fit (no numpy needed)."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, p in [0, 100]; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


@dataclass(slots=True)
class Summary:
    n: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "median_ms": round(self.median_ms, 3),
            "p10_ms": round(self.p10_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "min_ms": round(self.min_ms, 3),
        }


def summarize(seconds: Sequence[float]) -> Summary:
    ms = [s * 1000 for s in seconds]
    return Summary(len(ms), median(ms), percentile(ms, 10), percentile(ms, 90), min(ms) if ms else math.nan)


def interleaved(
    subjects: dict[str, Callable[[], object]],
    *,
    reps: int,
    warmup: int,
    budget_s: float,
    settle: Callable[[], object] | None = gc.collect,
) -> dict[str, list[float]]:
    """Time each subject `reps` times, rotating the order every round so drift hits all of them alike.

    `settle` runs before every timed call, outside the timing (default: a full garbage collection, so
    one subject's garbage — 10 MB of parsed JSON, say — is not collected on the next subject's clock).
    Bounded in count (warmup + reps rounds) and time (stops after `budget_s`, keeping what it has,
    with at least one measured round).
    """
    names = list(subjects)
    for _ in range(warmup):
        for name in names:
            subjects[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    deadline = time.perf_counter() + budget_s
    for i in range(reps):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            if settle is not None:
                settle()
            t0 = time.perf_counter()
            subjects[name]()
            out[name].append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return out


def loglog_slope(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) against log(size): 1.0 is linear growth."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(t) for t in times]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx if sxx else math.nan
