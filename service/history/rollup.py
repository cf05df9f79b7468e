"""Per-minute and per-hour roll-ups of a subscription's attempts: counts and a latency
histogram, both written from the same rows in the same transaction.

Stats over a window are then a sum over the minutes of its first, partial hour and the hours
after it (a month: at most 59 + 721 rows of one subscription, read by their primary keys), not a
scan of its attempts; quantiles come from the histogram, like Prometheus' histogram_quantile:
linear within the bucket that holds the rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

# Upper bounds in milliseconds; a last bucket (+Inf) follows. Webhook latencies span a fast
# CRM (tens of ms) to a receiver at its 30 s timeout; the same bounds as the Prometheus
# delivery histogram, so the API and the dashboard agree.
BOUNDS_MS: Final = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                    10_000.0, 30_000.0)  # fmt: skip
BUCKETS: Final = len(BOUNDS_MS) + 1


def bucket(latency_ms: float) -> int:
    """The index of the bucket a latency falls in (a bound is inclusive, as in Prometheus)."""
    for i, bound in enumerate(BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(BOUNDS_MS)


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile estimated from bucket counts; None without observations. A rank in the
    last (+Inf) bucket answers the highest finite bound, as histogram_quantile does."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i == len(BOUNDS_MS):
                return BOUNDS_MS[-1]
            low = BOUNDS_MS[i - 1] if i else 0.0
            high = BOUNDS_MS[i]
            return round(low + (high - low) * max(0.0, rank - seen) / n, 3)
        seen += n
    return BOUNDS_MS[-1]


def minute_of(unix: float) -> float:
    return math.floor(unix / 60) * 60.0


def hour_of(unix: float) -> float:
    return math.floor(unix / 3600) * 3600.0


def next_hour(unix: float) -> float:
    """The first whole hour at or after `unix`: where a window's hourly rows begin."""
    return math.ceil(unix / 3600) * 3600.0
