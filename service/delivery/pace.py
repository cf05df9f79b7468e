"""How fast an endpoint takes deliveries, and when a parked delivery should come back to it.

An endpoint that cannot keep up (rate-limited, slow, failing) must not hold more deliveries in
memory than it can make soon: past that, the pool parks them in a retry tier, without
counting an attempt, so that their source records can be committed. Each parked delivery is
booked a slot at the endpoint's pace, so they come back about as fast as it can take them,
not all at once.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from service.subscriptions.model import Subscription

# Completions within this are the endpoint's measured rate.
_WINDOW_SECONDS: Final = 5.0
# An endpoint without a rate limit is judged once it has been attempted for this long: before,
# nothing is known of it, and a healthy endpoint with a backlog must not be parked on a guess.
_MIN_MEASURED_SECONDS: Final = 1.0
# An endpoint may always hold this many rounds of its concurrency, however slow it is.
_MIN_ROUNDS: Final = 4


class Pace:
    __slots__ = ("_done", "_since", "booked_until")

    def __init__(self) -> None:
        self._done: deque[float] = deque()
        self._since: float | None = None
        # The latest time a parked delivery was booked to come back at.
        self.booked_until = 0.0

    def started(self, now: float) -> None:
        """An attempt starts: the endpoint is being measured from now on."""
        if self._since is None:
            self._since = now

    def completed(self, now: float) -> None:
        done = self._done
        done.append(now)
        while done and done[0] < now - _WINDOW_SECONDS:
            done.popleft()

    def measured(self, now: float) -> float | None:
        """Attempts per second over the window, once there is a second of measurements."""
        if self._since is None or now - self._since < _MIN_MEASURED_SECONDS:
            return None
        span = min(_WINDOW_SECONDS, now - self._since)
        recent = sum(1 for t in self._done if t >= now - span)
        return recent / span

    def rate(self, sub: Subscription, now: float) -> float:
        """What the endpoint can take per second: its rate limit, what it was measured to
        take, or (neither known) its concurrency over its timeout, the slowest it can be."""
        limit = sub.rate_limit.per_second if sub.rate_limit is not None else None
        measured = self.measured(now)
        if limit is not None and measured is not None:
            return max(min(limit, measured), 1 / sub.timeout_seconds)
        if limit is not None:
            return limit
        if measured is not None and measured > 0:
            return measured
        return sub.max_in_flight / sub.timeout_seconds

    def allowance(self, sub: Subscription, horizon: float, now: float) -> int | None:
        """How many deliveries the endpoint may hold in memory: what it can take within
        `horizon` seconds at its pace; None while its pace is not known yet."""
        if sub.rate_limit is None and self.measured(now) is None:
            return None
        return max(_MIN_ROUNDS * sub.max_in_flight, int(self.rate(sub, now) * horizon))

    def book(self, sub: Subscription, queued: int, now: float) -> float:
        """The time a delivery parked now should come back: after the queue ahead of it and
        the deliveries parked before it, one slot at the endpoint's pace."""
        rate = self.rate(sub, now)
        start = max(self.booked_until, now + queued / rate)
        self.booked_until = start + 1 / rate
        return self.booked_until
