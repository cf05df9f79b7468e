"""The cyclic garbage collector, tuned for a process that moves many short-lived objects."""

from __future__ import annotations

import gc
from typing import Final

# Net allocations between young collections (CPython's default is 700). At thousands of
# deliveries a second, 700 ran a young collection several times per batch of records, which
# promoted the objects of every record in flight to the old generation; full collections then
# came every 0.5-1.5 s at 80-100 ms each, 10-15% of the service's CPU (docs/performance.md).
# With 50,000, records in flight mostly finish, and are freed by reference counting, before a
# collection sees them. A young collection then takes about 15 ms.
YOUNG_THRESHOLD: Final = 50_000
# The older generations keep CPython's defaults: each is collected after ten of the one below.
OLDER_THRESHOLDS: Final = (10, 10)


def tune() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
