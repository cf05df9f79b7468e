"""A circuit breaker per endpoint: stop sending to a receiver that keeps failing.

Closed: every delivery is attempted. After `threshold` consecutive failed attempts the circuit
opens for `open_seconds`; deliveries meanwhile are put off (to a retry tier), not attempted.
Once that time has passed, one delivery is let through as a probe (half-open): success closes
the circuit, failure opens it again for twice as long, up to `max_open_seconds`.

The state lives in each replica's memory. Replicas therefore trip independently, each after
its own failures; the durable record of a failing endpoint is its health record (`since`).
"""

from __future__ import annotations

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
    def circuit_failure_threshold(self) -> int: ...
    @property
    def circuit_open_seconds(self) -> float: ...
    @property
    def circuit_max_open_seconds(self) -> float: ...


class CircuitBreaker:
    __slots__ = (
        "_max_open",
        "_open_for",
        "_threshold",
        "base_open",
        "failures",
        "probing",
        "retry_at",
        "state",
    )

    def __init__(self, *, threshold: int, open_seconds: float, max_open_seconds: float) -> None:
        self._threshold = threshold
        self.base_open = open_seconds
        self._max_open = max(open_seconds, max_open_seconds)
        self._open_for = open_seconds
        self.state = State.CLOSED
        self.failures = 0
        self.retry_at = 0.0
        self.probing = False

    def allow(self, now: float) -> bool:
        """May a delivery be attempted now? At most one probe at a time when half-open."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and now >= self.retry_at:
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def defer_until(self, now: float) -> float:
        """When a delivery refused by `allow` should come back."""
        if self.state is State.HALF_OPEN:
            # The probe is out; its answer comes within one timeout, so look again soon.
            return now + self.base_open
        return self.retry_at

    def record(self, ok: bool, now: float) -> Transition | None:
        """Count an attempt's result; return the transition it caused, if any."""
        self.probing = False
        if ok:
            recovered = self.state is not State.CLOSED
            self.state = State.CLOSED
            self.failures = 0
            self._open_for = self.base_open
            return Transition.CLOSED if recovered else None
        self.failures += 1
        if self.state is State.HALF_OPEN:
            self._open_for = min(self._open_for * 2, self._max_open)
            self.state = State.OPEN
            self.retry_at = now + self._open_for
            return None
        if self.state is State.CLOSED and self.failures >= self._threshold:
            self.state = State.OPEN
            self.retry_at = now + self._open_for
            return Transition.OPENED
        return None


def new_breaker(settings: CircuitSettings) -> CircuitBreaker:
    return CircuitBreaker(
        threshold=settings.circuit_failure_threshold,
        open_seconds=settings.circuit_open_seconds,
        max_open_seconds=settings.circuit_max_open_seconds,
    )
