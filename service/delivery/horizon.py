"""How far ahead of an endpoint the delivery stage reads: its horizon.

Memory holds only what an endpoint can deliver soon: about HORIZON_SECONDS of its pace, which
is its rate limit when it has one, else the rate at which its attempts finished lately; while
its circuit is open, the pace at which its attempts are counted as failed (CIRCUIT_OPEN_PACE). Past
that, its next record is not taken: the delivery stage pauses that partition (the record stays
in Kafka, nothing is copied) and offers it again when the queue has come down to half. So a
slow endpoint never fills the stage's in-flight cap, and the partitions it is not on keep
moving at their own pace.
"""

from __future__ import annotations

from typing import Final

from service.subscriptions.model import Subscription

# Seconds of an endpoint's pace kept queued: long enough that its workers never wait for
# Kafka (a fetch takes milliseconds, a paused partition resumes within MAX_WAIT), short
# enough that a slow endpoint holds little: 50 records at 10/s.
HORIZON_SECONDS: Final = 5.0
# Whatever the pace, each worker may have this many queued: a new endpoint, whose pace is not
# measured yet, starts at full concurrency, and a fast one is never starved by the estimate.
MIN_QUEUED_PER_WORKER: Final = 4
# The pace is measured over windows this long: a second is enough to count tens of attempts
# at the rates where the horizon matters, and quick to follow an endpoint that slows down.
PACE_WINDOW_SECONDS: Final = 1.0
# A held partition is offered again within these bounds.
MIN_WAIT: Final = 0.02
MAX_WAIT: Final = 1.0


class Pace:
    """An endpoint's attempts finished per second, over the last complete window."""

    __slots__ = ("_count", "_since", "per_second")

    def __init__(self, now: float) -> None:
        self._count = 0
        self._since = now
        self.per_second: float | None = None

    def finished(self, now: float) -> None:
        self._count += 1
        elapsed = now - self._since
        if elapsed >= PACE_WINDOW_SECONDS:
            self.per_second = self._count / elapsed
            self._count = 0
            self._since = now


def _rate(sub: Subscription, pace: Pace, open_pace: float | None) -> float | None:
    if open_pace is not None:
        return open_pace
    return sub.rate_limit.per_second if sub.rate_limit is not None else pace.per_second


def horizon_of(sub: Subscription, pace: Pace, *, open_pace: float | None = None) -> int:
    """How many deliveries the endpoint may have queued or in an attempt. `open_pace`: its
    circuit is not closed, and its attempts are counted as failed at this pace."""
    rate = _rate(sub, pace, open_pace)
    horizon = MIN_QUEUED_PER_WORKER * sub.max_in_flight
    return max(horizon, int(rate * HORIZON_SECONDS)) if rate else horizon


def refill(sub: Subscription, pace: Pace, queued: int, *, open_pace: float | None = None) -> int:
    """How many deliveries to read back for the endpoint from where they wait (parked): its
    room to the horizon once its queue is down to half of it, none before. So they come in
    chunks: one at a time, as a slow endpoint's queue drains, each read fetched a partition's
    worth of records to take one."""
    horizon = horizon_of(sub, pace, open_pace=open_pace)
    room = horizon - queued
    return room if 2 * room >= horizon else 0


def drains_in(
    sub: Subscription, pace: Pace, queued: int, *, open_pace: float | None = None
) -> float:
    """Seconds until the endpoint's queue runs dry at its pace: 0 when it is empty, or when
    its pace is not known yet (it may run dry at any moment)."""
    rate = _rate(sub, pace, open_pace)
    return queued / rate if queued and rate else 0.0


def wait_before_more(
    sub: Subscription, pace: Pace, queued: int, *, open_pace: float | None = None
) -> float | None:
    """Seconds until the endpoint should be offered another delivery, with `queued` queued or
    in an attempt; None when it can take one now."""
    rate = _rate(sub, pace, open_pace)
    horizon = horizon_of(sub, pace, open_pace=open_pace)
    if queued < horizon:
        return None
    if not rate:
        return MIN_WAIT
    return min(MAX_WAIT, max(MIN_WAIT, (queued - horizon / 2) / rate))
