"""A circuit breaker per endpoint: stop sending to a receiver that is down, not to a flaky one.

Closed: every delivery is attempted, and each attempt's result enters a sliding window of
`window_seconds`. When the window holds at least `min_calls` attempts and at least
`failure_rate` of them failed, the circuit opens for `open_seconds`. A failure *rate* over a
window with a minimum number of calls (as Resilience4j and Convoy do) rather than a streak of
consecutive failures: a receiver that fails every first attempt and accepts every retry, or
one that fails half of its requests at random, keeps its deliveries flowing.

Open: nothing is sent. A delivery whose attempt falls due meanwhile counts that attempt as
failed without a request (outcome `circuit_open`, decided by the pool), so `max_attempts` and
the retry window keep their meaning. Once the open time has passed the circuit is half-open:
one probe at a time. A delivery the receiver has already seen fail is preferred as the probe
for a while, so that a probe does not fail merely because it is the receiver's first request
for that delivery (a receiver that refuses first requests would otherwise never close its
circuit; attempts counted while the circuit was open do not count as seen). A successful
probe closes the circuit; a failed one opens it again for twice as long, capped at
`max_open_seconds`, so deliveries resume within that of the endpoint recovering.

The state lives in the memory of the replica that delivers to the endpoint; the durable
record of a failing endpoint is its health record (`since`).
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Protocol


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Transition(StrEnum):
    OPENED = "opened"  # from closed: the endpoint has started failing
    CLOSED = "closed"  # a probe succeeded: the endpoint has recovered


class CircuitSettings(Protocol):
    @property
    def circuit_window_seconds(self) -> float: ...
    @property
    def circuit_min_calls(self) -> int: ...
    @property
    def circuit_failure_rate(self) -> float: ...
    @property
    def circuit_open_seconds(self) -> float: ...
    @property
    def circuit_max_open_seconds(self) -> float: ...
    @property
    def circuit_open_pace(self) -> float: ...


class CircuitBreaker:
    __slots__ = (
        "_buckets",
        "_calls",
        "_failures",
        "_max_open",
        "_min_calls",
        "_open_for",
        "_rate",
        "_window",
        "base_open",
        "probing",
        "retry_at",
        "state",
    )

    def __init__(
        self,
        *,
        window_seconds: float,
        min_calls: int,
        failure_rate: float,
        open_seconds: float,
        max_open_seconds: float,
    ) -> None:
        self._window = window_seconds
        self._min_calls = min_calls
        self._rate = failure_rate
        self.base_open = open_seconds
        self._max_open = max(open_seconds, max_open_seconds)
        self._open_for = open_seconds
        # The window's attempts by second, oldest first: [second, calls, failures]. A bucket
        # per second, not an entry per attempt: at 2,000 deliveries a second a 60 s window
        # held 120,000 entries, about 10 MiB for one endpoint.
        self._buckets: deque[list[int]] = deque()
        self._calls = 0
        self._failures = 0
        self.state = State.CLOSED
        self.retry_at = 0.0
        self.probing = False

    def allow(self, now: float, *, failed_before: bool = True) -> bool:
        """May a delivery be attempted now? `failed_before`: the delivery has failed already,
        which makes it the preferred probe. At most one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and now >= self.retry_at:
            self.state = State.HALF_OPEN
        if self.state is not State.HALF_OPEN or self.probing:
            return False
        # For one open period, only a delivery that has failed before may probe; after that,
        # any (an endpoint whose retries are far off must not stay closed to new events).
        if not failed_before and now < self.retry_at + self._open_for:
            return False
        self.probing = True
        return True

    def record(self, ok: bool, now: float, *, probe: bool = False) -> Transition | None:
        """Count an attempt's result; return the transition it caused, if any. `probe`: the
        attempt was let through as the probe; other results that arrive while the circuit is
        not closed were sent before it opened, and tell nothing about the endpoint now."""
        if self.state is not State.CLOSED:
            if not probe:
                return None
            self.probing = False
            if ok:
                self._reset(State.CLOSED)
                self._open_for = self.base_open
                return Transition.CLOSED
            self._open_for = min(self._open_for * 2, self._max_open)
            self.state = State.OPEN
            self.retry_at = now + self._open_for
            return None
        second = int(now)
        buckets = self._buckets
        if not buckets or second > buckets[-1][0]:
            buckets.append([second, 0, 0])
        bucket = buckets[-1]  # the clock stepping back counts in the latest second
        bucket[1] += 1
        self._calls += 1
        if not ok:
            bucket[2] += 1
            self._failures += 1
        self._expire(now)
        calls = self._calls
        if calls >= self._min_calls and self._failures >= self._rate * calls:
            self._reset(State.OPEN)
            self.retry_at = now + self._open_for
            return Transition.OPENED
        return None

    def _expire(self, now: float) -> None:
        horizon = now - self._window
        buckets = self._buckets
        while buckets and buckets[0][0] < horizon:
            _, calls, failures = buckets.popleft()
            self._calls -= calls
            self._failures -= failures

    def _reset(self, state: State) -> None:
        self.state = state
        self._buckets.clear()
        self._calls = 0
        self._failures = 0


def new_breaker(settings: CircuitSettings) -> CircuitBreaker:
    return CircuitBreaker(
        window_seconds=settings.circuit_window_seconds,
        min_calls=settings.circuit_min_calls,
        failure_rate=settings.circuit_failure_rate,
        open_seconds=settings.circuit_open_seconds,
        max_open_seconds=settings.circuit_max_open_seconds,
    )
